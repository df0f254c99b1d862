// Copyright 2026 The gpu-sidecar Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! What the sidecar tells its service manager, on the main thread: [`Notifier`] speaks
//! systemd's `sd_notify` protocol (through the `sd-notify` crate) when `NOTIFY_SOCKET` is set,
//! and does nothing otherwise: `STATUS=` for each phase, `READY=1`, `STOPPING=1`,
//! `EXTEND_TIMEOUT_USEC=` while the model load makes progress, and `WATCHDOG=1` when the unit
//! sets `WatchdogSec=`.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::serving::ByteSize;

/// How often the main loop checks on the components (more often when the watchdog asks).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long the start-up timeout is extended each time the model load makes progress: a load
/// that stops moving is given up by systemd this long after its last progress.
pub const LOAD_PROGRESS_ALLOWANCE: Duration = Duration::from_secs(30);

/// Sends `sd_notify` messages when running under systemd with `Type=notify`.
#[derive(Debug)]
pub struct Notifier {
    /// Whether `NOTIFY_SOCKET` is set.
    enabled: bool,
    /// `WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog: Option<Duration>,
    /// Whether a failed send has been reported (later ones are logged at debug level).
    send_failed: bool,
    last_status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        let notifier = Notifier {
            enabled,
            watchdog,
            send_failed: false,
            last_status: String::new(),
        };
        if enabled {
            log::info!(
                "systemd notification socket found: sending status{}",
                watchdog.map_or(String::new(), |w| format!(
                    " and watchdog pings every {} (WATCHDOG_USEC is {})",
                    humantime::format_duration(notifier.check_interval()),
                    humantime::format_duration(w)
                ))
            );
        }
        notifier
    }

    /// How often the main loop should check on the components: once a second, or at half the
    /// watchdog timeout when that is shorter.
    pub fn check_interval(&self) -> Duration {
        self.watchdog
            .map_or(CHECK_INTERVAL, |w| (w / 2).min(CHECK_INTERVAL))
            .max(Duration::from_millis(10))
    }

    /// Whether watchdog pings are expected.
    pub fn watchdog_enabled(&self) -> bool {
        self.enabled && self.watchdog.is_some()
    }

    /// `STATUS=`, sent only when it changed.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.send(&[NotifyState::Status(status)], status);
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)], status);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&mut self, status: &str) {
        self.send(
            &[NotifyState::Stopping, NotifyState::Status(status)],
            status,
        );
    }

    /// `EXTEND_TIMEOUT_USEC=`: the current phase may take `by` longer from now.
    pub fn extend_timeout(&mut self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        let status = self.last_status.clone();
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)], &status);
    }

    /// `WATCHDOG=1`, when the watchdog is on.
    pub fn watchdog(&mut self) {
        if self.watchdog_enabled() {
            let status = self.last_status.clone();
            self.send(&[NotifyState::Watchdog], &status);
        }
    }

    fn send(&mut self, states: &[NotifyState], status: &str) {
        if !self.enabled {
            return;
        }
        self.last_status = status.to_string();
        if let Err(e) = sd_notify::notify(states) {
            if self.send_failed {
                log::debug!("sd_notify failed: {e}");
            } else {
                log::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
                self.send_failed = true;
            }
        }
    }
}

/// The status line while the model loads: how far it has got.
pub fn load_status(what: &str, bytes_read: u64, size: Option<u64>) -> String {
    match (bytes_read, size) {
        (0, _) => format!("starting: bringing up the GPU, then loading {what}"),
        (read, Some(size)) => format!(
            "loading {what}: {} of {} ({}%)",
            ByteSize(read),
            ByteSize(size),
            read.saturating_mul(100) / size.max(1)
        ),
        (read, None) => format!("loading {what}: {} read", ByteSize(read)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_status_shows_progress() {
        assert_eq!(
            load_status("model /m.bin", 0, Some(10)),
            "starting: bringing up the GPU, then loading model /m.bin"
        );
        assert_eq!(
            load_status("model /m.bin", 512 << 20, Some(2 << 30)),
            "loading model /m.bin: 512.00 MiB of 2.00 GiB (25%)"
        );
        assert_eq!(
            load_status("model /m.fifo", 2048, None),
            "loading model /m.fifo: 2.00 KiB read"
        );
    }

    #[test]
    fn check_interval_follows_the_watchdog() {
        let mut notifier = Notifier {
            enabled: true,
            watchdog: None,
            send_failed: false,
            last_status: String::new(),
        };
        assert_eq!(notifier.check_interval(), Duration::from_secs(1));
        notifier.watchdog = Some(Duration::from_millis(600));
        assert_eq!(notifier.check_interval(), Duration::from_millis(300));
        notifier.watchdog = Some(Duration::from_secs(30));
        assert_eq!(notifier.check_interval(), Duration::from_secs(1));
    }
}
