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

//! Making and registering every metric family, at start-up on the main thread: the process
//! and its calls, the GPU, the models and their inference series.

use prometheus::{
    CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use super::{
    Metrics, MetricsError, Transport, BATCH_ROWS_BUCKETS, INFERENCE_TIME_BUCKETS, NAMESPACE,
    PING_LATENCY_BUCKETS,
};

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
            gpu_failed: IntGaugeVec::new(
                opts(
                    "gpu_failed",
                    "1 for a GPU taken out of service after a CUDA error that ends its context (its instances no longer serve), 0 for one that serves.",
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
            inference_queue_capacity: IntGaugeVec::new(
                opts(
                    "inference_queue_capacity",
                    "The most requests each model version's queue holds (its max-queue-size).",
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
            thread_executions: IntCounterVec::new(
                opts(
                    "thread_executions_total",
                    "Executions run by each GPU-owner thread (one per device) or CPU instance thread, whatever the model.",
                ),
                &["thread", "device"],
            )?,
            thread_busy: CounterVec::new(
                opts(
                    "thread_busy_seconds_total",
                    "Seconds each GPU-owner thread (one per device) or CPU instance thread spent running executions: its rate is the share of time the device was busy with this sidecar's work.",
                ),
                &["thread", "device"],
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
            gpu_utilization: GaugeVec::new(
                opts(
                    "gpu_utilization_ratio",
                    "The share of the driver's last sample period in which a kernel ran on the GPU, any process's (NVML), 0 to 1; absent without a GPU or without NVML.",
                ),
                &["ordinal"],
            )?,
            tls_certificate_expiry: IntGaugeVec::new(
                opts(
                    "tls_certificate_expiry_timestamp_seconds",
                    "When the TLS certificate in use stops being valid (its notAfter), seconds since the Unix epoch; absent without TLS.",
                ),
                &["cert_file"],
            )?,
            tls_reloads: IntCounterVec::new(
                opts(
                    "tls_reloads_total",
                    "SIGHUP reloads of the TLS files, by outcome: ok, or failed (the certificate in use serves on).",
                ),
                &["outcome"],
            )?,
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
            Box::new(metrics.gpu_failed.clone()),
            Box::new(metrics.model_resident.clone()),
            Box::new(metrics.model_load_duration.clone()),
            Box::new(metrics.model_ready.clone()),
            Box::new(metrics.model_load_failures.clone()),
            Box::new(metrics.inference_requests.clone()),
            Box::new(metrics.inference_queue_depth.clone()),
            Box::new(metrics.inference_queue_capacity.clone()),
            Box::new(metrics.inference_batch_rows.clone()),
            Box::new(metrics.inference_queue_time.clone()),
            Box::new(metrics.inference_compute_time.clone()),
            Box::new(metrics.inference_executions.clone()),
            Box::new(metrics.thread_executions.clone()),
            Box::new(metrics.thread_busy.clone()),
            Box::new(metrics.inference_rows.clone()),
            Box::new(metrics.inference_streams_open.clone()),
            Box::new(metrics.tls_certificate_expiry.clone()),
            Box::new(metrics.gpu_utilization.clone()),
            Box::new(metrics.tls_reloads.clone()),
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
        for outcome in ["ok", "failed"] {
            metrics.tls_reloads.with_label_values(&[outcome]);
        }
        Ok(metrics)
    }
}
