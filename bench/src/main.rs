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

mod cli;
mod cpu;
mod infer;
mod load;
mod ping;
mod report;
mod spawn;
mod swap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use clap::Parser;
use grpcio::{Channel, ChannelBuilder, ChannelCredentialsBuilder, EnvBuilder, Environment};

use cli::Args;
use infer::{measure_inference, Mode};
use ping::measure_ping;
use report::report_startup;
use spawn::{Spawner, SAMPLE_MODEL};
use swap::measure_swap;

/// Why a measurement could not be made; exit code 1.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
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
    /// The --tls-ca file cannot be read.
    #[error("--tls-ca {}: {source}", path.display())]
    TlsCa {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A temp file or folder could not be made.
    #[error("cannot prepare temp files: {0}")]
    Io(#[from] std::io::Error),
}

/// A sidecar under measurement.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) label: String,
    pub(crate) grpc: String,
    pub(crate) health: Option<SocketAddr>,
    /// The batching of a spawned sidecar.
    pub(crate) max_batch_size: Option<u32>,
    /// The model's instances in a spawned sidecar.
    pub(crate) instances: Option<u32>,
    /// gRPC's completion queues in a spawned sidecar, where set.
    pub(crate) completion_queues: Option<usize>,
    /// The process of a spawned sidecar, whose CPU each run reads from `/proc`.
    pub(crate) pid: Option<u32>,
    /// With TLS: the certificate (PEM) clients trust.
    pub(crate) tls_ca: Option<Vec<u8>>,
}

/// A channel of its own to `target` (its own connection: subchannels are not shared), over
/// TLS where the target serves it; messages up to `max_message` bytes (-1: any).
pub(crate) fn channel(
    environment: &Arc<Environment>,
    target: &Target,
    max_message: i32,
) -> Channel {
    let mut builder = ChannelBuilder::new(Arc::clone(environment))
        .use_local_subchannel_pool(true)
        .max_receive_message_len(max_message)
        .max_send_message_len(max_message);
    if let Some(ca) = &target.tls_ca {
        builder = builder.set_credentials(
            ChannelCredentialsBuilder::new()
                .root_cert(ca.clone())
                .build(),
        );
    }
    builder.connect(&target.grpc)
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
            } else if args.tls_ca.is_some() {
                "tls"
            } else {
                "tcp"
            }
            .to_string(),
            grpc: grpc.clone(),
            health: args.health,
            max_batch_size: None,
            instances: None,
            completion_queues: None,
            pid: None,
            tls_ca: match &args.tls_ca {
                Some(path) => Some(std::fs::read(path).map_err(|source| BenchError::TlsCa {
                    path: path.clone(),
                    source,
                })?),
                None => None,
            },
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
    // Unset, the sidecar's default: one sidecar.
    let queues: Vec<Option<usize>> = match args.completion_queues.as_slice() {
        [] => vec![None],
        set => set.iter().copied().map(Some).collect(),
    };
    let sidecars = args.max_batch_size.iter().flat_map(|&max_batch_size| {
        let queues = &queues;
        args.instances.iter().flat_map(move |&instances| {
            queues
                .iter()
                .map(move |&completion_queues| (max_batch_size, instances, completion_queues))
        })
    });
    for &transport in &args.transports {
        for (max_batch_size, instances, completion_queues) in sidecars.clone() {
            let spawner = Spawner {
                binary: binary.clone(),
                folder: workspace.path().to_path_buf(),
                model: model.clone(),
                transport,
                max_batch_size,
                instances,
                intra_op_threads: args.intra_op_threads,
                completion_queues,
                watch_unary_cancellation: args.watch_unary_cancellation,
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
                    repository: Some(repository.clone()),
                    ..spawner
                }
                .spawn()?;
                sidecar.target.max_batch_size = Some(max_batch_size);
                match &args.load_beside {
                    Some(beside) => {
                        let folder = repository.join(swap::BESIDE_NAME);
                        measure_swap(args, &environment, &sidecar.target, &folder, beside)?
                    }
                    None => measure_swap(args, &environment, &sidecar.target, &folder, &model)?,
                }
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
            sidecar.target.instances = Some(instances);
            sidecar.target.completion_queues = completion_queues;
            measure(args, &environment, &sidecar.target, Some(&model))?;
        }
    }
    Ok(())
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
