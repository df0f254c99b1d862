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

//! How the main thread decides that the sidecar is alive: [`Liveness`] is the main loop's
//! periodic check, every component thread still running and the GPU-owner and health threads
//! answering within [`Liveness::stall_limit`]. It drives `/health/live` and the watchdog
//! pings, so that a wedged sidecar is restarted.

use std::time::{Duration, Instant};

/// What the periodic check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every component is running and answering.
    Alive,
    /// This component is running but has not answered for the given time.
    Stalled {
        component: &'static str,
        silent_for: Duration,
    },
}

/// Tracks how long each answering component has been silent.
#[derive(Debug)]
pub struct Liveness {
    stall_limit: Duration,
    last_check: Instant,
}

impl Liveness {
    /// A check that runs every `check_interval`.
    pub fn new(check_interval: Duration) -> Self {
        Liveness {
            stall_limit: Self::stall_limit(check_interval),
            last_check: Instant::now(),
        }
    }

    /// How long a component may stay silent before it counts as stuck: two check intervals,
    /// and at least one second.
    pub fn stall_limit(check_interval: Duration) -> Duration {
        (check_interval * 2).max(Duration::from_secs(1))
    }

    /// Judges the components by how long each has been silent (GPU-owner thread first).
    pub fn judge(&mut self, silences: &[(&'static str, Duration)]) -> Verdict {
        // A main thread that itself fell behind (a suspended VM, a stopped process) must not
        // blame the components for the time it was not looking.
        let behind = self.last_check.elapsed();
        self.last_check = Instant::now();
        let limit = self.stall_limit.max(behind + self.stall_limit / 2);
        silences
            .iter()
            .find(|(_, silent_for)| *silent_for > limit)
            .map_or(Verdict::Alive, |&(component, silent_for)| {
                Verdict::Stalled {
                    component,
                    silent_for,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_component_is_stalled() {
        let mut liveness = Liveness::new(Duration::from_millis(100));
        assert_eq!(
            liveness.judge(&[("gpu-owner", Duration::ZERO), ("health", Duration::ZERO)]),
            Verdict::Alive
        );
        assert_eq!(
            liveness.judge(&[
                ("gpu-owner", Duration::from_millis(10)),
                ("health", Duration::from_secs(3))
            ]),
            Verdict::Stalled {
                component: "health",
                silent_for: Duration::from_secs(3)
            }
        );
    }
}
