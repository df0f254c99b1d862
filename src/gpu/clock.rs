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

//! How long the execution in progress on the GPU-owner thread has been running, if one is:
//! set by that thread around each run of a session, read by the main thread's liveness check,
//! for which an execution in progress is work, not a stall, up to
//! `sidecar.health.execution-timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the execution in progress began.
#[derive(Debug)]
pub struct ExecutionClock {
    base: Instant,
    /// Microseconds from `base` to the start of the execution in progress, plus one; 0 when
    /// none runs.
    began: AtomicU64,
}

impl Default for ExecutionClock {
    fn default() -> Self {
        ExecutionClock {
            base: Instant::now(),
            began: AtomicU64::new(0),
        }
    }
}

impl ExecutionClock {
    /// An execution begins now.
    pub fn begin(&self) {
        let since = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.began.store(since + 1, Ordering::Relaxed);
    }

    /// The execution in progress has ended.
    pub fn end(&self) {
        self.began.store(0, Ordering::Relaxed);
    }

    /// How long the execution in progress has been running, if one is.
    pub fn running_for(&self) -> Option<Duration> {
        match self.began.load(Ordering::Relaxed) {
            0 => None,
            began => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_micros(began - 1)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_only_while_an_execution_does() {
        let clock = ExecutionClock::default();
        assert_eq!(clock.running_for(), None);
        clock.begin();
        assert!(clock.running_for().is_some());
        clock.end();
        assert_eq!(clock.running_for(), None);
    }
}
