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
//! - `main` orchestrates: start-up, then waiting on [`shutdown::Event`]s, then the shutdown
//!   sequence, joining every thread it started ([`run`]).
//! - `signals` turns SIGTERM/SIGINT into events ([`shutdown`]).
//! - `health` answers HTTP probes ([`health`]).
//! - `grpc-cq-N`, grpcio's completion-queue threads, run the gRPC handlers ([`rpc`]).
//! - `gpu-owner` alone touches CUDA: context, device memory, model ([`gpu`]).
//!
//! They share the [`lifecycle::Lifecycle`] and talk over crossbeam channels.
//!
//! # Start-up and shutdown
//! Signal handlers → health endpoint (answers NOT_READY) → gRPC endpoint bound and serving →
//! GPU thread brings up the device and the model → READY. The first signal, or any component
//! thread ending, starts the shutdown: DRAINING (health 503, gRPC health NOT_SERVING) → gRPC
//! stops taking calls, in-flight ones get the grace period, the rest are cancelled → the GPU
//! thread frees everything on itself → health and signal threads stop → exit code.

pub mod config;
pub mod gpu;
pub mod health;
pub mod lifecycle;
pub mod model;
pub mod rpc;
pub mod shutdown;

/// The generated protobuf messages and gRPC stubs (`proto/*.proto`).
#[allow(missing_debug_implementations)] // grpcio-compiler's client stubs do not derive Debug
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
}

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender};

use crate::config::{Config, ConfigError};
use crate::gpu::{GpuError, GpuOwner, ServingInfo};
use crate::health::{HealthError, HealthServer};
use crate::lifecycle::Lifecycle;
use crate::rpc::{RpcError, RpcServer};
use crate::shutdown::{signal_name, Event, ShutdownError, SignalThread};

/// How long the health and signal threads get to stop once asked.
const THREAD_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit code for a clean run.
pub const EXIT_OK: u8 = 0;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME_FAILURE: u8 = 1;
/// Exit code for a bad configuration or command line.
pub const EXIT_USAGE: u8 = 2;

/// Why the sidecar stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The logger could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// The health endpoint could not start.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The gRPC endpoint could not start or stop.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The GPU or the model could not be brought up.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A thread could not be started or stopped.
    #[error(transparent)]
    Thread(#[from] ShutdownError),
    /// A component thread ended while the sidecar was running.
    #[error("the {name} thread died: {reason}")]
    ThreadDied { name: String, reason: String },
}

impl Error {
    /// The process exit code for this error: 2 for configuration, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_USAGE,
            _ => EXIT_RUNTIME_FAILURE,
        }
    }
}

/// Installs the logger: stderr, `level` and above, with the thread's name (or id, for the
/// unnamed threads of libraries) on every line; gRPC core's own log is routed to it.
pub fn init_logging(level: log::LevelFilter) -> Result<(), Error> {
    let config = simplelog::ConfigBuilder::new()
        .set_thread_mode(simplelog::ThreadLogMode::Both)
        .set_thread_level(log::LevelFilter::Error)
        .set_target_level(log::LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    // Colours only for a person at a terminal, never into journald or a log file.
    let colours = if std::io::stderr().is_terminal() {
        simplelog::ColorChoice::Auto
    } else {
        simplelog::ColorChoice::Never
    };
    simplelog::TermLogger::init(level, config, simplelog::TerminalMode::Stderr, colours)
        .map_err(|e| Error::Logging(e.to_string()))?;
    grpcio::redirect_log();
    Ok(())
}

/// The components started so far, stopped in reverse order by [`Components::shut_down`].
#[derive(Debug)]
struct Components {
    signals: Option<SignalThread>,
    health: Option<HealthServer>,
    rpc: Option<RpcServer>,
    gpu: Option<GpuOwner>,
}

/// Runs the sidecar until a signal (then `Ok`) or a failure (then the error), always running
/// the full shutdown sequence before returning.
pub fn run(config: &Config) -> Result<(), Error> {
    let started = Instant::now();
    log::info!(
        "gpu-sidecar {} starting, pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    for line in config.to_string().lines() {
        log::info!("config: {line}");
    }
    let lifecycle = Arc::new(Lifecycle::new());
    let (events, event_receiver) = unbounded();
    let mut components = Components {
        signals: Some(SignalThread::start(events.clone())?),
        health: None,
        rpc: None,
        gpu: None,
    };
    let outcome = start_up(
        config,
        &lifecycle,
        &events,
        &event_receiver,
        &mut components,
    )
    .and_then(|stopped_early| {
        if stopped_early {
            return Ok(());
        }
        log::info!("READY in {} ms", started.elapsed().as_millis());
        wait_for_stop(&event_receiver, &lifecycle)
    });
    if let Err(e) = &outcome {
        log::error!("{e}");
    }
    let stopped = components.shut_down(&lifecycle, config.shutdown.grace_period.0);
    outcome.and(stopped)
}

/// Starts every component and waits for the GPU thread to report the model resident.
/// Returns `true` if a signal asked to stop before READY.
fn start_up(
    config: &Config,
    lifecycle: &Arc<Lifecycle>,
    events: &Sender<Event>,
    event_receiver: &Receiver<Event>,
    components: &mut Components,
) -> Result<bool, Error> {
    let health = HealthServer::start(&config.health, Arc::clone(lifecycle), events.clone())?;
    components.health = Some(health);
    components.rpc = Some(RpcServer::start(&config.rpc, Arc::clone(lifecycle))?);
    let gpu = GpuOwner::start(&config.gpu, config.model.uri.path.clone(), events.clone())?;
    let ready = gpu.ready.clone();
    components.gpu = Some(gpu);
    select! {
        recv(ready) -> outcome => {
            lifecycle.set_ready(gpu_outcome(outcome.ok())?);
            Ok(false)
        }
        recv(event_receiver) -> event => match event {
            Ok(Event::Signal(signal)) => {
                log::info!("{} during start-up: stopping", signal_name(signal));
                Ok(true)
            }
            // The GPU thread reports its own failure on `ready` before it ends.
            Ok(Event::ThreadExited { name, failure }) if name == "gpu-owner" => {
                match ready.try_recv() {
                    Ok(Err(e)) => Err(e.into()),
                    _ => Err(thread_died(lifecycle, name, failure)),
                }
            }
            Ok(Event::ThreadExited { name, failure }) => Err(thread_died(lifecycle, name, failure)),
            Err(_) => unreachable!("run() holds a sender"),
        }
    }
}

/// The GPU thread's start-up report, or an error if it ended without one.
fn gpu_outcome(outcome: Option<Result<ServingInfo, GpuError>>) -> Result<ServingInfo, Error> {
    match outcome {
        Some(Ok(info)) => Ok(info),
        Some(Err(e)) => Err(e.into()),
        None => Err(Error::ThreadDied {
            name: "gpu-owner".to_string(),
            reason: "ended before reporting start-up".to_string(),
        }),
    }
}

/// Waits while READY for a signal (`Ok`) or a component thread's end (the error).
fn wait_for_stop(event_receiver: &Receiver<Event>, lifecycle: &Lifecycle) -> Result<(), Error> {
    match event_receiver.recv() {
        Ok(Event::Signal(signal)) => {
            log::info!("{}: shutting down", signal_name(signal));
            Ok(())
        }
        Ok(Event::ThreadExited { name, failure }) => Err(thread_died(lifecycle, name, failure)),
        Err(_) => unreachable!("run() holds a sender"),
    }
}

/// Marks the sidecar not live and describes the thread's end.
fn thread_died(lifecycle: &Lifecycle, name: String, failure: Option<String>) -> Error {
    lifecycle.mark_failed(&name);
    Error::ThreadDied {
        name,
        reason: failure.unwrap_or_else(|| "it ended unexpectedly".to_string()),
    }
}

impl Components {
    /// The shutdown sequence. Every step runs even if an earlier one failed; the first error
    /// is returned.
    fn shut_down(&mut self, lifecycle: &Lifecycle, grace: Duration) -> Result<(), Error> {
        let begun = Instant::now();
        if lifecycle.begin_draining() {
            log::info!("draining: health reports NOT_READY, gRPC health NOT_SERVING");
        }
        lifecycle.close_subscriptions();
        let mut first_error: Option<Error> = None;
        let mut note = |result: Result<(), Error>| {
            if let Err(e) = result {
                log::error!("shutdown: {e}");
                first_error.get_or_insert(e);
            }
        };
        if let Some(rpc) = self.rpc.take() {
            note(rpc.shutdown(grace).map_err(Error::from));
        }
        if let Some(gpu) = self.gpu.take() {
            note(gpu.stop(grace).map_err(Error::from));
        }
        lifecycle.set_stopped();
        if let Some(health) = self.health.take() {
            note(health.stop(THREAD_STOP_TIMEOUT).map_err(Error::from));
        }
        if let Some(signals) = self.signals.take() {
            note(signals.stop(THREAD_STOP_TIMEOUT).map_err(Error::from));
        }
        log::info!("stopped in {} ms", begun.elapsed().as_millis());
        first_error.map_or(Ok(()), Err)
    }
}
