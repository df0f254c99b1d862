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

//! The main thread's part: it wires the components together at start-up ([`startup`]),
//! watches them while serving (a liveness check each interval, [`liveness`]; systemd's
//! notifications and watchdog, [`notify`]), and runs the shutdown sequence, joining every
//! thread it started. [`preflight`] is `--check-config`'s look at what the config names.
//! Every error of the process meets here, as [`Error`], mapped to an exit code at the edge.

mod error;
mod liveness;
mod notify;
mod preflight;
mod startup;

pub use self::error::{Error, EXIT_RUNTIME_FAILURE, EXIT_USAGE};
pub use self::preflight::preflight;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, unbounded, Receiver, Sender};

use self::liveness::{Liveness, Verdict};
use self::notify::Notifier;
use crate::config::Config;
use crate::gpu::GpuOwner;
use crate::health::HealthServer;
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, Transport};
use crate::repository::control::{RepositoryOrders, RepositoryThread};
use crate::rpc::RpcServer;
use crate::shutdown::{signal_name, Event, SignalThread};

/// How long the health and signal threads get to stop once asked.
const THREAD_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often start-up progress is reported to systemd while the model loads.
const STARTUP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
                        if let Some(rpc) = &self.components.rpc {
                            rpc.reload_tls();
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
        let mut hung = None;
        for lane in gpu.as_ref().map(GpuOwner::check).unwrap_or_default() {
            let mut silent_for = lane.silent_for;
            // An execution in progress keeps the thread from answering: that is work, not a
            // stall, up to `execution-timeout`; only a hung one runs longer, and then it
            // counts from its start. (Loads run on the loader, not these threads.)
            if let Some(running) = lane.executing_for {
                let timeout = self.config.health.execution_timeout;
                if running < timeout {
                    silent_for = Duration::ZERO;
                } else {
                    if self.lifecycle.is_live() {
                        log::warn!(
                            "an execution has run for {} ms, over sidecar.health.execution-timeout ({}): the {} thread counts as hung",
                            running.as_millis(),
                            humantime::format_duration(timeout),
                            lane.name
                        );
                    }
                    hung.get_or_insert(Verdict::Stalled {
                        component: lane.name,
                        silent_for: running,
                    });
                }
            }
            if let Some(sample) = lane.device_sample {
                if let Some((free_bytes, total_bytes)) = sample.memory {
                    self.metrics
                        .record_gpu_memory(sample.ordinal, free_bytes, total_bytes);
                }
                if let Some(percent) = sample.utilization_percent {
                    self.metrics
                        .record_gpu_utilization(sample.ordinal, f64::from(percent) / 100.0);
                }
            }
            silences.push((lane.name, silent_for));
        }
        if let Some(health) = health.as_ref() {
            silences.push(("health", health.silent_for()));
        }
        let verdict = liveness.judge(&silences);
        match hung.unwrap_or(verdict) {
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
        // The repository thread takes no more work first: a poll tick, a SIGHUP or an order
        // while the sidecar drains starts no load (one in progress ends with the GPU thread).
        if let Some(repository) = &self.components.repository {
            repository.ask_to_stop();
        }
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

/// Marks the sidecar not live and describes the thread's end.
fn thread_died(lifecycle: &Lifecycle, name: String, failure: Option<String>) -> Error {
    lifecycle.mark_failed(&name);
    Error::ThreadDied {
        name,
        reason: failure.unwrap_or_else(|| "it ended unexpectedly".to_string()),
    }
}
