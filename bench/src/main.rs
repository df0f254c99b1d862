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

//! `gpu-sidecar-bench`: measures a sidecar from the client side, in the spirit of Triton's
//! perf_analyzer. Either against a running sidecar (`--target`), or against sidecars it
//! spawns itself (`--spawn`, one per transport, on temp configs), for which it also measures
//! the time from spawn to READY.
//!
//! Each run is a closed loop: N client threads, each with its own channel (its own
//! connection), each sending the next Ping as soon as the last one is answered, after an
//! uncounted warm-up, for a fixed time or number of requests. It reports latency percentiles,
//! throughput, errors by status code, and the sidecar's resident memory after the load (read
//! from its `/metrics`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, Environment};

use gpu_sidecar::config::parse_duration;
use gpu_sidecar::proto::sidecar::PingRequest;

mod infer;
mod load;
mod swap;

use infer::Mode;
use load::Limit;

/// The sample model spawned sidecars serve unless --model names another.
const SAMPLE_MODEL: &[u8] = include_bytes!("../../tests/fixtures/models/affine.onnx");
use gpu_sidecar::proto::sidecar_grpc::SidecarClient;

/// How long a spawned sidecar may take to say where it listens, and to become READY.
const SPAWN_PATIENCE: Duration = Duration::from_secs(60);

/// Measure a gpu-sidecar: Ping or inference (unary or streaming) latency and throughput, the
/// batches its batcher forms, the same model timed in process, and its start-up time.
///
/// Exit codes: 0 measured (errors during a run are reported, not fatal), 1 the target cannot
/// be reached or a sidecar cannot be spawned, 2 bad usage.
#[derive(Debug, Parser)]
#[command(name = "gpu-sidecar-bench", version, about, long_about)]
struct Args {
    /// gRPC endpoint of a running sidecar: unix:/path.sock or host:port.
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    target: Option<String>,
    /// Health endpoint (host:port) of the --target sidecar, to read its resident memory.
    #[arg(long, requires = "target")]
    health: Option<SocketAddr>,
    /// Spawn the sidecars to measure, one per --transports entry, on temp configs.
    #[arg(long)]
    spawn: bool,
    /// The sidecar binary to spawn [default: gpu-sidecar beside this binary].
    #[arg(long, value_name = "PATH")]
    sidecar: Option<PathBuf>,
    /// Transports of the spawned sidecars.
    #[arg(long, value_delimiter = ',', default_value = "unix,tcp")]
    transports: Vec<Transport>,
    /// ONNX model for the spawned sidecars (and --runtime-only) [default: the sample model].
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// What to send, one set of runs per value: ping, unary (ModelInfer), stream
    /// (ModelStreamInfer).
    #[arg(long, value_delimiter = ',', default_value = "ping", value_enum)]
    mode: Vec<Mode>,
    /// Rows per inference request, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    rows: Vec<usize>,
    /// sidecar.batching.max-batch-size of the spawned sidecars, one sidecar per value
    /// (0: batching off).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    max_batch_size: Vec<u32>,
    /// sidecar.batching.max-queue-delay of the spawned sidecars.
    #[arg(long, default_value = "1 ms")]
    max_queue_delay: String,
    /// sidecar.batching.delay-mode of the spawned sidecars: adaptive or fixed.
    #[arg(long, default_value = "adaptive")]
    delay_mode: String,
    /// A tokenizer.json: the spawned sidecars serve --model text in ([sidecar.model.text]).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// A file of texts, one per line: inference requests send these (one text per request,
    /// each client going through them from its own place) instead of zeros.
    #[arg(long, value_name = "PATH")]
    texts: Option<PathBuf>,
    /// After each inference run, time the same model in this process at the batch size the
    /// batcher formed (rows per execution, rounded), on the CPU: rows/s.
    #[arg(long)]
    runtime_only: bool,
    /// Client threads, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Ping payload sizes, one run per value: 16, 4KiB, 64KiB, 1MiB.
    #[arg(long, value_delimiter = ',', default_value = "16,64KiB", value_parser = parse_size)]
    payload: Vec<u64>,
    /// How long each run measures: "10 s", "500 ms".
    #[arg(long, default_value = "5 s", value_parser = parse_duration)]
    duration: Duration,
    /// Measure this many requests per run instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Uncounted warm-up before each run.
    #[arg(long, default_value = "1 s", value_parser = parse_duration)]
    warmup: Duration,
    /// Deadline of each Ping.
    #[arg(long, default_value = "10 s", value_parser = parse_duration)]
    deadline: Duration,
    /// Spawn-to-READY measurements per transport (the median is reported); 0 skips them.
    #[arg(long, default_value_t = 5)]
    startup_runs: usize,
    /// Measure a version switch under load instead: the spawned sidecars serve --model from a
    /// model repository (explicit control), and each --concurrency runs streaming clients for
    /// --duration twice, without a switch and with a new version loaded a third of the way in.
    #[arg(long, requires = "spawn")]
    swap: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    Unix,
    Tcp,
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{s:?} is not a size like 16, 4KiB or 1MiB: {e}"))
}

/// Why a measurement could not be made; exit code 1.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// The target does not answer a Ping.
    #[error("cannot reach gpu-sidecar at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    /// A sidecar could not be spawned or did not become READY.
    #[error("cannot spawn {}: {reason}", binary.display())]
    Spawn { binary: PathBuf, reason: String },
    /// The --model file cannot be used.
    #[error("model {}: {source}", path.display())]
    Model {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A temp file or folder could not be made.
    #[error("cannot prepare temp files: {0}")]
    Io(#[from] std::io::Error),
}

/// A sidecar under measurement.
#[derive(Debug)]
struct Target {
    label: String,
    grpc: String,
    health: Option<SocketAddr>,
    /// The batching of a spawned sidecar.
    max_batch_size: Option<u32>,
}

/// The outcome of one run.
#[derive(Debug)]
struct RunReport {
    transport: String,
    concurrency: usize,
    payload_bytes: u64,
    requests: u64,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    /// Sorted latencies of the successful calls, in nanoseconds.
    latencies: Vec<u64>,
    rss_bytes: Option<u64>,
}

impl RunReport {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds.max(f64::EPSILON)
    }

    /// The `p`-th percentile (0-100) of the latencies, in microseconds.
    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1000.0
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "ping",
            "transport": self.transport,
            "concurrency": self.concurrency,
            "payload_bytes": self.payload_bytes,
            "requests": self.requests,
            "ok": self.latencies.len(),
            "errors": self.errors,
            "seconds": self.seconds,
            "throughput_per_second": self.throughput(),
            "latency_us": {
                "p50": self.percentile_us(50.0),
                "p90": self.percentile_us(90.0),
                "p99": self.percentile_us(99.0),
                "max": self.percentile_us(100.0),
            },
            "rss_bytes": self.rss_bytes,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let usage_error = if args.concurrency.contains(&0) {
        Some("--concurrency values must be at least 1")
    } else if args.requests == Some(0) {
        Some("--requests must be at least 1")
    } else if args.requests.is_none() && args.duration.is_zero() {
        Some("--duration must be more than 0")
    } else {
        None
    };
    if let Some(message) = usage_error {
        eprintln!("gpu-sidecar-bench: error: {message}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu-sidecar-bench: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    let environment = Arc::new(
        EnvBuilder::new()
            .cq_count(2)
            .name_prefix("bench-cq")
            .build(),
    );
    if !args.json {
        println!(
            "gpu-sidecar-bench {}: {} CPU core(s) here, shared by the client and any sidecar on this machine",
            env!("CARGO_PKG_VERSION"),
            thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    if let Some(grpc) = &args.target {
        let target = Target {
            label: if grpc.starts_with("unix:") {
                "unix"
            } else {
                "tcp"
            }
            .to_string(),
            grpc: grpc.clone(),
            health: args.health,
            max_batch_size: None,
        };
        return measure(args, &environment, &target, args.model.as_deref());
    }
    let binary = match &args.sidecar {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("gpu-sidecar"),
    };
    let workspace = tempfile::Builder::new()
        .prefix("gpu-sidecar-bench-")
        .tempdir()?;
    let model = match &args.model {
        Some(model) => std::fs::canonicalize(model).map_err(|source| BenchError::Model {
            path: model.clone(),
            source,
        })?,
        None => {
            let path = workspace.path().join("sample.onnx");
            std::fs::write(&path, SAMPLE_MODEL)?;
            path
        }
    };
    for &transport in &args.transports {
        for &max_batch_size in &args.max_batch_size {
            let spawner = Spawner {
                binary: binary.clone(),
                folder: workspace.path().to_path_buf(),
                model: model.clone(),
                transport,
                max_batch_size,
                max_queue_delay: args.max_queue_delay.clone(),
                delay_mode: args.delay_mode.clone(),
                tokenizer: args.tokenizer.clone(),
                repository: None,
            };
            if args.swap {
                let repository = workspace
                    .path()
                    .join(format!("repository-{}", spawner.label()));
                let folder = swap::lay_out(&repository, &model)?;
                let mut sidecar = Spawner {
                    repository: Some(repository),
                    ..spawner
                }
                .spawn()?;
                sidecar.target.max_batch_size = Some(max_batch_size);
                measure_swap(args, &environment, &sidecar.target, &folder, &model)?;
                continue;
            }
            let mut startups = Vec::with_capacity(args.startup_runs);
            // Each spawned sidecar is stopped when dropped.
            for _ in 0..args.startup_runs {
                startups.push(spawner.spawn()?.ready_after);
            }
            if !startups.is_empty() {
                report_startup(args, &spawner.label(), &mut startups);
            }
            let mut sidecar = spawner.spawn()?;
            sidecar.target.max_batch_size = Some(max_batch_size);
            measure(args, &environment, &sidecar.target, Some(&model))?;
        }
    }
    Ok(())
}

fn report_startup(args: &Args, label: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "kind": "startup",
                "transport": label,
                "runs": samples.len(),
                "median_ms": median.as_secs_f64() * 1000.0,
                "samples_ms": ms,
            })
        );
    } else {
        println!(
            "{label}: spawn to READY, median of {}: {:.1} ms (min {:.1}, max {:.1})",
            samples.len(),
            median.as_secs_f64() * 1000.0,
            ms[0],
            ms[ms.len() - 1]
        );
    }
}

/// Every run of the matrix against one target, printed as it finishes.
fn measure(
    args: &Args,
    environment: &Arc<Environment>,
    target: &Target,
    model: Option<&std::path::Path>,
) -> Result<(), BenchError> {
    for &mode in &args.mode {
        if mode == Mode::Ping {
            measure_ping(args, environment, target)?;
        } else {
            measure_inference(args, environment, target, mode, model)?;
        }
    }
    Ok(())
}

/// The inference runs of the matrix: each --concurrency × --rows.
fn measure_inference(
    args: &Args,
    environment: &Arc<Environment>,
    target: &Target,
    mode: Mode,
    model: Option<&std::path::Path>,
) -> Result<(), BenchError> {
    let probe = infer::connect(environment, &target.grpc);
    let batching = target
        .max_batch_size
        .map_or_else(|| "as served".to_string(), |n| n.to_string());
    if !args.json {
        println!(
            "\n{} ({}), {} inference, max-batch-size {batching}: closed loop, {} warm-up, {} per run",
            target.label,
            target.grpc,
            mode.label(),
            humantime::format_duration(args.warmup),
            args.requests.map_or_else(
                || humantime::format_duration(args.duration).to_string(),
                |n| format!("{n} requests")
            )
        );
        println!(
            "{:>11} {:>5} {:>9} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>13}",
            "concurrency",
            "rows",
            "requests",
            "errors",
            "req/s",
            "rows/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "rows/exec",
            "runtime rows/s"
        );
    }
    for &concurrency in &args.concurrency {
        for &rows in &args.rows {
            let unreachable = |reason| BenchError::Unreachable {
                target: target.grpc.clone(),
                reason,
            };
            let texts = match &args.texts {
                Some(path) => {
                    Some(
                        std::fs::read_to_string(path).map_err(|source| BenchError::Model {
                            path: path.clone(),
                            source,
                        })?,
                    )
                }
                None => None,
            };
            let requests = match &texts {
                Some(texts) => {
                    infer::text_requests(&probe, texts.lines().filter(|l| !l.is_empty()))
                        .map_err(unreachable)?
                }
                None => vec![infer::template(&probe, rows).map_err(unreachable)?],
            };
            let clients: Vec<_> = (0..concurrency)
                .map(|_| infer::connect(environment, &target.grpc))
                .collect();
            infer::closed_loop(
                &clients,
                &requests,
                mode,
                Limit::Time(args.warmup),
                args.deadline,
            );
            let limit = args
                .requests
                .map_or(Limit::Time(args.duration), Limit::Requests);
            let measured = infer::closed_loop(&clients, &requests, mode, limit, args.deadline);
            let runtime = match (args.runtime_only, model, measured.rows_per_execution) {
                (true, Some(model), Some(per_execution)) => {
                    // Without batching each execution runs one request, of `rows` rows.
                    let batch = (per_execution.round() as usize).max(rows);
                    let duration = args.duration.min(Duration::from_secs(5));
                    // Rows per second at the batch formed, and for texts one text alone.
                    let rate = match (&args.tokenizer, &texts) {
                        (Some(tokenizer), Some(texts)) => {
                            let texts: Vec<&str> =
                                texts.lines().filter(|l| !l.is_empty()).collect();
                            infer::runtime_only_text(model, tokenizer, &texts, batch, duration)
                                .map(|(padded, alone)| (padded, Some(alone)))
                        }
                        _ => infer::runtime_only(model, batch, duration).map(|r| (r, None)),
                    };
                    Some((batch, rate))
                }
                _ => None,
            };
            let report = RunReport {
                transport: target.label.clone(),
                concurrency,
                payload_bytes: 0,
                requests: measured.requests,
                errors: measured.errors,
                seconds: measured.seconds,
                latencies: measured.latencies,
                rss_bytes: target.health.and_then(resident_memory),
            };
            let rows_per_second = report.throughput() * rows as f64;
            if args.json {
                let mut json = report.json();
                json["kind"] = serde_json::json!("inference");
                json["mode"] = serde_json::json!(mode.label());
                json["rows"] = serde_json::json!(rows);
                json["max_batch_size"] = serde_json::json!(target.max_batch_size);
                json["rows_per_second"] = serde_json::json!(rows_per_second);
                json["rows_per_execution"] = serde_json::json!(measured.rows_per_execution);
                if let Some((batch, result)) = &runtime {
                    json["runtime_only"] = match result {
                        Ok((rate, alone)) => serde_json::json!({
                            "batch": batch,
                            "rows_per_second": rate,
                            "alone_rows_per_second": alone,
                        }),
                        Err(e) => serde_json::json!({"batch": batch, "error": e}),
                    };
                }
                println!("{json}");
            } else {
                let errors = if report.errors.is_empty() {
                    report.error_count().to_string()
                } else {
                    format!("{:?}", report.errors)
                };
                println!(
                    "{:>11} {:>5} {:>9} {:>7} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>13}",
                    concurrency,
                    rows,
                    report.requests,
                    errors,
                    report.throughput(),
                    rows_per_second,
                    report.percentile_us(50.0),
                    report.percentile_us(90.0),
                    report.percentile_us(99.0),
                    measured
                        .rows_per_execution
                        .map_or("-".to_string(), |r| format!("{r:.1}")),
                    match &runtime {
                        Some((batch, Ok((rate, None)))) => format!("{rate:.0} @{batch}"),
                        Some((batch, Ok((rate, Some(alone))))) => {
                            format!("{rate:.0} @{batch}, {alone:.0} @1")
                        }
                        Some((_, Err(e))) => format!("error: {e}"),
                        None => "-".to_string(),
                    }
                );
            }
        }
    }
    Ok(())
}

/// The Ping runs of the matrix: each --concurrency × --payload.
fn measure_ping(
    args: &Args,
    environment: &Arc<Environment>,
    target: &Target,
) -> Result<(), BenchError> {
    let probe = connect(environment, &target.grpc);
    probe
        .ping_opt(
            &PingRequest::default(),
            CallOption::default().timeout(Duration::from_secs(5)),
        )
        .map_err(|e| BenchError::Unreachable {
            target: target.grpc.clone(),
            reason: e.to_string(),
        })?;
    if !args.json {
        println!(
            "\n{} ({}): closed loop, {} warm-up, {} per run",
            target.label,
            target.grpc,
            humantime::format_duration(args.warmup),
            args.requests.map_or_else(
                || humantime::format_duration(args.duration).to_string(),
                |n| format!("{n} requests")
            )
        );
        println!(
            "{:>11} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "concurrency",
            "payload",
            "requests",
            "errors",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs"
        );
    }
    for &concurrency in &args.concurrency {
        for &payload in &args.payload {
            let clients: Vec<SidecarClient> = (0..concurrency)
                .map(|_| connect(environment, &target.grpc))
                .collect();
            let payload_bytes = vec![0x5au8; usize::try_from(payload).unwrap_or(usize::MAX)];
            closed_loop(
                &clients,
                &payload_bytes,
                Limit::Time(args.warmup),
                args.deadline,
            );
            let limit = args
                .requests
                .map_or(Limit::Time(args.duration), Limit::Requests);
            let mut report = closed_loop(&clients, &payload_bytes, limit, args.deadline);
            report.transport = target.label.clone();
            report.payload_bytes = payload;
            report.rss_bytes = target.health.and_then(resident_memory);
            print_report(args, &report);
        }
    }
    Ok(())
}

fn print_report(args: &Args, report: &RunReport) {
    if args.json {
        println!("{}", report.json());
        return;
    }
    let errors = if report.errors.is_empty() {
        "0".to_string()
    } else {
        report.error_count().to_string()
    };
    println!(
        "{:>11} {:>9} {:>9} {:>7} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        report.concurrency,
        bytesize::ByteSize(report.payload_bytes)
            .display()
            .iec()
            .to_string(),
        report.requests,
        errors,
        report.throughput(),
        report.percentile_us(50.0),
        report.percentile_us(90.0),
        report.percentile_us(99.0),
        report.percentile_us(100.0),
    );
    for (code, count) in &report.errors {
        println!("{:>11} {count} x {code}", "error:");
    }
    if let Some(rss) = report.rss_bytes {
        println!(
            "{:>11} sidecar resident memory after the run: {}",
            "",
            bytesize::ByteSize(rss).display().iec()
        );
    }
}

/// A channel of its own (its own connection: subchannels are not shared).
fn connect(environment: &Arc<Environment>, target: &str) -> SidecarClient {
    let channel = ChannelBuilder::new(Arc::clone(environment))
        .use_local_subchannel_pool(true)
        .max_receive_message_len(64 << 20)
        .max_send_message_len(64 << 20)
        .connect(target);
    SidecarClient::new(channel)
}

/// Runs one closed loop of Pings per client until `limit`.
fn closed_loop(
    clients: &[SidecarClient],
    payload: &[u8],
    limit: Limit,
    deadline: Duration,
) -> RunReport {
    let request = PingRequest {
        payload: payload.to_vec(),
        ..PingRequest::default()
    };
    let tally = load::closed_loop(clients, limit, |client, go_on, tally| {
        while go_on() {
            let began = Instant::now();
            match client.ping_opt(&request, CallOption::default().timeout(deadline)) {
                Ok(response) if response.payload.len() == request.payload.len() => {
                    tally.answered(began)
                }
                Ok(_) => tally.failed("WRONG_PAYLOAD"),
                Err(e) => tally.rpc_failed(&e),
            }
        }
    });
    RunReport {
        transport: String::new(),
        concurrency: clients.len(),
        payload_bytes: payload.len() as u64,
        requests: tally.requests(),
        errors: tally.errors,
        seconds: tally.seconds,
        latencies: tally.latencies,
        rss_bytes: None,
    }
}

/// The sidecar's `process_resident_memory_bytes`, from its `/metrics`.
fn resident_memory(health: SocketAddr) -> Option<u64> {
    metrics_text(health)?
        .lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|bytes| bytes as u64)
}

/// The sidecar's /metrics, as text.
fn metrics_text(health: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&health, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {health}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The version-switch runs: each --concurrency without a switch, then with one.
fn measure_swap(
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
    let probe = infer::connect(environment, &target.grpc);
    let rows = args.rows.first().copied().unwrap_or(1);
    let request = infer::template(&probe, rows).map_err(unreachable)?;
    if !args.json {
        println!(
            "\n{} ({}), stream inference of {rows} row(s), max-batch-size {}: a version switch under load, {} per run",
            target.label,
            target.grpc,
            target.max_batch_size.map_or_else(|| "as served".to_string(), |n| n.to_string()),
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
    let mut next_version = 2;
    for &concurrency in &args.concurrency {
        let clients: Vec<_> = (0..concurrency)
            .map(|_| infer::connect(environment, &target.grpc))
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
            let switch_to = switch.then_some((next_version, folder, model));
            let run = swap::run(
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

/// Starts sidecars on one transport, each on a fresh config in `folder`.
#[derive(Debug)]
struct Spawner {
    binary: PathBuf,
    folder: PathBuf,
    model: PathBuf,
    transport: Transport,
    max_batch_size: u32,
    max_queue_delay: String,
    delay_mode: String,
    tokenizer: Option<PathBuf>,
    /// Serve this model repository (explicit control) instead of `model`.
    repository: Option<PathBuf>,
}

/// A spawned sidecar, READY.
#[derive(Debug)]
struct Spawned {
    child: Child,
    target: Target,
    ready_after: Duration,
}

impl Spawner {
    fn label(&self) -> String {
        match self.transport {
            Transport::Unix => "unix".to_string(),
            Transport::Tcp => "tcp".to_string(),
        }
    }

    fn spawn_error(&self, reason: impl Into<String>) -> BenchError {
        BenchError::Spawn {
            binary: self.binary.clone(),
            reason: reason.into(),
        }
    }

    /// Spawns a sidecar and waits until `/health` says READY.
    fn spawn(&self) -> Result<Spawned, BenchError> {
        let endpoint = match self.transport {
            Transport::Unix => format!("unix:{}", self.folder.join("bench.sock").display()),
            Transport::Tcp => "127.0.0.1:0".to_string(),
        };
        let config = self.folder.join(format!("{}.toml", self.label()));
        std::fs::write(
            &config,
            format!(
                "{}[sidecar.rpc]\nendpoint = \"{endpoint}\"\n{}\
                 [sidecar.health]\nport = 0\n[sidecar.shutdown]\ngrace-period = \"5 s\"\n\
                 [sidecar.batching]\nmax-batch-size = {}\nmax-queue-delay = {:?}\n\
                 delay-mode = {:?}\n[sidecar.log]\nlevel = \"info\"\n{}",
                self.repository
                    .as_ref()
                    .map_or_else(String::new, |folder| format!(
                        "[sidecar]\nrepository = {:?}\nrepository-control = \"explicit\"\n",
                        folder.display()
                    )),
                match &self.repository {
                    Some(_) => String::new(),
                    None => format!("[sidecar.model]\nuri = {:?}\n", self.model.display()),
                },
                self.max_batch_size,
                self.max_queue_delay,
                self.delay_mode,
                self.tokenizer
                    .as_ref()
                    .map_or_else(String::new, |path| format!(
                        "[sidecar.model.text]\ntokenizer = {:?}\n",
                        path.display()
                    )),
            ),
        )?;
        let spawned_at = Instant::now();
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e.to_string()))?;
        let addresses = listen_addresses(child.stderr.take().expect("piped stderr"));
        let (grpc, health) = match addresses.recv_timeout(SPAWN_PATIENCE) {
            Ok(found) => found,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(self.spawn_error(format!("it did not report its addresses ({status})")));
            }
        };
        let deadline = spawned_at + SPAWN_PATIENCE;
        loop {
            if health_is_ready(health) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.spawn_error(format!("it exited with {status} before READY")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.spawn_error("it did not become READY within 60 s"));
            }
            thread::sleep(Duration::from_micros(500));
        }
        Ok(Spawned {
            ready_after: spawned_at.elapsed(),
            child,
            target: Target {
                label: self.label(),
                grpc,
                health: Some(health),
                max_batch_size: None,
            },
        })
    }
}

impl Spawned {
    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    /// Never leaves a spawned sidecar behind, even when a measurement panics.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the sidecar's log until it names its gRPC and health addresses (sent once), then
/// keeps draining it so the sidecar never blocks on a full pipe.
fn listen_addresses(log: impl Read + Send + 'static) -> mpsc::Receiver<(String, SocketAddr)> {
    let (found, addresses) = mpsc::channel();
    thread::spawn(move || {
        let mut grpc = None;
        let mut health = None;
        let mut sent = false;
        for line in BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("gRPC server listening on ").nth(1) {
                grpc = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.split("health endpoint listening on http://").nth(1) {
                health = rest.trim_end_matches("/health").parse().ok();
            }
            if !sent {
                if let (Some(grpc), Some(health)) = (&grpc, health) {
                    let _ = found.send((grpc.clone(), health));
                    sent = true;
                }
            }
        }
    });
    addresses
}

/// Whether `GET /health` answers 200.
fn health_is_ready(health: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&health, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET /health HTTP/1.0\r\nHost: {health}\r\n\r\n").is_err() {
        return false;
    }
    let mut status_line = String::new();
    let _ = BufReader::new(stream).read_line(&mut status_line);
    status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200")
}
