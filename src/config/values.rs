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

//! The smaller sections and values: `[sidecar.shutdown]` (the grace period), `[sidecar.gpu]`,
//! `[sidecar.log]`, Flink-style durations and CUDA device ordinals.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::placement::{DeviceSelection, Placement};

/// The longest grace period accepted: long enough for any drain, short enough to catch typos.
pub(super) const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// `[sidecar.shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShutdownConfig {
    /// How long in-flight calls may run after SIGTERM before they are cancelled.
    #[serde(default)]
    pub grace_period: GracePeriod,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: GracePeriod(DEFAULT_GRACE_PERIOD),
        }
    }
}

/// `[sidecar.gpu]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    #[serde(default)]
    pub mode: GpuMode,
    /// The CUDA device ordinal (as the driver numbers them after `CUDA_VISIBLE_DEVICES`).
    #[serde(default)]
    pub device: DeviceOrdinal,
    /// Several devices, one GPU-owner thread each; unset: `device` alone.
    #[serde(default)]
    pub devices: Option<DeviceSelection>,
}

impl GpuConfig {
    /// The devices to serve on: `devices`, else `device` alone.
    pub fn selection(&self) -> DeviceSelection {
        self.devices
            .clone()
            .unwrap_or_else(|| DeviceSelection::Listed(vec![self.device.0]))
    }

    /// Fails (naming `key`) when `placement` names a device the sidecar does not serve on,
    /// where the sidecar's devices are listed; with `"all"` the driver decides, at the load.
    pub fn check_placement(
        &self,
        placement: &Placement,
        key: &str,
    ) -> Result<(), (String, String)> {
        let (Some(wanted), DeviceSelection::Listed(served)) =
            (&placement.devices, self.selection())
        else {
            return Ok(());
        };
        match wanted.iter().find(|d| !served.contains(d)) {
            Some(device) => Err((
                key.to_string(),
                format!(
                    "names device {device}, which the sidecar does not serve on (sidecar.gpu.{} = {}): add it there, or leave the model's devices out to use all of them",
                    if self.devices.is_some() { "devices" } else { "device" },
                    if self.devices.is_some() { format!("{served:?}") } else { served[0].to_string() },
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Whether the sidecar uses a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Use a GPU when a driver and the device are there, else run on the host and say so.
    #[default]
    Auto,
    /// Refuse to start without a GPU.
    Required,
    /// Never touch CUDA.
    Off,
}

impl fmt::Display for GpuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuMode::Auto => "auto",
            GpuMode::Required => "required",
            GpuMode::Off => "off",
        })
    }
}

/// `[sidecar.log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub level: LogLevel,
}

/// The most verbose level that is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// A Flink-style duration: `"30 s"`, `"500 ms"`, `"2 min"`; a bare number is milliseconds,
/// as in Flink. Must be more than zero and at most an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct GracePeriod(pub Duration);

impl Default for GracePeriod {
    fn default() -> Self {
        GracePeriod(DEFAULT_GRACE_PERIOD)
    }
}

impl TryFrom<String> for GracePeriod {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let duration = parse_duration(&s)?;
        if duration.is_zero() || duration > MAX_GRACE_PERIOD {
            return Err(format!(
                "{s:?} is out of range: the grace period must be more than 0 and at most {}",
                humantime::format_duration(MAX_GRACE_PERIOD)
            ));
        }
        Ok(GracePeriod(duration))
    }
}

/// A byte count as written in the config: a number of bytes, or bytes with a unit
/// (`"64 MiB"`, `"64MiB"`, `"100 MB"`, `"4096"`, read with `bytesize`); `None` otherwise.
pub fn byte_count(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => s.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.0),
        _ => None,
    }
}

/// Parses a Flink-style duration (`"30 s"`, `"500 ms"`, `"2 min"`, `"1 h"`, or a bare number of
/// milliseconds). Fails with a message that shows the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty duration: write e.g. \"30 s\", \"500 ms\" or \"2 min\"".to_string());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("duration {s:?} is too large"));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration {s:?} ({e}): write e.g. \"30 s\", \"500 ms\" or \"2 min\"")
    })
}

/// A CUDA device ordinal, 0 to `i32::MAX` (the driver takes a C `int`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct DeviceOrdinal(pub i32);

impl TryFrom<i64> for DeviceOrdinal {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        i32::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .map(DeviceOrdinal)
            .ok_or_else(|| format!("device ordinal {n} is out of range (0 to {})", i32::MAX))
    }
}
