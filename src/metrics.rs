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
//! Every name carries the `gpu_sidecar_` prefix; the `process_*` metrics (resident memory,
//! CPU time, open file descriptors) come from the `prometheus` crate's process collector.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Endpoint;
use crate::lifecycle::{Lifecycle, State};
use crate::serving::{DeviceInfo, ModelLocation, ServingInfo};

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
    model_resident: IntGaugeVec,
    model_load_duration: GaugeVec,
    model_ready: IntGaugeVec,
    model_load_failures: IntCounterVec,
    inference_requests: IntCounterVec,
    inference_queue_depth: IntGaugeVec,
    inference_batch_rows: HistogramVec,
    inference_queue_time: HistogramVec,
    inference_compute_time: HistogramVec,
    inference_executions: IntCounterVec,
    inference_rows: IntCounterVec,
    inference_streams_open: IntGauge,
}

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
    /// Creates and registers every metric; `transport` labels the gRPC call metrics.
    pub fn new(transport: Transport) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);
        let build_info = IntGaugeVec::new(
            opts("build_info", "Always 1; the version of the running binary."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let ping_calls = IntCounterVec::new(
            opts("ping_calls_total", "Ping calls received."),
            &["transport"],
        )?;
        let ping_errors = IntCounterVec::new(
            opts(
                "ping_errors_total",
                "Ping calls whose reply could not be delivered (cancelled, deadline passed, client gone).",
            ),
            &["transport"],
        )?;
        let ping_latency = HistogramVec::new(
            HistogramOpts::new(
                "ping_duration_seconds",
                "Time from receiving a Ping until its reply was sent.",
            )
            .namespace(NAMESPACE)
            .buckets(PING_LATENCY_BUCKETS.to_vec()),
            &["transport"],
        )?;
        let metrics = Metrics {
            ping_calls_here: ping_calls.with_label_values(&[transport.label()]),
            ping_errors_here: ping_errors.with_label_values(&[transport.label()]),
            ping_latency_here: ping_latency.with_label_values(&[transport.label()]),
            ping_calls,
            ping_errors,
            ping_latency,
            state: IntGaugeVec::new(
                opts(
                    "state",
                    "1 for the lifecycle state the sidecar is in (starting, ready, draining, stopped), 0 for the others.",
                ),
                &["state"],
            )?,
            live: IntGauge::with_opts(opts(
                "live",
                "1 while every component thread is alive and answering, else 0 (as /health/live).",
            ))?,
            uptime: Gauge::with_opts(opts("uptime_seconds", "Seconds since the process started."))?,
            startup_duration: Gauge::with_opts(opts(
                "startup_duration_seconds",
                "Seconds from process start to READY; 0 until READY.",
            ))?,
            health_checks: IntCounterVec::new(
                opts(
                    "grpc_health_checks_total",
                    "grpc.health.v1.Health calls received, by method (Check, Watch).",
                ),
                &["method"],
            )?,
            calls_in_flight: IntGauge::with_opts(opts(
                "grpc_calls_in_flight",
                "gRPC calls being handled now (Watch streams included).",
            ))?,
            gpu_info: IntGaugeVec::new(
                opts(
                    "gpu_info",
                    "1 for the GPU in use, with its name, compute capability and the CUDA version the driver supports; absent without a GPU.",
                ),
                &["ordinal", "name", "compute_capability", "driver_cuda_version"],
            )?,
            gpu_memory_total: IntGaugeVec::new(
                opts("gpu_memory_total_bytes", "Total memory of the GPU in use."),
                &["ordinal"],
            )?,
            gpu_memory_used: IntGaugeVec::new(
                opts(
                    "gpu_memory_used_bytes",
                    "Memory of the GPU in use that is not free (by any process), sampled about once a second.",
                ),
                &["ordinal"],
            )?,
            model_resident: IntGaugeVec::new(
                opts(
                    "model_resident_bytes",
                    "Bytes of each model version held, by location (device, host).",
                ),
                &["model", "version", "location"],
            )?,
            model_load_duration: GaugeVec::new(
                opts(
                    "model_load_duration_seconds",
                    "Seconds each model version took to load and become resident.",
                ),
                &["model", "version"],
            )?,
            model_ready: IntGaugeVec::new(
                opts(
                    "model_ready",
                    "1 for each model version that takes requests; absent once it is unloaded.",
                ),
                &["model", "version"],
            )?,
            model_load_failures: IntCounterVec::new(
                opts(
                    "model_load_failures_total",
                    "Loads of a model version that failed (the version served before, if any, serves on).",
                ),
                &["model"],
            )?,
            inference_requests: IntCounterVec::new(
                opts(
                    "inference_requests_total",
                    "Inference requests (ModelInfer calls and ModelStreamInfer messages) by model, version and how they ended: ok, invalid, resource_exhausted, deadline, cancelled, unavailable, internal. Requests for no model served count under model=\"\".",
                ),
                &["model", "version", "outcome"],
            )?,
            inference_queue_depth: IntGaugeVec::new(
                opts(
                    "inference_queue_depth",
                    "Inference requests waiting in each model version's queue.",
                ),
                &["model", "version"],
            )?,
            inference_batch_rows: HistogramVec::new(
                HistogramOpts::new(
                    "inference_batch_rows",
                    "Rows per execution of the model (the batch size the batcher formed).",
                )
                .namespace(NAMESPACE)
                .buckets(BATCH_ROWS_BUCKETS.to_vec()),
                &["model", "version"],
            )?,
            inference_queue_time: HistogramVec::new(
                HistogramOpts::new(
                    "inference_queue_seconds",
                    "Time a request waited in the queue before its execution started.",
                )
                .namespace(NAMESPACE)
                .buckets(INFERENCE_TIME_BUCKETS.to_vec()),
                &["model", "version"],
            )?,
            inference_compute_time: HistogramVec::new(
                HistogramOpts::new(
                    "inference_compute_seconds",
                    "Time ONNX Runtime took for one execution.",
                )
                .namespace(NAMESPACE)
                .buckets(INFERENCE_TIME_BUCKETS.to_vec()),
                &["model", "version"],
            )?,
            inference_executions: IntCounterVec::new(
                opts("inference_executions_total", "Executions of the model."),
                &["model", "version"],
            )?,
            inference_rows: IntCounterVec::new(
                opts(
                    "inference_rows_total",
                    "Rows the model ran (inferences), summed over executions.",
                ),
                &["model", "version"],
            )?,
            inference_streams_open: IntGauge::with_opts(opts(
                "inference_streams_open",
                "ModelStreamInfer streams open now.",
            ))?,
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info),
            Box::new(metrics.state.clone()),
            Box::new(metrics.live.clone()),
            Box::new(metrics.uptime.clone()),
            Box::new(metrics.startup_duration.clone()),
            Box::new(metrics.ping_calls.clone()),
            Box::new(metrics.ping_errors.clone()),
            Box::new(metrics.ping_latency.clone()),
            Box::new(metrics.health_checks.clone()),
            Box::new(metrics.calls_in_flight.clone()),
            Box::new(metrics.gpu_info.clone()),
            Box::new(metrics.gpu_memory_total.clone()),
            Box::new(metrics.gpu_memory_used.clone()),
            Box::new(metrics.model_resident.clone()),
            Box::new(metrics.model_load_duration.clone()),
            Box::new(metrics.model_ready.clone()),
            Box::new(metrics.model_load_failures.clone()),
            Box::new(metrics.inference_requests.clone()),
            Box::new(metrics.inference_queue_depth.clone()),
            Box::new(metrics.inference_batch_rows.clone()),
            Box::new(metrics.inference_queue_time.clone()),
            Box::new(metrics.inference_compute_time.clone()),
            Box::new(metrics.inference_executions.clone()),
            Box::new(metrics.inference_rows.clone()),
            Box::new(metrics.inference_streams_open.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        // Labelled series that exist from the start, at zero, so that rates work from the
        // first scrape.
        for method in ["Check", "Watch"] {
            metrics.health_checks.with_label_values(&[method]);
        }
        Ok(metrics)
    }

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
    /// loaded in `load_time`) and taking requests.
    pub fn model_loaded(
        &self,
        name: &str,
        version: u64,
        location: ModelLocation,
        size_bytes: u64,
        load_time: Duration,
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
        if let Some(device) = &serving.gpu {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum of the samples of `series`'s name that carry (at least) its labels; `None`
    /// when there is none.
    fn sample(text: &str, series: &str) -> Option<f64> {
        fn split(series: &str) -> (&str, Vec<&str>) {
            match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}').split(',').collect()),
                None => (series, Vec::new()),
            }
        }
        let (name, wanted) = split(series);
        let values: Vec<f64> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (sample_name, labels) = split(series);
                (sample_name == name && wanted.iter().all(|label| labels.contains(label)))
                    .then(|| value.parse().ok())
                    .flatten()
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    #[test]
    fn exposition_follows_calls_and_lifecycle() {
        let metrics = Metrics::new(Transport::Unix).unwrap();
        let lifecycle = Lifecycle::new();
        let text = metrics.render(&lifecycle);
        assert_eq!(
            sample(&text, "gpu_sidecar_state{state=\"starting\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_state{state=\"ready\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_ping_calls_total{transport=\"unix\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_ping_calls_total{transport=\"tcp\"}"),
            None
        );
        metrics.ping_received();
        metrics.ping_finished(Duration::from_micros(300), true);
        metrics.ping_received();
        metrics.ping_finished(Duration::from_millis(3), false);
        lifecycle.set_ready(ServingInfo::for_tests());
        metrics.record_ready(Duration::from_millis(1500), &ServingInfo::for_tests());
        metrics.model_loaded("m", 1, ModelLocation::HostMemory, 1, Duration::ZERO);
        let text = metrics.render(&lifecycle);
        assert_eq!(
            sample(&text, "gpu_sidecar_state{state=\"ready\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_ping_calls_total{transport=\"unix\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_ping_errors_total{transport=\"unix\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_ping_duration_seconds_bucket{transport=\"unix\",le=\"0.0005\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_startup_duration_seconds"),
            Some(1.5)
        );
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_model_resident_bytes{location=\"host\",model=\"m\",version=\"1\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_model_ready{model=\"m\",version=\"1\"}"),
            Some(1.0)
        );
        assert!(text.contains("# TYPE gpu_sidecar_ping_duration_seconds histogram"));
    }

    #[test]
    fn inference_series_follow_requests_and_executions() {
        let metrics = Metrics::new(Transport::Unix).unwrap();
        let lifecycle = Lifecycle::new();
        // A model's series are there, at zero, as soon as it is loaded.
        let model = metrics.for_model("affine", 2);
        let text = metrics.render(&lifecycle);
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_inference_requests_total{model=\"affine\",outcome=\"deadline\",version=\"2\"}"
            ),
            Some(0.0)
        );
        model.inference_finished(Outcome::Ok);
        model.inference_finished(Outcome::Ok);
        model.inference_finished(Outcome::ResourceExhausted);
        model.record_execution(3, Duration::from_micros(40));
        model.set_queue_depth(5);
        metrics.unrouted_inference_finished(Outcome::Invalid);
        metrics.streams_open().inc();
        let text = metrics.render(&lifecycle);
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_inference_requests_total{outcome=\"ok\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_inference_requests_total{outcome=\"resource_exhausted\"}"
            ),
            Some(1.0)
        );
        // A request that named no model served has no model.
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_inference_requests_total{model=\"\",outcome=\"invalid\",version=\"\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "gpu_sidecar_inference_rows_total{model=\"affine\",version=\"2\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_inference_executions_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_inference_batch_rows_bucket{le=\"4\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_inference_queue_depth"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "gpu_sidecar_inference_streams_open"),
            Some(1.0)
        );
    }

    #[test]
    fn gpu_series_appear_only_with_a_gpu() {
        let metrics = Metrics::new(Transport::Tcp).unwrap();
        let lifecycle = Lifecycle::new();
        assert!(!metrics.render(&lifecycle).contains("gpu_sidecar_gpu_"));
        metrics.record_gpu_memory(0, 30, 100);
        let text = metrics.render(&lifecycle);
        assert_eq!(
            sample(&text, "gpu_sidecar_gpu_memory_used_bytes{ordinal=\"0\"}"),
            Some(70.0)
        );
    }
}
