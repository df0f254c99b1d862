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

//! The model's cumulative statistics, as Triton's `ModelStatistics` reports them: request
//! counts and nanoseconds per phase, executions and rows. The GPU-owner thread records
//! executions; the gRPC handlers record each request's end; `ModelStatistics` reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and the nanoseconds spent over those counted.
#[derive(Debug, Default)]
pub struct Phase {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Phase {
    pub fn record(&self, count: u64, spent: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.nanos.fetch_add(
            u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX) * count,
            Ordering::Relaxed,
        );
    }

    /// (count, nanoseconds).
    pub fn read(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.nanos.load(Ordering::Relaxed),
        )
    }
}

/// Everything `ModelStatistics` reports for the model.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Requests answered with outputs, and their time from arrival to answer.
    pub success: Phase,
    /// Requests that failed (invalid, refused, timed out, failed to run), and their time.
    pub fail: Phase,
    /// Time in the queue before the execution started, per request that ran.
    pub queue: Phase,
    /// Assembling the batch's input tensors, per request.
    pub compute_input: Phase,
    /// The runtime's execution, per request.
    pub compute_infer: Phase,
    /// Splitting the outputs back to each request, per request.
    pub compute_output: Phase,
    /// Executions of the model.
    pub executions: AtomicU64,
    /// Rows run (the batch sizes summed).
    pub inferences: AtomicU64,
    /// Milliseconds since the Unix epoch of the last request answered; 0 before any.
    pub last_inference_ms: AtomicU64,
}

impl ModelStats {
    /// Records one execution of `rows` rows in all.
    pub fn record_execution(&self, rows: u64) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.inferences.fetch_add(rows, Ordering::Relaxed);
    }

    /// Records a request's end: success or not, and how long it took from arrival.
    pub fn record_request(&self, ok: bool, took: Duration) {
        if ok {
            self.success.record(1, took);
        } else {
            self.fail.record(1, took);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_accumulate_per_request() {
        let stats = ModelStats::default();
        stats.compute_infer.record(3, Duration::from_micros(2));
        stats.record_execution(5);
        stats.record_request(true, Duration::from_nanos(10));
        stats.record_request(false, Duration::from_nanos(4));
        assert_eq!(stats.compute_infer.read(), (3, 6000));
        assert_eq!(stats.success.read(), (1, 10));
        assert_eq!(stats.fail.read(), (1, 4));
        assert_eq!(stats.executions.load(Ordering::Relaxed), 1);
        assert_eq!(stats.inferences.load(Ordering::Relaxed), 5);
        assert!(stats.last_inference_ms.load(Ordering::Relaxed) > 0);
    }
}
