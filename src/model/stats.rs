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

//! A model version's cumulative statistics, as Triton's `ModelStatistics` reports them
//! (request counts and nanoseconds per phase, executions and rows), and the [`Recorder`], the
//! one place that records each event into them and into the version's Prometheus series
//! alike. The GPU-owner thread records executions; the gRPC handlers record each request's
//! end; `ModelStatistics` and `/metrics` read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::{ModelMetrics, Outcome};

/// Records a version's events into its statistics and its Prometheus series together.
#[derive(Debug)]
pub struct Recorder {
    stats: ModelStats,
    metrics: ModelMetrics,
}

impl Recorder {
    /// A recorder into `metrics` (the version's series) and statistics at zero.
    pub fn new(metrics: ModelMetrics) -> Self {
        Recorder {
            stats: ModelStats::default(),
            metrics,
        }
    }

    /// The statistics, for `ModelStatistics`.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Sets the number of requests waiting in the version's queue.
    pub fn set_queue_depth(&self, depth: usize) {
        self.metrics.set_queue_depth(depth);
    }

    /// A request leaves the queue for its execution, after waiting `waited`.
    pub fn left_queue(&self, waited: Duration) {
        self.stats.queue.record(1, waited);
        self.metrics.observe_queue_time(waited);
    }

    /// One execution of `requests` requests, `rows` rows in all: `input` spent assembling
    /// its inputs, `infer` in the runtime. Recorded before its requests are answered, so that
    /// a caller who reads the statistics after its answer sees its own execution.
    pub fn executed(&self, requests: u64, rows: usize, input: Duration, infer: Duration) {
        self.stats.executions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .inferences
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.stats.compute_input.record(requests, input);
        self.stats.compute_infer.record(requests, infer);
        self.metrics.record_execution(rows, infer);
    }

    /// The execution's `requests` were answered, which took `output` (splitting the outputs).
    pub fn answered(&self, requests: u64, output: Duration) {
        self.stats.compute_output.record(requests, output);
    }

    /// A request's end, `took` from its arrival: success or not, and its outcome.
    pub fn request_finished(&self, outcome: Outcome, took: Duration) {
        self.metrics.inference_finished(outcome);
        self.stats.record_request(outcome == Outcome::Ok, took);
    }
}

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
    /// Records a request's end: success or not, and how long it took from arrival.
    fn record_request(&self, ok: bool, took: Duration) {
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
    fn phases_accumulate_per_request_in_statistics_and_series_alike() {
        let metrics = crate::metrics::Metrics::new(crate::metrics::Transport::Unix).unwrap();
        let recorder = Recorder::new(metrics.for_model("m", 1));
        recorder.executed(3, 5, Duration::ZERO, Duration::from_micros(2));
        recorder.request_finished(Outcome::Ok, Duration::from_nanos(10));
        recorder.request_finished(Outcome::Invalid, Duration::from_nanos(4));
        let stats = recorder.stats();
        let text = metrics.render(&crate::lifecycle::Lifecycle::new());
        for series in [
            "gpu_sidecar_inference_executions_total{model=\"m\",version=\"1\"} 1",
            "gpu_sidecar_inference_rows_total{model=\"m\",version=\"1\"} 5",
            "gpu_sidecar_inference_requests_total{model=\"m\",outcome=\"ok\",version=\"1\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        assert_eq!(stats.compute_infer.read(), (3, 6000));
        assert_eq!(stats.success.read(), (1, 10));
        assert_eq!(stats.fail.read(), (1, 4));
        assert_eq!(stats.executions.load(Ordering::Relaxed), 1);
        assert_eq!(stats.inferences.load(Ordering::Relaxed), 5);
        assert!(stats.last_inference_ms.load(Ordering::Relaxed) > 0);
    }
}
