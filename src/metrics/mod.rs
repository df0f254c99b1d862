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

//! The Prometheus metrics: one registry, its metric handles, and the text exposition that the
//! health thread serves on `GET /metrics`. gRPC handlers (completion-queue threads) count calls;
//! the main thread records start-up, the model and the GPU memory samples it gets from the
//! GPU-owner thread; the state and uptime are read from the lifecycle at each scrape.
//!
//! By file: the families are made and registered in [`register`]; a model version's series
//! ([`ModelMetrics`], made when it loads and removed when it is freed) in [`model`].
//!
//! Every name carries the `gpu_sidecar_` prefix; the `process_*` metrics (resident memory,
//! CPU time, open file descriptors) come from the `prometheus` crate's process collector.

use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

use crate::config::Endpoint;
use crate::lifecycle::{Lifecycle, State};
use crate::serving::{DeviceInfo, ServingInfo};

mod model;
mod register;
#[cfg(test)]
mod tests;

pub use self::model::ModelMetrics;

const NAMESPACE: &str = "gpu_sidecar";

/// Upper bounds of the Ping latency buckets, in seconds: 50 µs to 2.5 s.
const PING_LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    2.5,
];

/// Upper bounds of the queue-time and compute-time buckets, in seconds: 10 µs to 10 s.
const INFERENCE_TIME_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.5, 2.5, 10.0,
];
/// Upper bounds of the rows-per-execution buckets.
const BATCH_ROWS_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// How an inference request ended, the `outcome` label of `inference_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with outputs.
    Ok,
    /// Refused before it was queued: bad model, tensors or parameters.
    Invalid,
    /// Refused because the queue was full.
    ResourceExhausted,
    /// Its deadline or timeout passed before it ran.
    Deadline,
    /// Its caller cancelled or went away before it ran.
    Cancelled,
    /// Refused because the sidecar was not ready (starting or draining).
    Unavailable,
    /// The runtime failed on its execution.
    Internal,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::ResourceExhausted,
        Outcome::Deadline,
        Outcome::Cancelled,
        Outcome::Unavailable,
        Outcome::Internal,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::ResourceExhausted => "resource_exhausted",
            Outcome::Deadline => "deadline",
            Outcome::Cancelled => "cancelled",
            Outcome::Unavailable => "unavailable",
            Outcome::Internal => "internal",
        }
    }
}

/// The metrics could not be set up or rendered; exit code 1. Both mean a bug in this module
/// (a duplicate or malformed metric), not bad input.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered.
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// How the gRPC endpoint is reached, the `transport` label of the call metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

impl From<&Endpoint> for Transport {
    fn from(endpoint: &Endpoint) -> Self {
        match endpoint {
            Endpoint::Unix(_) => Transport::Unix,
            Endpoint::Tcp { .. } => Transport::Tcp,
        }
    }
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
        }
    }
}

/// Every metric the sidecar exports (shared behind an `Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The Ping series of this process's transport, looked up once rather than per call.
    ping_calls_here: IntCounter,
    ping_errors_here: IntCounter,
    ping_latency_here: Histogram,
    state: IntGaugeVec,
    live: IntGauge,
    uptime: Gauge,
    startup_duration: Gauge,
    ping_calls: IntCounterVec,
    ping_errors: IntCounterVec,
    ping_latency: HistogramVec,
    health_checks: IntCounterVec,
    calls_in_flight: IntGauge,
    gpu_info: IntGaugeVec,
    gpu_memory_total: IntGaugeVec,
    gpu_memory_used: IntGaugeVec,
    gpu_failed: IntGaugeVec,
    model_resident: IntGaugeVec,
    model_load_duration: GaugeVec,
    model_ready: IntGaugeVec,
    model_load_failures: IntCounterVec,
    inference_requests: IntCounterVec,
    inference_queue_depth: IntGaugeVec,
    inference_queue_capacity: IntGaugeVec,
    inference_batch_rows: HistogramVec,
    inference_queue_time: HistogramVec,
    inference_compute_time: HistogramVec,
    inference_executions: IntCounterVec,
    thread_executions: IntCounterVec,
    thread_busy: CounterVec,
    inference_rows: IntCounterVec,
    inference_streams_open: IntGauge,
    tls_certificate_expiry: IntGaugeVec,
    gpu_utilization: GaugeVec,
    tls_reloads: IntCounterVec,
}

/// What one GPU-owner or CPU instance thread counts of its executions.
#[derive(Debug, Clone)]
pub struct ThreadMetrics {
    executions: IntCounter,
    busy: Counter,
}

impl ThreadMetrics {
    /// Counts one execution that ran for `busy`.
    pub fn executed(&self, busy: Duration) {
        self.executions.inc();
        self.busy.inc_by(busy.as_secs_f64());
    }
}

impl Metrics {
    /// The gauge of open ModelStreamInfer streams, moved by the stream handlers.
    pub fn streams_open(&self) -> &IntGauge {
        &self.inference_streams_open
    }

    /// Counts a Ping call received.
    pub fn ping_received(&self) {
        self.ping_calls_here.inc();
    }

    /// Records a Ping's outcome: its latency, and whether its reply was delivered.
    pub fn ping_finished(&self, latency: Duration, delivered: bool) {
        self.ping_latency_here.observe(latency.as_secs_f64());
        if !delivered {
            self.ping_errors_here.inc();
        }
    }

    /// Counts a gRPC health call, `method` being "Check" or "Watch".
    pub fn health_check_received(&self, method: &str) {
        self.health_checks.with_label_values(&[method]).inc();
    }

    /// The gauge of gRPC calls in flight, moved by the gRPC handlers.
    pub fn calls_in_flight(&self) -> &IntGauge {
        &self.calls_in_flight
    }

    /// Records READY: the start-up duration and the GPU.
    pub fn record_ready(&self, startup: Duration, serving: &ServingInfo) {
        self.startup_duration.set(startup.as_secs_f64());
        for device in &serving.gpus {
            self.record_device(device);
        }
    }

    fn record_device(&self, device: &DeviceInfo) {
        let ordinal = device.ordinal.to_string();
        self.gpu_info
            .with_label_values(&[
                ordinal.as_str(),
                device.name.as_str(),
                &format!(
                    "{}.{}",
                    device.compute_capability.0, device.compute_capability.1
                ),
                &format!(
                    "{}.{}",
                    device.driver_cuda_version.0, device.driver_cuda_version.1
                ),
            ])
            .set(1);
        self.gpu_memory_total
            .with_label_values(&[ordinal.as_str()])
            .set(i64::try_from(device.total_memory_bytes).unwrap_or(i64::MAX));
        self.gpu_failed
            .with_label_values(&[ordinal.as_str()])
            .set(0);
    }

    /// The execution counters of the thread `thread`, on `device` (an ordinal, or "cpu").
    pub fn for_thread(&self, thread: &str, device: &str) -> ThreadMetrics {
        let labels = [thread, device];
        ThreadMetrics {
            executions: self.thread_executions.with_label_values(&labels),
            busy: self.thread_busy.with_label_values(&labels),
        }
    }

    /// Records that GPU `ordinal` was taken out of service.
    /// The TLS certificate in use (of `cert_file`) stops being valid at `not_after_unix`.
    pub fn set_tls_certificate_expiry(&self, cert_file: &str, not_after_unix: i64) {
        self.tls_certificate_expiry.reset();
        self.tls_certificate_expiry
            .with_label_values(&[cert_file])
            .set(not_after_unix);
    }

    /// Counts a SIGHUP reload of the TLS files, `ok` or `failed`.
    pub fn tls_reloaded(&self, ok: bool) {
        self.tls_reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    pub fn record_gpu_failed(&self, ordinal: i32) {
        self.gpu_failed
            .with_label_values(&[ordinal.to_string().as_str()])
            .set(1);
    }

    /// Records the driver's utilisation of the GPU (NVML), 0 to 1.
    pub fn record_gpu_utilization(&self, ordinal: i32, ratio: f64) {
        self.gpu_utilization
            .with_label_values(&[ordinal.to_string().as_str()])
            .set(ratio);
    }

    /// Records a sample of the GPU's memory, as the driver reports it.
    pub fn record_gpu_memory(&self, ordinal: i32, free_bytes: u64, total_bytes: u64) {
        let used = total_bytes.saturating_sub(free_bytes);
        let ordinal = ordinal.to_string();
        self.gpu_memory_used
            .with_label_values(&[ordinal.as_str()])
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.gpu_memory_total
            .with_label_values(&[ordinal.as_str()])
            .set(i64::try_from(total_bytes).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format, with state, liveness and uptime read from
    /// `lifecycle` now.
    pub fn render(&self, lifecycle: &Lifecycle) -> String {
        let current = lifecycle.state();
        for state in [
            State::Starting,
            State::Ready,
            State::Draining,
            State::Stopped,
        ] {
            self.state
                .with_label_values(&[state.to_string().to_ascii_lowercase().as_str()])
                .set(i64::from(state == current));
        }
        self.live.set(i64::from(lifecycle.is_live()));
        self.uptime.set(lifecycle.uptime().as_secs_f64());
        let mut text = Vec::new();
        // Cannot fail: the text encoder writes valid UTF-8 into a Vec.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            log::warn!("metrics: cannot encode: {e}");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counts something (a call, a stream) on a gauge while it lasts: up when begun, down
/// when dropped.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn begin(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
