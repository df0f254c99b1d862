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

//! A model version's series: its requests by outcome, queue depth and time, executions, rows
//! and compute time ([`ModelMetrics`], looked up once when the version loads), and the
//! version's resident, ready and load series, removed when it is freed.

use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};

use super::{Metrics, Outcome};
use crate::serving::ModelLocation;

/// The series of one model version, looked up once when it loads: its requests, queue and
/// executions. Cloned into the handlers' view of the version and the GPU-owner thread's.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    requests: Vec<IntCounter>,
    queue_depth: IntGauge,
    batch_rows: Histogram,
    queue_time: Histogram,
    compute_time: Histogram,
    executions: IntCounter,
    rows: IntCounter,
}

impl ModelMetrics {
    /// Counts a request's end.
    pub fn inference_finished(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    /// Sets the number of requests waiting in the version's queue.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Records how long a request waited before its execution.
    pub fn observe_queue_time(&self, waited: Duration) {
        self.queue_time.observe(waited.as_secs_f64());
    }

    /// Records one execution of `rows` rows that took `compute` in the runtime.
    pub fn record_execution(&self, rows: usize, compute: Duration) {
        self.batch_rows.observe(rows as f64);
        self.compute_time.observe(compute.as_secs_f64());
        self.executions.inc();
        self.rows.inc_by(rows as u64);
    }
}

impl Metrics {
    /// The series of model `name`'s `version`, created at zero.
    pub fn for_model(&self, name: &str, version: u64) -> ModelMetrics {
        let version = version.to_string();
        let labels = [name, version.as_str()];
        ModelMetrics {
            requests: Outcome::ALL
                .iter()
                .map(|outcome| {
                    self.inference_requests.with_label_values(&[
                        name,
                        version.as_str(),
                        outcome.label(),
                    ])
                })
                .collect(),
            queue_depth: self.inference_queue_depth.with_label_values(&labels),
            batch_rows: self.inference_batch_rows.with_label_values(&labels),
            queue_time: self.inference_queue_time.with_label_values(&labels),
            compute_time: self.inference_compute_time.with_label_values(&labels),
            executions: self.inference_executions.with_label_values(&labels),
            rows: self.inference_rows.with_label_values(&labels),
        }
    }

    /// Counts the end of a request that named no model served here.
    pub fn unrouted_inference_finished(&self, outcome: Outcome) {
        self.inference_requests
            .with_label_values(&["", "", outcome.label()])
            .inc();
    }

    /// Records version `version` of model `name` resident (`size_bytes` at `location`,
    /// loaded in `load_time`, its queue holding `queue_capacity` requests) and taking requests.
    pub fn model_loaded(
        &self,
        name: &str,
        version: u64,
        location: ModelLocation,
        size_bytes: u64,
        load_time: Duration,
        queue_capacity: u32,
    ) {
        let version = version.to_string();
        let labels = [name, version.as_str()];
        let location = match location {
            ModelLocation::DeviceMemory => "device",
            ModelLocation::HostMemory => "host",
        };
        self.model_resident
            .with_label_values(&[name, version.as_str(), location])
            .set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
        self.model_load_duration
            .with_label_values(&labels)
            .set(load_time.as_secs_f64());
        self.inference_queue_capacity
            .with_label_values(&labels)
            .set(i64::from(queue_capacity));
        // The model's load-failure count exists from its first load, at zero, so that a
        // dashboard shows 0 rather than no data, and increase() sees the first failure.
        self.model_load_failures.with_label_values(&[name]);
        self.model_ready.with_label_values(&labels).set(1);
    }

    /// Records that a version takes no new requests (it finishes what it has).
    pub fn model_retiring(&self, name: &str, version: u64) {
        let version = version.to_string();
        let _ = self
            .model_ready
            .remove_label_values(&[name, version.as_str()]);
    }

    /// Removes every series of a version that is freed.
    pub fn model_freed(&self, name: &str, version: u64) {
        let version = version.to_string();
        let labels = [name, version.as_str()];
        for location in ["device", "host"] {
            let _ = self
                .model_resident
                .remove_label_values(&[name, version.as_str(), location]);
        }
        let _ = self.model_load_duration.remove_label_values(&labels);
        let _ = self.model_ready.remove_label_values(&labels);
        // Its request series go too: a weekly retrain for months would otherwise pile up
        // series of versions long gone (rate() reads a series' end as its end).
        for outcome in Outcome::ALL {
            let _ = self.inference_requests.remove_label_values(&[
                name,
                version.as_str(),
                outcome.label(),
            ]);
        }
        let _ = self.inference_queue_depth.remove_label_values(&labels);
        let _ = self.inference_queue_capacity.remove_label_values(&labels);
        let _ = self.inference_batch_rows.remove_label_values(&labels);
        let _ = self.inference_queue_time.remove_label_values(&labels);
        let _ = self.inference_compute_time.remove_label_values(&labels);
        let _ = self.inference_executions.remove_label_values(&labels);
        let _ = self.inference_rows.remove_label_values(&labels);
    }

    /// Counts a failed load of model `name`.
    pub fn model_load_failed(&self, name: &str) {
        self.model_load_failures.with_label_values(&[name]).inc();
    }
}
