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

//! A version switch under load: a closed loop of streaming clients on a sidecar serving a
//! model repository (explicit control), measured once without a switch and once while a new
//! version of the model is published and loaded (`RepositoryModelLoad`) a third of the way
//! in; the sidecar's resident memory (and the device's, on a GPU) sampled throughout, so that
//! the run shows what two resident versions hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::CallOption;

use gpu_sidecar::proto::grpc_service::{ModelInferRequest, RepositoryModelLoadRequest};
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;

use std::sync::Arc;

use grpcio::Environment;

use crate::cli::Args;
use crate::infer::{self, Measured, Mode};
use crate::load::Limit;
use crate::report::{metrics_text, RunReport};
use crate::{BenchError, Target};

/// The repository folder's model, as spawned sidecars serve it.
pub const MODEL_NAME: &str = "model";
/// The model loaded beside it with `--load-beside`.
pub const BESIDE_NAME: &str = "beside";

/// Lays out `repository/model/1/model.onnx` from `model`; returns the model's folder.
pub fn lay_out(repository: &Path, model: &Path) -> std::io::Result<PathBuf> {
    let folder = repository.join(MODEL_NAME);
    std::fs::create_dir_all(folder.join("1"))?;
    std::fs::copy(model, folder.join("1").join("model.onnx"))?;
    Ok(folder)
}

/// What one run measured, with or without a switch.
#[derive(Debug)]
pub struct SwapRun {
    pub measured: Measured,
    /// How long RepositoryModelLoad took, and whether it succeeded (with a switch).
    pub load: Option<(Duration, Result<(), String>)>,
    /// The sidecar's resident memory before the run and its peak during it.
    pub rss_bytes: (Option<u64>, Option<u64>),
    /// The device's used memory before the run and its peak during it (on a GPU).
    pub device_bytes: (Option<u64>, Option<u64>),
}

/// A load during a run: `model` published as `version` of the model `name` in `folder`.
#[derive(Debug, Clone, Copy)]
pub struct Switch<'a> {
    pub name: &'a str,
    pub version: u64,
    pub folder: &'a Path,
    pub model: &'a Path,
}

/// Runs `clients` streaming `request` for `duration`; with `switch_to`, publishes its model
/// a third of the way in and loads it.
pub fn run(
    clients: &[GrpcInferenceServiceClient],
    request: &ModelInferRequest,
    duration: Duration,
    deadline: Duration,
    health: Option<SocketAddr>,
    switch_to: Option<Switch<'_>>,
) -> SwapRun {
    let sample = || health.map(memory).unwrap_or_default();
    let before = sample();
    let peak_rss = AtomicU64::new(before.0.unwrap_or(0));
    let peak_device = AtomicU64::new(before.1.unwrap_or(0));
    let done = AtomicBool::new(false);
    let mut load = None;
    let requests = [request.clone()];
    let measured = thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let (rss, device) = sample();
                peak_rss.fetch_max(rss.unwrap_or(0), Ordering::Relaxed);
                peak_device.fetch_max(device.unwrap_or(0), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        });
        let switcher = switch_to.map(|switch| {
            let client = &clients[0];
            scope.spawn(move || {
                thread::sleep(duration / 3);
                let began = Instant::now();
                let version = switch.version;
                let outcome = publish(switch.folder, version, switch.model)
                    .map_err(|e| format!("publishing version {version}: {e}"))
                    .and_then(|()| {
                        client
                            .repository_model_load_opt(
                                &RepositoryModelLoadRequest {
                                    model_name: switch.name.to_string(),
                                    ..Default::default()
                                },
                                CallOption::default().timeout(Duration::from_secs(600)),
                            )
                            .map(|_| ())
                            .map_err(|e| format!("RepositoryModelLoad: {e}"))
                    });
                (began.elapsed(), outcome)
            })
        });
        let measured = infer::closed_loop(
            clients,
            &requests,
            Mode::Stream,
            Limit::Time(duration),
            deadline,
        );
        load = switcher.map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| (Duration::ZERO, Err("the switch panicked".to_string())))
        });
        done.store(true, Ordering::Relaxed);
        measured
    });
    let nonzero = |value: u64| (value > 0).then_some(value);
    SwapRun {
        measured,
        load,
        rss_bytes: (before.0, nonzero(peak_rss.into_inner())),
        device_bytes: (before.1, nonzero(peak_device.into_inner())),
    }
}

/// Writes `model` as `version` beside the model's folder, then renames it into place.
fn publish(folder: &Path, version: u64, model: &Path) -> std::io::Result<()> {
    let staging = folder.join(format!(".{version}.partial"));
    std::fs::create_dir_all(&staging)?;
    std::fs::copy(model, staging.join("model.onnx"))?;
    std::fs::rename(&staging, folder.join(version.to_string()))
}

/// The sidecar's resident memory and the device's used memory, from its /metrics.
fn memory(health: SocketAddr) -> (Option<u64>, Option<u64>) {
    let Some(text) = metrics_text(health) else {
        return (None, None);
    };
    let value = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|bytes| bytes as u64)
    };
    (
        value("process_resident_memory_bytes "),
        value("gpu_sidecar_gpu_memory_used_bytes{"),
    )
}

/// The version-switch runs: each --concurrency without a switch, then with one.
pub(crate) fn measure_swap(
    args: &Args,
    environment: &Arc<Environment>,
    target: &Target,
    folder: &std::path::Path,
    model: &std::path::Path,
) -> Result<(), BenchError> {
    let unreachable = |reason| BenchError::Unreachable {
        target: target.grpc.clone(),
        reason,
    };
    let probe = infer::connect(environment, target);
    let rows = args.rows.first().copied().unwrap_or(1);
    let request = infer::template(&probe, rows).map_err(unreachable)?;
    if !args.json {
        println!(
            "\n{} ({}), stream inference of {rows} row(s), max-batch-size {}: {} under load, {} per run",
            target.label,
            target.grpc,
            target.max_batch_size.map_or_else(|| "as served".to_string(), |n| n.to_string()),
            match &args.load_beside {
                Some(beside) => format!("a load of {} beside it", beside.display()),
                None => "a version switch".to_string(),
            },
            humantime::format_duration(args.duration),
        );
        println!(
            "{:>11} {:>7} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
            "concurrency",
            "switch",
            "requests",
            "errors",
            "req/s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "load ms",
            "rss MiB",
            "device MiB"
        );
    }
    // A new version of the model the clients call, or of the one loaded beside it.
    let (name, mut next_version) = if args.load_beside.is_some() {
        (BESIDE_NAME, 1)
    } else {
        (MODEL_NAME, 2)
    };
    for &concurrency in &args.concurrency {
        let clients: Vec<_> = (0..concurrency)
            .map(|_| infer::connect(environment, target))
            .collect();
        let requests = [request.clone()];
        infer::closed_loop(
            &clients,
            &requests,
            Mode::Stream,
            Limit::Time(args.warmup),
            args.deadline,
        );
        for switch in [false, true] {
            let switch_to = switch.then_some(Switch {
                name,
                version: next_version,
                folder,
                model,
            });
            let run = run(
                &clients,
                &request,
                args.duration,
                args.deadline,
                target.health,
                switch_to,
            );
            if switch {
                next_version += 1;
            }
            let report = RunReport {
                transport: target.label.clone(),
                concurrency,
                payload_bytes: 0,
                requests: run.measured.requests,
                errors: run.measured.errors,
                seconds: run.measured.seconds,
                latencies: run.measured.latencies,
                rss_bytes: run.rss_bytes.1,
            };
            let mib = |(before, peak): (Option<u64>, Option<u64>)| match (before, peak) {
                (Some(before), Some(peak)) => format!(
                    "{:.0} -> {:.0}",
                    before as f64 / 1048576.0,
                    peak as f64 / 1048576.0
                ),
                _ => "-".to_string(),
            };
            if args.json {
                let mut json = report.json();
                json["kind"] = serde_json::json!("swap");
                json["switch"] = serde_json::json!(switch);
                json["rows"] = serde_json::json!(rows);
                json["load"] = match &run.load {
                    Some((took, Ok(()))) => serde_json::json!({"seconds": took.as_secs_f64()}),
                    Some((took, Err(e))) => {
                        serde_json::json!({"seconds": took.as_secs_f64(), "error": e})
                    }
                    None => serde_json::Value::Null,
                };
                json["rss_bytes"] =
                    serde_json::json!({"before": run.rss_bytes.0, "peak": run.rss_bytes.1});
                json["device_bytes"] =
                    serde_json::json!({"before": run.device_bytes.0, "peak": run.device_bytes.1});
                println!("{json}");
            } else {
                let errors = if report.errors.is_empty() {
                    "0".to_string()
                } else {
                    format!("{:?}", report.errors)
                };
                println!(
                    "{:>11} {:>7} {:>9} {:>7} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>12} {:>12}",
                    concurrency,
                    if switch { "yes" } else { "no" },
                    report.requests,
                    errors,
                    report.throughput(),
                    report.percentile_us(50.0),
                    report.percentile_us(99.0),
                    report.percentile_us(100.0),
                    match &run.load {
                        Some((took, Ok(()))) => format!("{:.0}", took.as_secs_f64() * 1000.0),
                        Some((_, Err(e))) => format!("error: {e}"),
                        None => "-".to_string(),
                    },
                    mib(run.rss_bytes),
                    mib(run.device_bytes),
                );
            }
        }
    }
    Ok(())
}
