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
//!   second that every component answers ([`supervision`]: `/health/live`, systemd's
//!   watchdog), then the shutdown sequence, joining every thread it started ([`run`]).
//! - `signals` turns SIGTERM/SIGINT into events ([`shutdown`]).
//! - `health` answers HTTP probes and serves the Prometheus metrics ([`health`],
//!   [`metrics`]); `health-accept` and a short-lived `health-conn` per connection guard it.
//! - `grpc-cq-N`, grpcio's completion-queue threads, run the gRPC handlers ([`rpc`]): they
//!   decode inference requests and submit them through the [`model`]'s handle without
//!   blocking.
//! - `gpu-owner` alone touches CUDA and the [`backend`]'s session ([`gpu`]): it gathers
//!   queued requests into batches, runs them, and answers each request with its rows.
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

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, tick, unbounded, Receiver, Sender};

use crate::config::{Config, ConfigError, ModelSource};
use crate::gpu::{GpuError, GpuOwner};
use crate::health::{HealthError, HealthServer};
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, MetricsError, Transport};
use crate::model::text::{TextError, TextStage};
use crate::repository::control::{self, RepositoryOrders, RepositoryPlan, RepositoryThread};
use crate::repository::{Repository, RepositoryError};
use crate::rpc::inference::InferenceService;
use crate::rpc::{RpcError, RpcServer};
use crate::serving::{ByteSize, ServingInfo};
use crate::shutdown::{signal_name, Event, ShutdownError, SignalThread};
use crate::supervision::{load_status, Liveness, Notifier, Verdict, LOAD_PROGRESS_ALLOWANCE};

/// How long the health and signal threads get to stop once asked.
const THREAD_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often start-up progress is reported to systemd while the model loads.
const STARTUP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The metrics registry could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The gRPC endpoint could not start or stop.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The GPU or the runtime could not be brought up.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A model that should be served at start could not be.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The tokenizer cannot be read, or does not fit the model.
    #[error(transparent)]
    Text(#[from] TextError),
    /// A thread could not be started or stopped.
    #[error(transparent)]
    Thread(#[from] ShutdownError),
    /// A component thread ended while the sidecar was running.
    #[error("the {name} thread died: {reason}")]
    ThreadDied { name: String, reason: String },
}

impl Error {
    /// The process exit code for this error: 2 for a bad configuration, including a model the
    /// sidecar cannot serve (no restart can fix either: supervisors do not retry exit 2), 1
    /// for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Text(_) => EXIT_USAGE,
            Error::Gpu(e) if e.is_unservable_model() => EXIT_USAGE,
            Error::Repository(e) if e.is_config() => EXIT_USAGE,
            _ => EXIT_RUNTIME_FAILURE,
        }
    }
}

/// What `--check-config` checks beyond the file itself, without starting anything: that the
/// model files (or the repository's model folders) are there and readable, that tokenizers
/// load, and that ONNX Runtime's library can be found and loaded (no model is opened).
/// Returns where the runtime comes from and its version.
pub fn preflight(config: &Config) -> Result<String, Error> {
    let mut specs = config.model_specs();
    if let Some(folder) = &config.repository {
        let scan = repository::scan::scan(folder, &config.batching).map_err(|source| {
            RepositoryError::Folder {
                path: folder.display().to_string(),
                source,
            }
        })?;
        if let Some(unreadable) = scan.unreadable.into_iter().next() {
            return Err(RepositoryError::Unreadable {
                name: unreadable.name,
                reason: unreadable.reason,
            }
            .into());
        }
        specs.extend(scan.models.into_values().map(|found| found.spec));
    }
    let mut served = Vec::with_capacity(specs.len());
    for spec in &specs {
        let versions = match &spec.source {
            ModelSource::File(path) => {
                model::file::check_model_file(path).map_err(|e| Error::Gpu(GpuError::Model(e)))?;
                vec![1]
            }
            ModelSource::Folder(folder) => {
                let found: Vec<u64> = repository::scan::versions(folder).into_keys().collect();
                spec.version_policy.select(&found)
            }
        };
        let at_start = config
            .startup_models
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name.0 == spec.name));
        if versions.is_empty() && at_start {
            return Err(RepositoryError::NoVersion {
                name: spec.name.clone(),
                why: format!(
                    "version-policy {} picks none of the numbered folders holding a {}",
                    spec.version_policy,
                    repository::scan::MODEL_FILE
                ),
            }
            .into());
        }
        if let Some(text) = &spec.text {
            TextStage::load(text)?;
        }
        served.push(format!("{} {versions:?}", spec.name));
    }
    let (_, source, version) = backend::onnx::load_library(config.runtime_library())
        .map_err(|e| Error::Gpu(GpuError::Runtime(e)))?;
    Ok(format!(
        "models (versions served at start): {}; ONNX Runtime {version} from {source}",
        if served.is_empty() {
            "none".to_string()
        } else {
            served.join(", ")
        }
    ))
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

/// The components started so far, stopped in reverse order by [`Supervisor::shut_down`].
#[derive(Debug, Default)]
struct Components {
    signals: Option<SignalThread>,
    health: Option<HealthServer>,
    rpc: Option<RpcServer>,
    repository: Option<RepositoryThread>,
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
    let (events, event_receiver) = unbounded();
    let mut supervisor = Supervisor {
        config,
        started,
        lifecycle: Arc::new(Lifecycle::new()),
        metrics: Arc::new(Metrics::new(Transport::from(&config.rpc.endpoint))?),
        notifier: Notifier::from_env(),
        events,
        event_receiver,
        components: Components::default(),
        orders: None,
    };
    supervisor.notifier.status("starting");
    let outcome = supervisor.start_up().and_then(|stopped_early| {
        if stopped_early {
            return Ok(());
        }
        supervisor.serve()
    });
    if let Err(e) = &outcome {
        log::error!("{e}");
    }
    let stopped = supervisor.shut_down();
    let outcome = outcome.and(stopped);
    match &outcome {
        Ok(()) => supervisor.notifier.status("stopped"),
        Err(e) => supervisor.notifier.status(&format!("failed: {e}")),
    }
    outcome
}

/// The main thread's view of the running process: it starts the components, watches them
/// while serving, and stops them.
#[derive(Debug)]
struct Supervisor<'a> {
    config: &'a Config,
    started: Instant,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    events: Sender<Event>,
    event_receiver: Receiver<Event>,
    components: Components,
    /// Orders for the repository thread (SIGHUP's rescan).
    orders: Option<RepositoryOrders>,
}

impl Supervisor<'_> {
    /// Starts every component, waits for the GPU thread to bring up the device and the
    /// repository thread to load what should be served at start, telling systemd how the
    /// load goes. Returns `true` if a signal asked to stop before READY.
    fn start_up(&mut self) -> Result<bool, Error> {
        let config = self.config;
        self.components.signals = Some(SignalThread::start(self.events.clone())?);
        self.components.health = Some(HealthServer::start(
            &config.health,
            Arc::clone(&self.lifecycle),
            Arc::clone(&self.metrics),
            self.events.clone(),
        )?);
        let repository = Arc::new(Repository::new(
            config.repository_control,
            Arc::clone(&self.lifecycle),
        ));
        let (orders, order_receiver) = control::orders();
        self.orders = Some(orders.clone());
        let inference = InferenceService::new(
            Arc::clone(&self.lifecycle),
            Arc::clone(&self.metrics),
            Arc::clone(&repository),
            orders,
            config.rpc.max_message_size(),
        );
        let rpc = RpcServer::start(
            &config.rpc,
            Arc::clone(&self.lifecycle),
            Arc::clone(&self.metrics),
            inference,
        )?;
        self.components.rpc = Some(rpc);
        let gpu = GpuOwner::start(
            config.gpu.clone(),
            config.runtime_library().map(Path::to_path_buf),
            Arc::clone(&self.metrics),
            self.events.clone(),
        )?;
        let mut gpu_ready = gpu.ready.clone();
        let gpu = self.components.gpu.insert(gpu);
        let loader = gpu.loader();
        let mut order_receiver = Some(order_receiver);
        let mut serving: Option<ServingInfo> = None;
        let mut repository_started = never();
        let what = load_subject(config);
        let progress_checks = tick(STARTUP_CHECK_INTERVAL);
        let mut last_bytes_read = 0;
        loop {
            select! {
                recv(gpu_ready) -> outcome => {
                    serving = Some(gpu_outcome(outcome.ok())?);
                    gpu_ready = never();
                    let thread = RepositoryThread::start(
                        RepositoryPlan::from_config(config),
                        Arc::clone(&repository),
                        loader.clone(),
                        Arc::clone(&self.metrics),
                        order_receiver.take().expect("started once"),
                        self.events.clone(),
                    )?;
                    repository_started = thread.started.clone();
                    self.components.repository = Some(thread);
                }
                recv(repository_started) -> outcome => {
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => return Err(Error::ThreadDied {
                            name: "repository".to_string(),
                            reason: "ended before reporting start-up".to_string(),
                        }),
                    }
                    let mut serving = serving.take().expect("the GPU is up before models load");
                    if !gpu.gpu_in_use() {
                        // `auto` fell back to the CPU and released the context.
                        serving.gpu = None;
                    }
                    self.declare_ready(serving, &repository);
                    return Ok(false);
                }
                recv(self.event_receiver) -> event => match event {
                    Ok(Event::Signal(signal)) => {
                        log::info!("{} during start-up: stopping", signal_name(signal));
                        return Ok(true);
                    }
                    Ok(Event::Reload) => log::info!("SIGHUP during start-up: ignored"),
                    // Each of these threads reports its own failure before it ends.
                    Ok(Event::ThreadExited { name, failure }) if name == "gpu-owner" => {
                        return match gpu_ready.try_recv() {
                            Ok(Err(e)) => Err(e.into()),
                            _ => Err(thread_died(&self.lifecycle, name, failure)),
                        };
                    }
                    Ok(Event::ThreadExited { name, failure }) if name == "repository" => {
                        return match repository_started.try_recv() {
                            Ok(Err(e)) => Err(e.into()),
                            _ => Err(thread_died(&self.lifecycle, name, failure)),
                        };
                    }
                    Ok(Event::ThreadExited { name, failure }) => {
                        return Err(thread_died(&self.lifecycle, name, failure));
                    }
                    Err(_) => unreachable!("the sidecar holds a sender"),
                },
                recv(progress_checks) -> _ => {
                    let (bytes_read, size) = gpu.load_progress();
                    self.notifier.status(&load_status(&what, bytes_read, size));
                    // Only a load that moves earns more time; a stuck one meets the unit's
                    // start timeout.
                    if bytes_read > last_bytes_read {
                        self.notifier.extend_timeout(LOAD_PROGRESS_ALLOWANCE);
                        last_bytes_read = bytes_read;
                    }
                }
            }
        }
    }

    /// Records READY and says so: log, metrics, systemd.
    fn declare_ready(&mut self, serving: ServingInfo, repository: &Repository) {
        let startup = self.started.elapsed();
        // "model \"m\" 1 from /path (4.00 KiB)" for each version serving.
        let models: Vec<String> = repository
            .models()
            .iter()
            .flat_map(|model| {
                let versions = model.versions();
                versions
                    .serving()
                    .values()
                    .map(|version| {
                        let loaded = version;
                        format!(
                            "model {:?} {} from {} ({})",
                            loaded.name,
                            loaded.version,
                            loaded.path.display(),
                            ByteSize(loaded.size_bytes)
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let status = format!(
            "serving {} with ONNX Runtime {} on {}, on {}",
            match models.len() {
                0 => "no model yet".to_string(),
                1 => models[0].clone(),
                n => format!("{n} model versions: {}", models.join(", ")),
            },
            serving.runtime_version,
            match &serving.gpu {
                Some(device) => format!("GPU {}", device.ordinal),
                None => "the CPU, no GPU".to_string(),
            },
            self.components.rpc.as_ref().map_or("", |rpc| rpc.bound())
        );
        self.metrics.record_ready(startup, &serving);
        self.lifecycle.set_ready(serving);
        log::info!("READY in {} ms: {status}", startup.as_millis());
        self.notifier.ready(&status);
    }

    /// While READY: waits for a signal (`Ok`) or a component's end (the error), checking on
    /// the components at each interval and feeding the systemd watchdog while all are well.
    fn serve(&mut self) -> Result<(), Error> {
        let interval = self.notifier.check_interval();
        let checks = tick(interval);
        let mut liveness = Liveness::new(interval);
        loop {
            select! {
                recv(self.event_receiver) -> event => return match event {
                    Ok(Event::Reload) => {
                        if let Some(orders) = &self.orders {
                            orders.rescan();
                        }
                        continue;
                    }
                    Ok(Event::Signal(signal)) => {
                        log::info!("{}: shutting down", signal_name(signal));
                        Ok(())
                    }
                    Ok(Event::ThreadExited { name, failure }) => {
                        Err(thread_died(&self.lifecycle, name, failure))
                    }
                    Err(_) => unreachable!("the sidecar holds a sender"),
                },
                recv(checks) -> _ => self.check_components(&mut liveness)?,
            }
        }
    }

    /// One liveness check: gRPC still has its threads, the GPU-owner and health threads
    /// answer. Sets `/health/live` accordingly and pings the watchdog only when all is well.
    fn check_components(&mut self, liveness: &mut Liveness) -> Result<(), Error> {
        let Components {
            health, rpc, gpu, ..
        } = &mut self.components;
        if rpc
            .as_ref()
            .is_some_and(|rpc| !rpc.completion_queues_running())
        {
            return Err(thread_died(
                &self.lifecycle,
                "grpc-cq".to_string(),
                Some("a gRPC completion-queue thread ended".to_string()),
            ));
        }
        let mut silences = Vec::with_capacity(2);
        if let Some(gpu) = gpu.as_mut() {
            let (mut silent_for, sample) = gpu.heartbeat();
            // A model version being loaded (a new one while serving) keeps the thread from
            // answering: that is work, not a stall, up to a limit that a hung load meets.
            if gpu
                .loading_for()
                .is_some_and(|loading| loading < LOAD_STALL_LIMIT)
            {
                silent_for = Duration::ZERO;
            }
            if let Some(sample) = sample {
                self.metrics.record_gpu_memory(
                    sample.ordinal,
                    sample.free_bytes,
                    sample.total_bytes,
                );
            }
            silences.push(("gpu-owner", silent_for));
        }
        if let Some(health) = health.as_ref() {
            silences.push(("health", health.silent_for()));
        }
        match liveness.judge(&silences) {
            Verdict::Alive => {
                if let Some(component) = self.lifecycle.set_stalled(None) {
                    log::info!("the {component} thread answers again: live");
                }
                self.notifier.watchdog();
            }
            Verdict::Stalled {
                component,
                silent_for,
            } => {
                if self.lifecycle.set_stalled(Some(component)).is_none() {
                    log::warn!(
                        "the {component} thread has not answered for {} ms: /health/live reports NOT_LIVE{}",
                        silent_for.as_millis(),
                        if self.notifier.watchdog_enabled() {
                            " and the systemd watchdog is no longer fed"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Ok(())
    }

    /// The shutdown sequence. Every step runs even if an earlier one failed; the first error
    /// is returned.
    fn shut_down(&mut self) -> Result<(), Error> {
        let begun = Instant::now();
        let grace = self.config.shutdown.grace_period.0;
        let lifecycle = &self.lifecycle;
        if lifecycle.begin_draining() {
            log::info!("draining: health reports NOT_READY, gRPC health NOT_SERVING");
        }
        let in_flight = self.components.rpc.as_ref().map_or(0, RpcServer::in_flight);
        self.notifier.stopping(&format!(
            "draining: {in_flight} call(s) in flight, grace period {}",
            humantime::format_duration(grace)
        ));
        lifecycle.close_subscriptions();
        let mut first_error: Option<Error> = None;
        let mut note = |result: Result<(), Error>| {
            if let Err(e) = result {
                log::error!("shutdown: {e}");
                first_error.get_or_insert(e);
            }
        };
        let components = &mut self.components;
        if let Some(rpc) = components.rpc.take() {
            note(rpc.shutdown(grace).map_err(Error::from));
        }
        // The repository thread ends after its order in progress; a load in progress ends
        // when the GPU-owner thread stops.
        let repository = components.repository.take();
        if let Some(repository) = &repository {
            repository.ask_to_stop();
        }
        if let Some(gpu) = components.gpu.take() {
            // The grace period is over: what still runs is ended, what is queued answered.
            note(gpu.stop(THREAD_STOP_TIMEOUT).map_err(Error::from));
        }
        if let Some(repository) = repository {
            note(repository.join(THREAD_STOP_TIMEOUT).map_err(Error::from));
        }
        lifecycle.set_stopped();
        if let Some(health) = components.health.take() {
            note(health.stop(THREAD_STOP_TIMEOUT).map_err(Error::from));
        }
        if let Some(signals) = components.signals.take() {
            note(signals.stop(THREAD_STOP_TIMEOUT).map_err(Error::from));
        }
        log::info!("stopped in {} ms", begun.elapsed().as_millis());
        first_error.map_or(Ok(()), Err)
    }
}

/// How long a model load may keep the GPU-owner thread from answering heartbeats before it
/// counts as stuck (reading a large model and creating its session on a GPU take minutes).
const LOAD_STALL_LIMIT: Duration = Duration::from_secs(600);

/// What start-up loads, for systemd's status line: the one model file, or how many.
fn load_subject(config: &Config) -> String {
    match (&config.repository, config.model_specs().as_slice()) {
        (Some(folder), _) => format!("the models of {}", folder.display()),
        (None, [spec]) => match &spec.source {
            ModelSource::File(path) | ModelSource::Folder(path) => {
                format!("model {}", path.display())
            }
        },
        (None, specs) => format!("{} models", specs.len()),
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

/// Marks the sidecar not live and describes the thread's end.
fn thread_died(lifecycle: &Lifecycle, name: String, failure: Option<String>) -> Error {
    lifecycle.mark_failed(&name);
    Error::ThreadDied {
        name,
        reason: failure.unwrap_or_else(|| "it ended unexpectedly".to_string()),
    }
}
