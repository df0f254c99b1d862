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

//! gpu-sidecar: a daemon beside each GPU-equipped Flink TaskManager that owns the GPU and the
//! model resident on it, and serves requests over gRPC on a Unix socket or TCP.
//!
//! # Threads
//! - `main` orchestrates: start-up, then waiting on [`shutdown::Event`]s while checking each
//!   second that every component answers (`/health/live`, systemd's watchdog), then the
//!   shutdown sequence, joining every thread it started ([`supervision`], [`run`]).
//! - `signals` turns SIGTERM/SIGINT into events ([`shutdown`]).
//! - `health` answers HTTP probes and serves the Prometheus metrics ([`health`],
//!   [`metrics`]); `health-accept` and a short-lived `health-conn` per connection guard it.
//! - `grpc-cq-N`, grpcio's completion-queue threads, run the gRPC handlers ([`rpc`]): they
//!   decode inference requests and submit them through the [`model`]'s handle without
//!   blocking.
//! - `gpu-owner` (`gpu-owner-N`, one per device with `sidecar.gpu.devices`) alone touches
//!   its device's CUDA context and runs its instances' sessions ([`gpu`], [`backend`]): it
//!   gathers queued requests into batches, runs them, and answers each request with its
//!   rows; without a GPU, a model's further CPU instances run on `cpu-instance-N` threads.
//!
//! They share the [`lifecycle::Lifecycle`] and talk over crossbeam channels. Plain data that
//! several of them speak lives in leaf modules: [`tensor`], [`serving`], [`proto`].
//!
//! # Start-up and shutdown
//! Signal handlers → health endpoint (answers NOT_READY) → gRPC endpoint bound and serving
//! (inference answers UNAVAILABLE) → GPU thread brings up the device, ONNX Runtime and the
//! model's session, and runs a warm-up batch → READY. The first signal, or any component
//! thread ending, starts the shutdown: DRAINING (health 503, gRPC health NOT_SERVING, new
//! inference UNAVAILABLE, streams end once their answers are sent) → gRPC stops taking
//! calls; queued and running requests finish within the grace period, the rest are cancelled
//! → the GPU thread answers what is still queued, frees the session and releases the context
//! on itself → health and signal threads stop → exit code.

pub mod backend;
pub mod config;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod gpu;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod repository;
pub mod rpc;
pub mod serving;
pub mod shutdown;
pub mod supervision;
pub mod tensor;

pub use crate::supervision::{
    init_logging, preflight, run, Error, EXIT_RUNTIME_FAILURE, EXIT_USAGE,
};
