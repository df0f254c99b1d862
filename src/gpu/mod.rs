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

//! The GPU-owner thread, which owns the device's context and runs every execution, and the
//! loader that makes model versions resident beside it.
//!
//! At start-up the GPU-owner thread brings up the device ([`cuda`]: driver, primary context)
//! and loads the backend (ONNX Runtime, [`crate::backend`]), or runs on the CPU without a
//! GPU. The repository thread makes versions through the [`GpuLoader`], on itself: a
//! [`LoadOrder`] is read and built ([`load`]: the free-memory check, the session with the
//! device's context current on the loader's thread, warm-up, the padding probe of [`probe`],
//! the text stage bound) into the one `ModelVersion` everyone shares, which the GPU-owner
//! thread then adopts between two executions; a retirement lets a version finish what it has
//! queued and running, then frees its session on the GPU-owner thread.
//!
//! While serving ([`owner`]), it drains the versions' queues one execution at a time
//! ([`execute`]), taking the versions that have work in turn (round-robin by execution): a
//! version with a request waits at most one execution of each other busy version before its
//! own. It answers the main thread's heartbeats between executions. At shutdown it answers
//! what is still queued, then frees the sessions and releases the context on itself.

mod clock;
mod command;
mod cuda;
mod error;
mod execute;
mod load;
mod owner;
mod probe;
mod served;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError};

pub use self::command::{HeartbeatReply, LoadOrder};
pub use self::error::GpuError;

use self::clock::ExecutionClock;
use self::command::{GpuCommand, Interrupters};
use self::cuda::PrimaryContext;
use self::owner::Owner;
use crate::backend::onnx::{self, OnnxRuntime};
use crate::backend::Backend;
use crate::config::{GpuConfig, GpuMode};
use crate::metrics::Metrics;
use crate::model::file::LoadControl;
use crate::serving::{MemorySample, ServingInfo};
use crate::shutdown::{ComponentThread, Event, ShutdownError};

/// What the loader builds sessions with, once the GPU-owner thread has brought them up.
pub(crate) struct Runtime {
    pub(crate) backend: Box<dyn Backend>,
    /// ONNX Runtime's version.
    pub(crate) version: String,
    /// The ordinal of the device whose primary context the GPU-owner thread holds, if any.
    pub(crate) device: Option<i32>,
    pub(crate) mode: GpuMode,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("version", &self.version)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// The repository's handle on the GPU: it makes versions resident (on the calling thread,
/// see `load.rs`) for the GPU-owner thread to adopt, and orders retirements.
#[derive(Debug, Clone)]
pub struct GpuLoader {
    commands: Sender<GpuCommand>,
    /// Set by the GPU-owner thread once the device and the runtime are up.
    runtime: Arc<OnceLock<Runtime>>,
    /// Progress of the read, shared with the main thread; a stop request ends it.
    control: Arc<LoadControl>,
    /// Whether the GPU-owner thread still holds the device's context.
    context_held: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Held while a load runs: loads are made one at a time.
    loading: Arc<Mutex<()>>,
}

impl GpuLoader {
    /// Has a version taken out of the routing table finish what it has, then be freed.
    pub fn retire(&self, name: &str, version: u64) {
        let _ = self.commands.send(GpuCommand::Retire {
            name: name.to_string(),
            version,
        });
    }
}

/// The main thread's handle on the GPU-owner thread.
#[derive(Debug)]
pub struct GpuOwner {
    thread: ComponentThread,
    commands: Sender<GpuCommand>,
    load: Arc<LoadControl>,
    /// End the executions of the resident sessions.
    interrupters: Arc<Mutex<Interrupters>>,
    /// Set when stopping: a failed execution then means it was ended on purpose.
    stopping: Arc<AtomicBool>,
    /// When the execution in progress began, if one is.
    execution: Arc<ExecutionClock>,
    /// Whether the thread holds a GPU context (cleared when auto mode falls back to the CPU).
    context_held: Arc<AtomicBool>,
    /// What the loader needs, set once the thread has brought up the device and runtime.
    runtime: Arc<OnceLock<Runtime>>,
    metrics: Arc<Metrics>,
    /// Held while a load runs, by whichever loader handle makes it.
    loading: Arc<Mutex<()>>,
    /// The reply to the last heartbeat, while it is awaited, and when it was sent.
    heartbeat: Option<(Receiver<HeartbeatReply>, Instant)>,
    /// Receives, once, the outcome of bringing up the device and the runtime.
    pub ready: Receiver<Result<ServingInfo, GpuError>>,
}

impl GpuOwner {
    /// Starts the `gpu-owner` thread, which brings up the GPU per `gpu` and ONNX Runtime from
    /// `runtime_library`, reports on [`GpuOwner::ready`], then adopts the versions that
    /// [`GpuOwner::loader`] makes and serves until stopped.
    pub fn start(
        gpu: GpuConfig,
        runtime_library: Option<PathBuf>,
        metrics: Arc<Metrics>,
        events: Sender<Event>,
    ) -> Result<Self, ShutdownError> {
        let (commands, command_receiver) = unbounded();
        let (ready_sender, ready) = bounded(1);
        let load_control = Arc::new(LoadControl::default());
        let runtime = Arc::new(OnceLock::new());
        let runtime_slot = Arc::clone(&runtime);
        let thread_metrics = Arc::clone(&metrics);
        let interrupters = Arc::new(Mutex::new(Interrupters::new()));
        let interrupter_slot = Arc::clone(&interrupters);
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping_flag = Arc::clone(&stopping);
        let execution = Arc::new(ExecutionClock::default());
        let execution_clock = Arc::clone(&execution);
        let context_held = Arc::new(AtomicBool::new(false));
        let context_flag = Arc::clone(&context_held);
        let thread = ComponentThread::spawn("gpu-owner", events, move || {
            let (context, backend, info) = match bring_up(&gpu, runtime_library.as_deref()) {
                Ok(up) => up,
                Err(e) => {
                    let _ = ready_sender.send(Err(e));
                    return Ok(());
                }
            };
            context_flag.store(context.is_some(), Ordering::Relaxed);
            let _ = runtime_slot.set(Runtime {
                backend: Box::new(backend),
                version: info.runtime_version.clone(),
                device: context.as_ref().map(|c| c.ordinal),
                mode: gpu.mode,
            });
            let _ = ready_sender.send(Ok(info));
            let mut owner = Owner::new(
                thread_metrics,
                owner::Shared {
                    interrupters: &interrupter_slot,
                    stopping: &stopping_flag,
                    execution: &execution_clock,
                    context_held: &context_flag,
                },
                context,
            );
            owner.run(&command_receiver);
            // Versions sent to be adopted and not taken are dropped with the channel, here,
            // while the context is held; a loader sending one later hears at once that it
            // was not taken, and frees it on its own thread, its context still current.
            drop(command_receiver);
            owner.release();
            Ok(())
        })?;
        Ok(GpuOwner {
            thread,
            commands,
            load: load_control,
            interrupters,
            stopping,
            execution,
            context_held,
            runtime,
            metrics,
            loading: Arc::new(Mutex::new(())),
            heartbeat: None,
            ready,
        })
    }

    /// The handle through which the repository makes versions resident.
    pub fn loader(&self) -> GpuLoader {
        GpuLoader {
            commands: self.commands.clone(),
            runtime: Arc::clone(&self.runtime),
            control: Arc::clone(&self.load),
            context_held: Arc::clone(&self.context_held),
            metrics: Arc::clone(&self.metrics),
            loading: Arc::clone(&self.loading),
        }
    }

    /// Whether the thread holds a GPU context: false once `auto` mode has fallen back to the
    /// CPU and released it.
    pub fn gpu_in_use(&self) -> bool {
        self.context_held.load(Ordering::Relaxed)
    }

    /// How long the execution in progress has been running, if one is: the thread answers
    /// no heartbeat meanwhile.
    pub fn executing_for(&self) -> Option<Duration> {
        self.execution.running_for()
    }

    /// How far the model loads have got: (bytes read in all, size of the file being read if
    /// known).
    pub fn load_progress(&self) -> (u64, Option<u64>) {
        (self.load.bytes_read(), self.load.size_hint())
    }

    /// Collects the answer to the previous heartbeat and sends the next one. Returns how long
    /// the thread has left a heartbeat unanswered (zero when it answered) and the memory
    /// sample of its answer. Call only after start-up: until then the thread does not read
    /// its commands.
    pub fn heartbeat(&mut self) -> (Duration, Option<MemorySample>) {
        let mut sample = None;
        if let Some((pending, sent_at)) = &self.heartbeat {
            match pending.try_recv() {
                Ok(reply) => sample = reply,
                // Still waiting: do not pile up heartbeats behind a stuck thread.
                Err(TryRecvError::Empty) => return (sent_at.elapsed(), None),
                // The thread has ended; the main thread hears of that as an event.
                Err(TryRecvError::Disconnected) => {}
            }
        }
        self.heartbeat = None;
        let (reply, pending) = bounded(1);
        if self.commands.send(GpuCommand::Heartbeat(reply)).is_ok() {
            self.heartbeat = Some((pending, Instant::now()));
        }
        (Duration::ZERO, sample)
    }

    /// Tells the thread to end the executions in progress (their requests are answered
    /// UNAVAILABLE), answer what is still queued without running it, free everything and end;
    /// waits up to `timeout` for it. Called once the grace period is over.
    pub fn stop(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.stopping.store(true, Ordering::Relaxed);
        self.load.request_stop();
        let _ = self.commands.send(GpuCommand::Stop);
        for interrupter in self
            .interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            interrupter.interrupt();
        }
        self.thread.join_within(timeout)
    }
}

/// Brings up the GPU (if one is to be used) and loads ONNX Runtime.
fn bring_up(
    gpu: &GpuConfig,
    runtime_library: Option<&std::path::Path>,
) -> Result<(Option<PrimaryContext>, OnnxRuntime, ServingInfo), GpuError> {
    let context = cuda::open_device(gpu)?;
    let (runtime, source, runtime_version) = onnx::load_library(runtime_library)?;
    log::info!("ONNX Runtime {runtime_version} loaded from {source}");
    let info = ServingInfo {
        gpu: context.as_ref().map(|c| c.info.clone()),
        runtime_version,
    };
    Ok((context, runtime, info))
}
