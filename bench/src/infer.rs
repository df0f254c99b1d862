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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use grpcio::{CallOption, ChannelBuilder, Environment, WriteFlags};

use gpu_sidecar::batcher::tensor::{element_count, DataType};
use gpu_sidecar::gpu::runtime::{self, ModelSession, Provider, SessionOptions};
use gpu_sidecar::proto::grpc_service::model_infer_request::InferInputTensor;
use gpu_sidecar::proto::grpc_service::{
    ModelInferRequest, ModelMetadataRequest, ModelStatisticsRequest,
};
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;

use super::Limit;

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

pub fn connect(environment: &Arc<Environment>, target: &str) -> GrpcInferenceServiceClient {
    let channel = ChannelBuilder::new(Arc::clone(environment))
        // One channel per client thread: its own connection, not a shared subchannel.
        .use_local_subchannel_pool(true)
        .max_receive_message_len(-1)
        .max_send_message_len(-1)
        .connect(target);
    GrpcInferenceServiceClient::new(channel)
}

/// A request of `rows` rows of zeros for the served model, and the model's name.
pub fn template(
    client: &GrpcInferenceServiceClient,
    rows: usize,
) -> Result<ModelInferRequest, String> {
    let option = || CallOption::default().timeout(Duration::from_secs(10));
    let stats = client
        .model_statistics_opt(&ModelStatisticsRequest::default(), option())
        .map_err(|e| format!("ModelStatistics: {e}"))?;
    let name = stats
        .model_stats
        .first()
        .map(|s| s.name.clone())
        .ok_or("the sidecar reports no model")?;
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
    for input in &metadata.inputs {
        let shape: Vec<i64> = input
            .shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| match (axis, d) {
                (0, -1) => rows as i64,
                (_, -1) => 1,
                (_, d) => d,
            })
            .collect();
        let size = DataType::parse(&input.datatype)
            .and_then(DataType::size)
            .ok_or_else(|| {
                format!(
                    "input {:?} is {}: not benchmarked",
                    input.name, input.datatype
                )
            })?;
        let bytes = element_count(&shape).unwrap_or(0) * size;
        request.inputs.push(InferInputTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape,
            ..Default::default()
        });
        request.raw_input_contents.push(vec![0; bytes]);
    }
    Ok(request)
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

/// Runs one closed loop per client, each on its own thread, until `limit`.
pub fn closed_loop(
    clients: &[GrpcInferenceServiceClient],
    request: &ModelInferRequest,
    mode: Mode,
    limit: Limit,
    deadline: Duration,
) -> Measured {
    let before = clients.first().and_then(counts);
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let (results, collected) = mpsc::channel();
    thread::scope(|scope| {
        for client in clients {
            let results = results.clone();
            let issued = Arc::clone(&issued);
            scope.spawn(move || {
                let go_on = || match limit {
                    Limit::Time(d) => started.elapsed() < d,
                    Limit::Requests(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                };
                let mut latencies = Vec::new();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                match mode {
                    Mode::Unary | Mode::Ping => {
                        while go_on() {
                            let began = Instant::now();
                            match client
                                .model_infer_opt(request, CallOption::default().timeout(deadline))
                            {
                                Ok(_) => latencies.push(began.elapsed().as_nanos() as u64),
                                Err(grpcio::Error::RpcFailure(status)) => {
                                    *errors.entry(format!("{:?}", status.code())).or_default() += 1;
                                }
                                Err(e) => *errors.entry(e.to_string()).or_default() += 1,
                            }
                        }
                    }
                    Mode::Stream => stream_loop(
                        client,
                        request,
                        deadline,
                        go_on,
                        &mut latencies,
                        &mut errors,
                    ),
                }
                let _ = results.send((latencies, errors));
            });
        }
    });
    drop(results);
    let seconds = started.elapsed().as_secs_f64();
    let mut measured = Measured {
        seconds,
        ..Measured::default()
    };
    for (latencies, errors) in collected {
        measured.latencies.extend(latencies);
        for (code, count) in errors {
            *measured.errors.entry(code).or_default() += count;
        }
    }
    measured.latencies.sort_unstable();
    measured.requests = measured.latencies.len() as u64 + measured.errors.values().sum::<u64>();
    if let (Some((rows0, runs0)), Some((rows1, runs1))) = (before, clients.first().and_then(counts))
    {
        if runs1 > runs0 {
            measured.rows_per_execution = Some((rows1 - rows0) as f64 / (runs1 - runs0) as f64);
        }
    }
    measured
}

/// One stream, one request in flight: send, wait for its answer, repeat.
fn stream_loop(
    client: &GrpcInferenceServiceClient,
    request: &ModelInferRequest,
    deadline: Duration,
    mut go_on: impl FnMut() -> bool,
    latencies: &mut Vec<u64>,
    errors: &mut BTreeMap<String, u64>,
) {
    let Ok((mut sink, mut receiver)) = client.model_stream_infer_opt(
        CallOption::default().timeout(deadline.max(Duration::from_secs(3600))),
    ) else {
        *errors.entry("STREAM_NOT_OPENED".to_string()).or_default() += 1;
        return;
    };
    block_on(async {
        while go_on() {
            let began = Instant::now();
            if let Err(e) = sink.send((request.clone(), WriteFlags::default())).await {
                *errors.entry(e.to_string()).or_default() += 1;
                return;
            }
            match receiver.next().await {
                Some(Ok(answer)) if answer.error_message.is_empty() => {
                    latencies.push(began.elapsed().as_nanos() as u64)
                }
                Some(Ok(answer)) => {
                    let code = answer.error_message.split(':').next().unwrap_or("ERROR");
                    *errors.entry(code.to_string()).or_default() += 1;
                }
                Some(Err(e)) => {
                    *errors.entry(e.to_string()).or_default() += 1;
                    return;
                }
                None => {
                    *errors.entry("STREAM_ENDED".to_string()).or_default() += 1;
                    return;
                }
            }
        }
        let _ = sink.close().await;
    });
}

/// Times the model's session in this process at `batch` rows per execution for `duration`
/// (after a warm-up): rows per second. Loads ONNX Runtime as the sidecar does.
pub fn runtime_only(model: &Path, batch: usize, duration: Duration) -> Result<f64, String> {
    runtime::load_library(None).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let options = SessionOptions {
        provider: Provider::Cpu,
        intra_op_threads: thread::available_parallelism().map_or(1, |n| n.get()),
        max_batch_size: u32::try_from(batch).unwrap_or(u32::MAX),
    };
    let mut session = ModelSession::create(model, &bytes, &options).map_err(|e| e.to_string())?;
    session.warm_up().map_err(|e| e.to_string())?;
    let inputs = session.zero_inputs(batch);
    for _ in 0..3 {
        session.run(inputs.clone())?;
    }
    let started = Instant::now();
    let mut executions = 0u64;
    while started.elapsed() < duration {
        session.run(inputs.clone())?;
        executions += 1;
    }
    Ok((executions * batch as u64) as f64 / started.elapsed().as_secs_f64())
}
