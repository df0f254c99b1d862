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

//! The bench's command line: what to measure, against what, for how long.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use gpu_sidecar::config::parse_duration;

use crate::infer::Mode;

/// Measure a gpu-sidecar: Ping or inference (unary or streaming) latency and throughput, the
/// batches its batcher forms, the same model timed in process, and its start-up time.
///
/// Exit codes: 0 measured (errors during a run are reported, not fatal), 1 the target cannot
/// be reached or a sidecar cannot be spawned, 2 bad usage.
#[derive(Debug, Parser)]
#[command(name = "gpu-sidecar-bench", version, about, long_about)]
pub(crate) struct Args {
    /// gRPC endpoint of a running sidecar: unix:/path.sock or host:port.
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub(crate) target: Option<String>,
    /// The --target sidecar serves TLS ([sidecar.rpc.tls]): the CA certificate (PEM) to trust.
    #[arg(long, value_name = "PATH", requires = "target")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Health endpoint (host:port) of the --target sidecar, to read its resident memory.
    #[arg(long, requires = "target")]
    pub(crate) health: Option<SocketAddr>,
    /// Spawn the sidecars to measure, one per --transports entry, on temp configs.
    #[arg(long)]
    pub(crate) spawn: bool,
    /// The sidecar binary to spawn [default: gpu-sidecar beside this binary].
    #[arg(long, value_name = "PATH")]
    pub(crate) sidecar: Option<PathBuf>,
    /// Transports of the spawned sidecars: unix, tcp, or tls (TCP with [sidecar.rpc.tls], a
    /// self-signed certificate the bench makes).
    #[arg(long, value_delimiter = ',', default_value = "unix,tcp")]
    pub(crate) transports: Vec<Transport>,
    /// ONNX model for the spawned sidecars (and --runtime-only) [default: the sample model].
    #[arg(long, value_name = "PATH")]
    pub(crate) model: Option<PathBuf>,
    /// What to send, one set of runs per value: ping, unary (ModelInfer), stream
    /// (ModelStreamInfer).
    #[arg(long, value_delimiter = ',', default_value = "ping", value_enum)]
    pub(crate) mode: Vec<Mode>,
    /// Rows per inference request, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub(crate) rows: Vec<usize>,
    /// sidecar.batching.max-batch-size of the spawned sidecars, one sidecar per value
    /// (0: batching off).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub(crate) max_batch_size: Vec<u32>,
    /// sidecar.model.instances of the spawned sidecars (instances of the model, on each GPU
    /// or on the CPU), one sidecar per value.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub(crate) instances: Vec<u32>,
    /// sidecar.rpc.completion-queues of the spawned sidecars, one sidecar per value
    /// [default: the sidecar's].
    #[arg(long, value_delimiter = ',')]
    pub(crate) completion_queues: Vec<usize>,
    /// sidecar.rpc.watch-unary-cancellation of the spawned sidecars [default: the sidecar's].
    #[arg(long)]
    pub(crate) watch_unary_cancellation: Option<bool>,
    /// sidecar.model.intra-op-threads of the spawned sidecars [default: the sidecar's].
    #[arg(long)]
    pub(crate) intra_op_threads: Option<usize>,
    /// sidecar.batching.max-queue-delay of the spawned sidecars.
    #[arg(long, default_value = "1 ms")]
    pub(crate) max_queue_delay: String,
    /// sidecar.batching.delay-mode of the spawned sidecars: adaptive or fixed.
    #[arg(long, default_value = "adaptive")]
    pub(crate) delay_mode: String,
    /// A tokenizer.json: the spawned sidecars serve --model text in ([sidecar.model.text]).
    #[arg(long, value_name = "PATH")]
    pub(crate) tokenizer: Option<PathBuf>,
    /// A file of texts, one per line: inference requests send these (one text per request,
    /// each client going through them from its own place) instead of zeros.
    #[arg(long, value_name = "PATH")]
    pub(crate) texts: Option<PathBuf>,
    /// After each inference run, time the same model in this process at the batch size the
    /// batcher formed (rows per execution, rounded), on the CPU: rows/s.
    #[arg(long)]
    pub(crate) runtime_only: bool,
    /// Client threads, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub(crate) concurrency: Vec<usize>,
    /// Ping payload sizes, one run per value: 16, 4KiB, 64KiB, 1MiB.
    #[arg(long, value_delimiter = ',', default_value = "16,64KiB", value_parser = parse_size)]
    pub(crate) payload: Vec<u64>,
    /// How long each run measures: "10 s", "500 ms".
    #[arg(long, default_value = "5 s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Measure this many requests per run instead of a duration.
    #[arg(long)]
    pub(crate) requests: Option<u64>,
    /// Uncounted warm-up before each run.
    #[arg(long, default_value = "1 s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Deadline of each Ping.
    #[arg(long, default_value = "10 s", value_parser = parse_duration)]
    pub(crate) deadline: Duration,
    /// Spawn-to-READY measurements per transport (the median is reported); 0 skips them.
    #[arg(long, default_value_t = 5)]
    pub(crate) startup_runs: usize,
    /// Measure a version switch under load instead: the spawned sidecars serve --model from a
    /// model repository (explicit control), and each --concurrency runs streaming clients for
    /// --duration twice, without a switch and with a new version loaded a third of the way in.
    #[arg(long, requires = "spawn")]
    pub(crate) swap: bool,
    /// With --swap: load this model instead, as another model beside the one the clients
    /// call (a load that must not hold up their requests), a new version of it per run.
    #[arg(long, value_name = "PATH", requires = "swap")]
    pub(crate) load_beside: Option<PathBuf>,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    Unix,
    Tcp,
    Tls,
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{s:?} is not a size like 16, 4KiB or 1MiB: {e}"))
}
