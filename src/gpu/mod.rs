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

//! The GPU-owner threads, one per device, each owning its device's context and running every
//! execution there, and the loader that makes model versions resident beside them.
//!
//! At start-up the first GPU-owner thread ([`lane`]) finds the devices (`sidecar.gpu.devices`,
//! else `device`), brings up its own ([`cuda`]: driver, primary context) and the backend
//! (ONNX Runtime, [`crate::backend`]), and starts one more thread per further device, each
//! retaining its device's context on itself; without a GPU it runs on the CPU. The
//! repository thread makes versions through the [`GpuLoader`], on itself: a [`LoadOrder`] is
//! read once and built ([`load`]: the free-memory check per device, a session per instance
//! with its device's context current on the loader's thread, warm-up, the padding probe of
//! [`probe`], the text stage bound) into the one `ModelVersion` everyone shares, whose
//! instances the GPU-owner threads of its devices then adopt between two executions (a model's
//! further CPU instances get threads of their own); a retirement lets a version finish what
//! it has queued and running, then frees its sessions on their threads.
//!
//! While serving ([`owner`]), each thread drains the queues of the versions it has instances
//! of, one execution at a time ([`execute`]), taking the versions that have work in turn
//! (round-robin by execution). A version's instances share its queue: a batch forms when one
//! of them is free, and runs there. Each thread answers the main thread's heartbeats between
//! executions. At shutdown each answers what is still queued, then frees its sessions and
//! releases its context on itself.

mod clock;
mod command;
mod cuda;
mod error;
mod execute;
mod lane;
mod load;
mod nvml;
mod owner;
mod probe;
mod served;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

pub use self::command::{HeartbeatReply, LoadOrder, LostVersion};
pub use self::error::GpuError;
pub use self::lane::LaneCheck;

use self::command::GpuCommand;
use self::lane::{Place, Pool, Start};
use crate::backend::Backend;
use crate::config::{DeviceSelection, GpuConfig, GpuMode};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::model::ModelVersion;
use crate::serving::ServingInfo;
use crate::shutdown::{Event, ShutdownError};

/// What the loader builds sessions with, once the first GPU-owner thread has brought it up.
pub(crate) struct Runtime {
    pub(crate) backend: Box<dyn Backend>,
    /// ONNX Runtime's version.
    pub(crate) version: String,
    pub(crate) mode: GpuMode,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The repository's handle on the GPUs: it makes versions resident (on the calling thread,
/// see `load.rs`) for the GPU-owner threads to adopt, and orders retirements.
#[derive(Clone)]
pub struct GpuLoader {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for GpuLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuLoader").finish_non_exhaustive()
    }
}

impl GpuLoader {
    /// Where the versions left without an instance (their GPUs failed) are told.
    pub fn lost_versions(&self) -> Receiver<LostVersion> {
        self.pool.lost.1.clone()
    }

    /// Has this copy of a version, taken out of the routing table, finish what it has, then
    /// be freed, on every thread that has an instance of it.
    pub fn retire(&self, version: &Arc<ModelVersion>) {
        for lane in self.pool.lanes().iter() {
            let _ = lane.commands.send(GpuCommand::Retire(Arc::clone(version)));
        }
    }
}

/// The main thread's handle on the GPU-owner threads.
pub struct GpuOwner {
    pool: Arc<Pool>,
    /// Receives, once, the outcome of bringing up the devices and the runtime.
    pub ready: Receiver<Result<ServingInfo, GpuError>>,
}

impl std::fmt::Debug for GpuOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOwner").finish_non_exhaustive()
    }
}

impl GpuOwner {
    /// Starts the first GPU-owner thread, which brings up the GPUs per `gpu` (one thread per
    /// device) and ONNX Runtime from `runtime_library`, reports on [`GpuOwner::ready`], then
    /// adopts the versions that [`GpuOwner::loader`] makes and serves until stopped.
    pub fn start(
        gpu: GpuConfig,
        runtime_library: Option<PathBuf>,
        metrics: Arc<Metrics>,
        lifecycle: Arc<Lifecycle>,
        events: Sender<Event>,
    ) -> Result<Self, ShutdownError> {
        // With `devices`, every thread is named by its device; else the one is `gpu-owner`.
        let name = match (&gpu.devices, gpu.selection()) {
            (None, _) => "gpu-owner".to_string(),
            (Some(_), DeviceSelection::Listed(list)) => format!("gpu-owner-{}", list[0]),
            (Some(_), DeviceSelection::All) => "gpu-owner-0".to_string(),
        };
        let pool = Arc::new(Pool::new(gpu, metrics, lifecycle, events));
        let (ready_sender, ready) = bounded(1);
        pool.start_lane(
            name,
            Place::Cpu(0),
            Start::First {
                runtime_library,
                ready: ready_sender,
            },
        )?;
        Ok(GpuOwner { pool, ready })
    }

    /// The handle through which the repository makes versions resident.
    pub fn loader(&self) -> GpuLoader {
        GpuLoader {
            pool: Arc::clone(&self.pool),
        }
    }

    /// The devices whose context a thread holds: fewer than configured once `auto` mode has
    /// fallen back to the CPU and released them.
    pub fn devices_in_use(&self) -> Vec<i32> {
        self.pool
            .lanes()
            .iter()
            .filter(|lane| lane.context_held.load(Ordering::Relaxed))
            .filter_map(|lane| match lane.place {
                Place::Device(ordinal) => Some(ordinal),
                Place::Cpu(_) => None,
            })
            .collect()
    }

    /// How far the model loads have got: (bytes read in all, size of the file being read if
    /// known).
    pub fn load_progress(&self) -> (u64, Option<u64>) {
        (self.pool.load.bytes_read(), self.pool.load.size_hint())
    }

    /// Collects each thread's answer to the previous heartbeat and sends the next one. Call
    /// only after start-up: until then the threads do not read their commands.
    pub fn check(&self) -> Vec<LaneCheck> {
        self.pool
            .lanes()
            .iter_mut()
            .map(|lane| lane.check())
            .collect()
    }

    /// Tells every thread to end the executions in progress (their requests are answered
    /// UNAVAILABLE), answer what is still queued without running it, free everything and end;
    /// waits up to `timeout` for them all. Called once the grace period is over.
    pub fn stop(self, timeout: Duration) -> Result<(), ShutdownError> {
        let deadline = Instant::now() + timeout;
        self.pool.stopping.store(true, Ordering::Relaxed);
        self.pool.load.request_stop();
        let threads: Vec<_> = self
            .pool
            .lanes()
            .iter_mut()
            .filter_map(|lane| {
                let _ = lane.commands.send(GpuCommand::Stop);
                for interrupter in lane
                    .interrupters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                {
                    interrupter.interrupt();
                }
                lane.thread.take()
            })
            .collect();
        let mut outcome = Ok(());
        for mut thread in threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = thread.join_within(left) {
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        outcome
    }
}
