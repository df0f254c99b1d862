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

//! Inference load: closed loops of `ModelInfer` calls or `ModelStreamInfer` messages, one
//! client (channel, and stream) per thread, with requests of `--rows` rows built from the
//! model's metadata; the rows per execution that the batcher formed, from `ModelStatistics`;
//! and the same session timed in process at that batch size (`--runtime-only`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use grpcio::{CallOption, Environment, WriteFlags};

use gpu_sidecar::backend::onnx::{self, OnnxSession};
use gpu_sidecar::backend::{Provider, Session, SessionOptions};
use gpu_sidecar::config::{Pooling, TextConfig};
use gpu_sidecar::model::text::TextStage;
use gpu_sidecar::proto::grpc_service::model_infer_request::InferInputTensor;
use gpu_sidecar::proto::grpc_service::{
    ModelInferRequest, ModelMetadataRequest, ModelStatisticsRequest,
};
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use gpu_sidecar::tensor::{DataType, Signature, TensorSpec};

use crate::cli::Args;
use crate::cpu::{self, CpuSpent};
use crate::load::{self, Limit, Tally};
use crate::report::{resident_memory, RunReport};
use crate::{BenchError, Target};

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `flink.sidecar.v1.Sidecar/Ping`.
    Ping,
    /// `ModelInfer`, one call per request.
    Unary,
    /// `ModelStreamInfer`, one stream per client, one request in flight on each.
    Stream,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Ping => "ping",
            Mode::Unary => "unary",
            Mode::Stream => "stream",
        }
    }
}

/// What one inference run measured.
#[derive(Debug, Default)]
pub struct Measured {
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Sorted latencies of the answered requests, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Mean rows per execution over the run, from the model's statistics.
    pub rows_per_execution: Option<f64>,
}

pub fn connect(environment: &Arc<Environment>, target: &Target) -> GrpcInferenceServiceClient {
    GrpcInferenceServiceClient::new(crate::channel(environment, target, -1))
}

/// A request of `rows` rows of zeros for the served model, and the model's name.
pub fn template(
    client: &GrpcInferenceServiceClient,
    rows: usize,
) -> Result<ModelInferRequest, String> {
    let option = || CallOption::default().timeout(Duration::from_secs(10));
    let name = served_model(client)?;
    let metadata = client
        .model_metadata_opt(
            &ModelMetadataRequest {
                name: name.clone(),
                ..Default::default()
            },
            option(),
        )
        .map_err(|e| format!("ModelMetadata: {e}"))?;
    let mut request = ModelInferRequest {
        model_name: name,
        ..Default::default()
    };
    let specs = metadata
        .inputs
        .iter()
        .map(|input| {
            let datatype = DataType::parse(&input.datatype)
                .filter(|datatype| datatype.size().is_some())
                .ok_or_else(|| {
                    format!(
                        "input {:?} is {}: not benchmarked",
                        input.name, input.datatype
                    )
                })?;
            Ok(TensorSpec {
                name: input.name.clone(),
                datatype,
                dims: input.shape.clone(),
                labels: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let signature = Signature {
        inputs: specs,
        outputs: Vec::new(),
        max_batch_size: 0,
        ..Default::default()
    };
    for (spec, zeros) in signature.inputs.iter().zip(signature.zero_inputs(rows)) {
        request.inputs.push(InferInputTensor {
            name: spec.name.clone(),
            datatype: spec.datatype.name().to_string(),
            shape: zeros.shape,
            ..Default::default()
        });
        request.raw_input_contents.push(zeros.data);
    }
    Ok(request)
}

/// One request per text, for the served model's BYTES input `text`.
pub fn text_requests<'a>(
    client: &GrpcInferenceServiceClient,
    texts: impl Iterator<Item = &'a str>,
) -> Result<Vec<ModelInferRequest>, String> {
    let template = ModelInferRequest {
        model_name: served_model(client)?,
        inputs: vec![InferInputTensor {
            name: "text".to_string(),
            datatype: "BYTES".to_string(),
            shape: vec![1],
            ..Default::default()
        }],
        ..Default::default()
    };
    let requests: Vec<_> = texts
        .map(|text| {
            let mut request = template.clone();
            let mut raw = (text.len() as u32).to_le_bytes().to_vec();
            raw.extend_from_slice(text.as_bytes());
            request.raw_input_contents = vec![raw];
            request
        })
        .collect();
    if requests.is_empty() {
        return Err("the texts file has no texts".to_string());
    }
    Ok(requests)
}

/// The name of the model the sidecar serves.
fn served_model(client: &GrpcInferenceServiceClient) -> Result<String, String> {
    let stats = client
        .model_statistics_opt(
            &ModelStatisticsRequest::default(),
            CallOption::default().timeout(Duration::from_secs(10)),
        )
        .map_err(|e| format!("ModelStatistics: {e}"))?;
    stats
        .model_stats
        .first()
        .map(|s| s.name.clone())
        .ok_or_else(|| "the sidecar reports no model".to_string())
}

/// (rows run, executions) so far, from the model's statistics.
fn counts(client: &GrpcInferenceServiceClient) -> Option<(u64, u64)> {
    let stats = client
        .model_statistics_opt(
            &ModelStatisticsRequest::default(),
            CallOption::default().timeout(Duration::from_secs(10)),
        )
        .ok()?;
    let model = stats.model_stats.first()?;
    Some((model.inference_count, model.execution_count))
}

/// Runs one closed loop per client until `limit`, unary or streaming per `mode`, each client
/// sending `requests` in turn from its own place in them.
pub fn closed_loop(
    clients: &[GrpcInferenceServiceClient],
    requests: &[ModelInferRequest],
    mode: Mode,
    limit: Limit,
    deadline: Duration,
) -> Measured {
    let before = clients.first().and_then(counts);
    let places = AtomicUsize::new(0);
    let tally = load::closed_loop(clients, limit, |client, go_on, tally| {
        // Clients start 7 requests apart: lengths mix across clients.
        let mut turn = places.fetch_add(7, Ordering::Relaxed);
        let mut next = || {
            turn += 1;
            &requests[turn % requests.len()]
        };
        match mode {
            Mode::Unary | Mode::Ping => {
                while go_on() {
                    let began = Instant::now();
                    match client.model_infer_opt(next(), CallOption::default().timeout(deadline)) {
                        Ok(_) => tally.answered(began),
                        Err(e) => tally.rpc_failed(&e),
                    }
                }
            }
            Mode::Stream => stream_loop(client, &mut next, deadline, go_on, tally),
        }
    });
    let mut measured = Measured {
        requests: tally.requests(),
        errors: tally.errors,
        seconds: tally.seconds,
        latencies: tally.latencies,
        rows_per_execution: None,
    };
    if let (Some((rows0, runs0)), Some((rows1, runs1))) = (before, clients.first().and_then(counts))
    {
        if runs1 > runs0 {
            measured.rows_per_execution = Some((rows1 - rows0) as f64 / (runs1 - runs0) as f64);
        }
    }
    measured
}

/// One stream, one request in flight: send, wait for its answer, repeat.
fn stream_loop<'a>(
    client: &GrpcInferenceServiceClient,
    next: &mut dyn FnMut() -> &'a ModelInferRequest,
    deadline: Duration,
    go_on: &mut dyn FnMut() -> bool,
    tally: &mut Tally,
) {
    let Ok((mut sink, mut receiver)) = client.model_stream_infer_opt(
        CallOption::default().timeout(deadline.max(Duration::from_secs(3600))),
    ) else {
        tally.failed("STREAM_NOT_OPENED");
        return;
    };
    block_on(async {
        while go_on() {
            let began = Instant::now();
            if let Err(e) = sink.send((next().clone(), WriteFlags::default())).await {
                tally.failed(e.to_string());
                return;
            }
            match receiver.next().await {
                Some(Ok(answer)) if answer.error_message.is_empty() => tally.answered(began),
                Some(Ok(answer)) => {
                    tally.failed(answer.error_message.split(':').next().unwrap_or("ERROR"))
                }
                Some(Err(e)) => {
                    tally.failed(e.to_string());
                    return;
                }
                None => {
                    tally.failed("STREAM_ENDED");
                    return;
                }
            }
        }
        let _ = sink.close().await;
    });
}

/// The model's session in this process, on the CPU with every core, as the sidecar makes it
/// (ONNX Runtime loaded as the sidecar loads it).
fn cpu_session(model: &Path, batch: usize) -> Result<OnnxSession, String> {
    onnx::load_library(None).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let options = SessionOptions {
        provider: Provider::Cpu,
        intra_op_threads: thread::available_parallelism().map_or(1, |n| n.get()),
        max_batch_size: u32::try_from(batch).unwrap_or(u32::MAX),
        cuda: Default::default(),
    };
    OnnxSession::create(model, &bytes, &options).map_err(|e| e.to_string())
}

/// Rows per second of `run` (one execution of `rows` rows) for `duration`, after an uncounted
/// warm-up.
fn rows_per_second(
    rows: usize,
    duration: Duration,
    mut run: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    for _ in 0..4 {
        run()?;
    }
    let started = Instant::now();
    let mut executions = 0u64;
    while started.elapsed() < duration {
        run()?;
        executions += 1;
    }
    Ok((executions * rows as u64) as f64 / started.elapsed().as_secs_f64())
}

/// Times the model's session in this process at `batch` rows per execution for `duration`
/// (after a warm-up): rows per second.
pub fn runtime_only(model: &Path, batch: usize, duration: Duration) -> Result<f64, String> {
    let mut session = cpu_session(model, batch)?;
    let inputs = session.signature().zero_inputs(batch);
    rows_per_second(batch, duration, || {
        session
            .run(inputs.clone())
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Times tokenizer and session in this process, as the sidecar runs them, on `texts` (in
/// turn): at `batch` texts per execution, padded to the longest of each, and one text per
/// execution, unpadded. Returns (padded, alone) texts per second.
pub fn runtime_only_text(
    model: &Path,
    tokenizer: &Path,
    texts: &[&str],
    batch: usize,
    duration: Duration,
) -> Result<(f64, f64), String> {
    let mut session = cpu_session(model, batch)?;
    let config = TextConfig {
        tokenizer: tokenizer.to_path_buf(),
        input: "text".to_string(),
        max_length: None,
        truncate: true,
        pooling: Pooling::Mean,
        pooled_from: None,
        normalize: None,
    };
    let text = TextStage::load(&config)
        .and_then(|stage| stage.bind(session.signature()))
        .map_err(|e| e.to_string())?;
    let mut turn = 0;
    let mut rate = |batch: usize| {
        rows_per_second(batch, duration, || {
            let these: Vec<&str> = (0..batch)
                .map(|i| texts[(turn + i) % texts.len()])
                .collect();
            turn += batch;
            let tokens = text.tokenize(&these).map_err(|e| e.to_string())?;
            session
                .run(tokens.inputs)
                .map(drop)
                .map_err(|e| e.to_string())
        })
    };
    Ok((rate(batch)?, rate(1)?))
}

/// The inference runs of the matrix: each --concurrency × --rows.
pub(crate) fn measure_inference(
    args: &Args,
    environment: &Arc<Environment>,
    target: &Target,
    mode: Mode,
    model: Option<&std::path::Path>,
) -> Result<(), BenchError> {
    let probe = connect(environment, target);
    let batching = target
        .max_batch_size
        .map_or_else(|| "as served".to_string(), |n| n.to_string());
    let instances = target
        .instances
        .map_or_else(String::new, |n| format!(", instances {n}"))
        + &target
            .completion_queues
            .map_or_else(String::new, |n| format!(", completion-queues {n}"));
    if !args.json {
        println!(
            "\n{} ({}), {} inference, max-batch-size {batching}{instances}: closed loop, {} warm-up, {} per run",
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
            "{:>11} {:>5} {:>9} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>13}",
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
            "cpu µs/req",
            "cs/req",
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
                Some(texts) => text_requests(&probe, texts.lines().filter(|l| !l.is_empty()))
                    .map_err(unreachable)?,
                None => vec![template(&probe, rows).map_err(unreachable)?],
            };
            let clients: Vec<_> = (0..concurrency)
                .map(|_| connect(environment, target))
                .collect();
            closed_loop(
                &clients,
                &requests,
                mode,
                Limit::Time(args.warmup),
                args.deadline,
            );
            let limit = args
                .requests
                .map_or(Limit::Time(args.duration), Limit::Requests);
            let cpu_before = target.pid.and_then(cpu::sample);
            let measured = closed_loop(&clients, &requests, mode, limit, args.deadline);
            let cpu = cpu_before
                .zip(target.pid.and_then(cpu::sample))
                .map(|(before, after)| CpuSpent::between(&before, &after));
            let answered = measured.latencies.len() as f64;
            let executions = measured
                .rows_per_execution
                .filter(|per| *per > 0.0)
                .map(|per| answered * rows as f64 / per);
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
                            runtime_only_text(model, tokenizer, &texts, batch, duration)
                                .map(|(padded, alone)| (padded, Some(alone)))
                        }
                        _ => runtime_only(model, batch, duration).map(|r| (r, None)),
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
                json["instances"] = serde_json::json!(target.instances);
                json["completion_queues"] = serde_json::json!(target.completion_queues);
                json["rows_per_second"] = serde_json::json!(rows_per_second);
                json["rows_per_execution"] = serde_json::json!(measured.rows_per_execution);
                if let Some(cpu) = &cpu {
                    json["server_cpu"] = cpu.json(answered, rows as f64, executions);
                }
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
                    "{:>11} {:>5} {:>9} {:>7} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>10} {:>9} {:>13}",
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
                    cpu.as_ref()
                        .and_then(|cpu| cpu.per(answered, None))
                        .map_or("-".to_string(), |us| format!("{us:.1}")),
                    cpu.as_ref()
                        .and_then(|cpu| cpu.switches_per(answered, None))
                        .map_or("-".to_string(), |n| format!("{n:.2}")),
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
