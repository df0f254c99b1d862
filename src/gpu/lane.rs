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

//! The GPU-owner threads and what they share. One thread per device the sidecar serves on
//! (`gpu-owner`, or `gpu-owner-N` with `sidecar.gpu.devices`), each holding its device's
//! primary context from its start to its end; without a GPU the first serves on the CPU, and
//! a model's further CPU instances get one thread each (`cpu-instance-N`), started by the
//! first load that needs it. Every thread runs the same loop ([`Owner`]) over its own
//! sessions; a version's instances share its one queue, so a batch goes to whichever
//! instance is free. [`Lane`] is the handle on one thread; [`Pool`] is what the threads, the
//! loader and the main thread share.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError};

use super::clock::ExecutionClock;
use super::command::{GpuCommand, HeartbeatReply, Interrupters, LostVersion};
use super::cuda::{self, PrimaryContext};
use super::error::GpuError;
use super::owner::{Owner, Shared};
use super::Runtime;
use crate::backend::onnx;
use crate::config::GpuConfig;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::model::file::LoadControl;
use crate::serving::{DeviceInfo, DeviceSample, ServingInfo};
use crate::shutdown::{ComponentThread, Event, ShutdownError};

/// Where a GPU-owner thread runs its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// On this device, whose primary context the thread holds.
    Device(i32),
    /// On the CPU: the Nth instance of the models placed there.
    Cpu(u32),
}

/// How many copies of each version (name, version) are resident, over every thread: its
/// series go with the last.
pub(super) type Resident = BTreeMap<(String, u64), usize>;

/// The handle on one GPU-owner thread.
pub(super) struct Lane {
    pub name: &'static str,
    pub place: Place,
    pub commands: Sender<GpuCommand>,
    /// End the executions of its resident sessions.
    pub interrupters: Arc<Mutex<Interrupters>>,
    /// When its execution in progress began, if one is.
    pub execution: Arc<ExecutionClock>,
    /// Whether it holds its device's context (cleared when `auto` mode falls back to the
    /// CPU).
    pub context_held: Arc<AtomicBool>,
    /// Set when its device failed: it serves nothing more, and takes no new instance.
    pub failed: Arc<AtomicBool>,
    /// Taken when the thread is joined.
    pub thread: Option<ComponentThread>,
    /// The reply to the last heartbeat, while it is awaited, and when it was sent.
    heartbeat: Option<(Receiver<HeartbeatReply>, Instant)>,
}

/// What one GPU-owner thread reported to the main thread's liveness check.
#[derive(Debug)]
pub struct LaneCheck {
    pub name: &'static str,
    /// How long it has left a heartbeat unanswered (zero when it answered).
    pub silent_for: Duration,
    /// How long its execution in progress has run, if one does.
    pub executing_for: Option<Duration>,
    /// Its device's memory and utilisation, from its last answer.
    pub device_sample: Option<DeviceSample>,
}

impl Lane {
    /// Collects the answer to the previous heartbeat and sends the next one.
    pub fn check(&mut self) -> LaneCheck {
        let mut device_sample = None;
        let mut silent_for = Duration::ZERO;
        if let Some((reply, sent_at)) = &self.heartbeat {
            match reply.try_recv() {
                Ok(reply) => device_sample = reply,
                // Still waiting: do not pile up heartbeats behind a stuck thread.
                Err(TryRecvError::Empty) => silent_for = sent_at.elapsed(),
                // The thread has ended; the main thread hears of that as an event.
                Err(TryRecvError::Disconnected) => {}
            }
        }
        if silent_for.is_zero() {
            self.heartbeat = None;
            let (reply, answer) = bounded(1);
            if self.commands.send(GpuCommand::Heartbeat(reply)).is_ok() {
                self.heartbeat = Some((answer, Instant::now()));
            }
        }
        LaneCheck {
            name: self.name,
            silent_for,
            executing_for: self.execution.running_for(),
            device_sample,
        }
    }
}

/// What the GPU-owner threads, the loader and the main thread share.
pub(super) struct Pool {
    /// The threads, the first (which brought up the driver and the runtime) first.
    lanes: Mutex<Vec<Lane>>,
    /// What the loader builds sessions with, set once the first thread has loaded it.
    pub runtime: OnceLock<Runtime>,
    /// Set when stopping: a failed execution then means it was ended on purpose.
    pub stopping: AtomicBool,
    /// Progress of the reads, shared with the main thread; a stop request ends them.
    pub load: LoadControl,
    pub metrics: Arc<Metrics>,
    /// Where the threads report their end.
    events: Sender<Event>,
    /// Held while a load runs: loads are made one at a time.
    pub loading: Mutex<()>,
    pub resident: Mutex<Resident>,
    pub gpu: GpuConfig,
    /// Told of each GPU taken out of service.
    pub lifecycle: Arc<Lifecycle>,
    /// Versions left without an instance, for the repository.
    pub lost: (Sender<LostVersion>, Receiver<LostVersion>),
}

/// How a GPU-owner thread begins.
pub(super) enum Start {
    /// The first: brings up the driver, its device (or none) and ONNX Runtime, starts a
    /// thread for each further device and reports them all.
    First {
        runtime_library: Option<PathBuf>,
        ready: Sender<Result<ServingInfo, GpuError>>,
    },
    /// A further device: retains its context and reports to the first.
    Device(Sender<Result<DeviceInfo, GpuError>>),
    /// A further CPU instance: serves at once.
    Cpu,
}

impl Pool {
    pub fn new(
        gpu: GpuConfig,
        metrics: Arc<Metrics>,
        lifecycle: Arc<Lifecycle>,
        events: Sender<Event>,
    ) -> Self {
        Pool {
            lanes: Mutex::new(Vec::new()),
            runtime: OnceLock::new(),
            stopping: AtomicBool::new(false),
            load: LoadControl::default(),
            metrics,
            events,
            loading: Mutex::new(()),
            resident: Mutex::new(Resident::new()),
            gpu,
            lifecycle,
            lost: unbounded(),
        }
    }

    /// The threads, locked.
    pub fn lanes(&self) -> MutexGuard<'_, Vec<Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a GPU-owner thread called `name` at `place`, and adds it to the pool.
    pub fn start_lane(
        self: &Arc<Self>,
        name: String,
        place: Place,
        start: Start,
    ) -> Result<(), ShutdownError> {
        // Held while the thread starts, so that the first thread is first in the list.
        let mut lanes = self.lanes();
        self.spawn_into(&mut lanes, name, place, start)
    }

    /// Starts a GPU-owner thread called `name` at `place`, and adds it to `lanes`, the
    /// pool's, locked.
    pub fn spawn_into(
        self: &Arc<Self>,
        lanes: &mut Vec<Lane>,
        name: String,
        place: Place,
        start: Start,
    ) -> Result<(), ShutdownError> {
        let (commands, receiver) = unbounded();
        let interrupters = Arc::new(Mutex::new(Interrupters::new()));
        let execution = Arc::new(ExecutionClock::default());
        let context_held = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        // A handful per process, each living as long as it: the liveness check names them.
        let name: &'static str = Box::leak(name.into_boxed_str());
        let pool = Arc::clone(self);
        let (lane_interrupters, lane_execution, lane_context, lane_failed) = (
            Arc::clone(&interrupters),
            Arc::clone(&execution),
            Arc::clone(&context_held),
            Arc::clone(&failed),
        );
        let thread = ComponentThread::spawn(name, self.events.clone(), move || {
            let shared = Shared {
                lane: name,
                interrupters: &lane_interrupters,
                stopping: &pool.stopping,
                execution: &lane_execution,
                context_held: &lane_context,
                failed: &lane_failed,
                resident: &pool.resident,
                lifecycle: &pool.lifecycle,
                lost: &pool.lost.0,
            };
            run_lane(&pool, name, start, receiver, shared);
            Ok(())
        })?;
        lanes.push(Lane {
            name,
            place,
            commands,
            interrupters,
            execution,
            context_held,
            failed,
            thread: Some(thread),
            heartbeat: None,
        });
        Ok(())
    }

    /// Records the device the first thread opened.
    fn set_place(&self, name: &str, place: Place) {
        if let Some(lane) = self.lanes().iter_mut().find(|lane| lane.name == name) {
            lane.place = place;
        }
    }
}

/// A GPU-owner thread: brings up what `start` says, serves until stopped, then frees its
/// sessions and releases its context, on itself.
fn run_lane(
    pool: &Arc<Pool>,
    name: &'static str,
    start: Start,
    commands: Receiver<GpuCommand>,
    shared: Shared<'_>,
) {
    let context = match start {
        Start::First {
            runtime_library,
            ready,
        } => match bring_up(pool, name, runtime_library) {
            Ok((context, info)) => {
                // Before the report: the loads that follow it read it.
                shared
                    .context_held
                    .store(context.is_some(), Ordering::Relaxed);
                let _ = ready.send(Ok(info));
                context
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
        Start::Device(ready) => {
            let Place::Device(ordinal) = pool_place(pool, name) else {
                return;
            };
            match PrimaryContext::retain(ordinal) {
                Ok(context) => {
                    shared.context_held.store(true, Ordering::Relaxed);
                    let _ = ready.send(Ok(context.info.clone()));
                    Some(context)
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    // The first thread reports the failure; this one ends with the others.
                    wait_for_stop(&commands);
                    return;
                }
            }
        }
        Start::Cpu => None,
    };
    let mut owner = Owner::new(Arc::clone(&pool.metrics), shared, context);
    owner.run(&commands);
    // Versions sent to be adopted and not taken are dropped with the channel, here, while
    // the context is held; a loader sending one later hears at once that it was not taken,
    // and frees it on its own thread, its context still current.
    drop(commands);
    owner.release();
}

/// Where the pool says the thread `name` runs.
fn pool_place(pool: &Pool, name: &str) -> Place {
    pool.lanes()
        .iter()
        .find(|lane| lane.name == name)
        .map_or(Place::Cpu(0), |lane| lane.place)
}

/// Answers heartbeats until told to stop (a thread whose device could not be opened).
fn wait_for_stop(commands: &Receiver<GpuCommand>) {
    for command in commands {
        match command {
            GpuCommand::Heartbeat(reply) => {
                let _ = reply.send(None);
            }
            GpuCommand::Stop => return,
            GpuCommand::Adopt(..) | GpuCommand::Retire { .. } => {}
        }
    }
}

/// The first thread's start: finds the devices, opens the first, loads ONNX Runtime, then
/// starts a thread for each further device and waits until each has opened its own.
fn bring_up(
    pool: &Arc<Pool>,
    name: &'static str,
    runtime_library: Option<PathBuf>,
) -> Result<(Option<PrimaryContext>, ServingInfo), GpuError> {
    let devices = cuda::find_devices(&pool.gpu)?;
    let context = match devices.as_deref() {
        Some([first, ..]) => Some(PrimaryContext::retain(*first)?),
        _ => None,
    };
    if let Some(context) = &context {
        pool.set_place(name, Place::Device(context.ordinal));
    }
    let (runtime, source, runtime_version) = onnx::load_library(runtime_library.as_deref())?;
    log::info!("ONNX Runtime {runtime_version} loaded from {source}");
    let _ = pool.runtime.set(Runtime {
        backend: Box::new(runtime),
        version: runtime_version.clone(),
        mode: pool.gpu.mode,
    });
    let mut gpus: Vec<DeviceInfo> = context.iter().map(|c| c.info.clone()).collect();
    for &ordinal in devices.as_deref().unwrap_or_default().iter().skip(1) {
        let (ready, opened) = bounded(1);
        pool.start_lane(
            format!("gpu-owner-{ordinal}"),
            Place::Device(ordinal),
            Start::Device(ready),
        )?;
        gpus.push(opened.recv().map_err(|_| GpuError::Stopped)??);
    }
    Ok((
        context,
        ServingInfo {
            gpus,
            runtime_version,
        },
    ))
}
