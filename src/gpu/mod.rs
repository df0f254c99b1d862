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

//! The GPU-owner thread: the only thread that touches CUDA and the ONNX Runtime sessions.
//!
//! At start-up it brings up the device ([`cuda`]: driver, primary context) and loads the
//! backend (ONNX Runtime, [`crate::backend`]), or runs on the CPU without a GPU. Then it
//! takes orders from the repository thread: a [`LoadOrder`] makes one model version resident
//! (after checking that its file fits in the device's free memory), warms it up, probes how
//! it pads ([`probe`]) and serves its queue; a retirement lets a version finish what it has
//! queued and running, then frees its session, here.
//!
//! While serving, it drains the queues with the [`crate::model::batcher`], one execution at a
//! time, taking the versions that have work in turn (round-robin by execution): a version
//! with a request waits at most one execution of each other busy version before its own. It
//! answers the main thread's heartbeats between executions. At shutdown it answers what is
//! still queued, then frees the sessions and releases the context on itself.

mod cuda;
mod probe;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError};
use cudarc::driver::result::DriverError;

use self::cuda::PrimaryContext;
use crate::backend::onnx::{self, OnnxRuntime};
use crate::backend::{Backend, Interrupter, LoadError, Provider, Session, SessionOptions};
use crate::config::{BatchingConfig, GpuConfig, GpuMode, ThreadCount};
use crate::metrics::{Metrics, ModelMetrics};
use crate::model::batcher::{self, BatchPolicy, QueueCounts};
use crate::model::file::{self, LoadControl, ModelError};
use crate::model::job::{Job, JobFailure};
use crate::model::stats::ModelStats;
use crate::serving::{ByteSize, LoadedModel, MemorySample, ServingInfo};
use crate::shutdown::{ComponentThread, Event, ShutdownError};
use crate::tensor::Signature;

/// Why the GPU or a model could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `gpu.mode = "required"`, but no usable GPU.
    #[error("sidecar.gpu.mode is \"required\" but no GPU can be used: {reason}")]
    Required { reason: String },
    /// The configured device ordinal does not exist.
    #[error("sidecar.gpu.device is {ordinal} but the driver sees {count} device(s) (ordinals 0 to {})", count - 1)]
    NoSuchDevice { ordinal: i32, count: i32 },
    /// A CUDA driver call failed.
    #[error("CUDA call {call} failed: {source}")]
    Driver {
        call: &'static str,
        source: DriverError,
    },
    /// The model does not fit in the device's free memory.
    #[error("model {} needs {} but GPU {ordinal} has only {} free: free memory (unload a model) or use a larger device", path.display(), ByteSize(*needed), ByteSize(*free))]
    ModelTooLarge {
        path: PathBuf,
        ordinal: i32,
        needed: u64,
        free: u64,
    },
    /// The model file could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// ONNX Runtime could not be loaded or refused the model.
    #[error(transparent)]
    Runtime(#[from] LoadError),
    /// The thread stopped (shutdown) before the order was carried out.
    #[error("the GPU-owner thread stopped before the model was loaded")]
    Stopped,
}

impl GpuError {
    /// Whether the model itself cannot be served (not a model, or of types the sidecar does
    /// not serve): a matter of configuration, which no restart fixes.
    pub fn is_unservable_model(&self) -> bool {
        match self {
            GpuError::Model(e) => e.is_not_a_model(),
            GpuError::Runtime(e) => e.is_model_refusal(),
            _ => false,
        }
    }
}

/// What ends the execution in progress of each resident session, by its load's number.
type Interrupters = std::collections::BTreeMap<u64, Interrupter>;

/// The GPU-owner thread's answer to a heartbeat: a memory sample when a GPU is in use.
pub type HeartbeatReply = Option<MemorySample>;

/// Messages to the GPU-owner thread.
enum GpuCommand {
    /// Answer on the channel, to show the thread is not stuck.
    Heartbeat(Sender<HeartbeatReply>),
    /// Make a model version resident and serve its queue.
    Load(Box<LoadOrder>, Sender<Result<LoadedModel, GpuError>>),
    /// Serve a version's queue until nothing of it waits or runs, then free it.
    Retire { name: String, version: u64 },
    /// Answer what is queued without running it, free everything and end the thread.
    Stop,
}

/// One model version to make resident, and the queue it serves.
#[derive(Debug)]
pub struct LoadOrder {
    pub name: String,
    pub version: u64,
    pub path: PathBuf,
    pub intra_op_threads: Option<ThreadCount>,
    pub batching: BatchingConfig,
    /// The token id that pads `input_ids` (the tokenizer's, with text in; else 0).
    pub pad_id: i64,
    pub queue: Receiver<Job>,
    pub counts: Arc<QueueCounts>,
    pub stats: Arc<ModelStats>,
    pub metrics: ModelMetrics,
}

/// The repository's handle on the GPU-owner thread: it orders loads and retirements.
#[derive(Debug, Clone)]
pub struct GpuLoader {
    commands: Sender<GpuCommand>,
}

impl GpuLoader {
    /// Has the version of `order` made resident; waits until it is (and serves its queue)
    /// or could not be.
    pub fn load(&self, order: LoadOrder) -> Result<LoadedModel, GpuError> {
        let (reply, outcome) = bounded(1);
        self.commands
            .send(GpuCommand::Load(Box::new(order), reply))
            .map_err(|_| GpuError::Stopped)?;
        outcome.recv().unwrap_or(Err(GpuError::Stopped))
    }

    /// Has a version taken out of the routing table finish what it has, then be freed.
    pub fn retire(&self, name: &str, version: u64) {
        let _ = self.commands.send(GpuCommand::Retire {
            name: name.to_string(),
            version,
        });
    }
}

impl std::fmt::Debug for GpuCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuCommand::Heartbeat(_) => f.write_str("Heartbeat"),
            GpuCommand::Load(order, _) => write!(f, "Load({} {})", order.name, order.version),
            GpuCommand::Retire { name, version } => write!(f, "Retire({name} {version})"),
            GpuCommand::Stop => f.write_str("Stop"),
        }
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
    /// Whether the thread holds a GPU context (cleared when auto mode falls back to the CPU).
    context_held: Arc<AtomicBool>,
    /// When the model load in progress began, if one is.
    loading_since: Arc<Mutex<Option<Instant>>>,
    /// The reply to the last heartbeat, while it is awaited, and when it was sent.
    heartbeat: Option<(Receiver<HeartbeatReply>, Instant)>,
    /// Receives, once, the outcome of bringing up the device and the runtime.
    pub ready: Receiver<Result<ServingInfo, GpuError>>,
}

impl GpuOwner {
    /// Starts the `gpu-owner` thread, which brings up the GPU per `gpu` and ONNX Runtime from
    /// `runtime_library`, reports on [`GpuOwner::ready`], then carries out the loads of
    /// [`GpuOwner::loader`] and serves until stopped.
    pub fn start(
        gpu: GpuConfig,
        runtime_library: Option<PathBuf>,
        metrics: Arc<Metrics>,
        events: Sender<Event>,
    ) -> Result<Self, ShutdownError> {
        let (commands, command_receiver) = unbounded();
        let (ready_sender, ready) = bounded(1);
        let load_control = Arc::new(LoadControl::default());
        let control = Arc::clone(&load_control);
        let interrupters = Arc::new(Mutex::new(Interrupters::new()));
        let interrupter_slot = Arc::clone(&interrupters);
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping_flag = Arc::clone(&stopping);
        let context_held = Arc::new(AtomicBool::new(false));
        let context_flag = Arc::clone(&context_held);
        let loading_since = Arc::new(Mutex::new(None));
        let loading_slot = Arc::clone(&loading_since);
        let thread = ComponentThread::spawn("gpu-owner", events, move || {
            let (context, runtime, info) = match bring_up(&gpu, runtime_library.as_deref()) {
                Ok(up) => up,
                Err(e) => {
                    let _ = ready_sender.send(Err(e));
                    return Ok(());
                }
            };
            let runtime_version = info.runtime_version.clone();
            context_flag.store(context.is_some(), Ordering::Relaxed);
            let _ = ready_sender.send(Ok(info));
            let mut owner = Owner {
                served: Vec::new(),
                next: 0,
                loads: 0,
                metrics,
                runtime: Box::new(runtime),
                runtime_version,
                gpu,
                control: &control,
                interrupters: &interrupter_slot,
                stopping: &stopping_flag,
                context_held: &context_flag,
                loading_since: &loading_slot,
                context,
            };
            owner.run(&command_receiver);
            owner.release();
            Ok(())
        })?;
        Ok(GpuOwner {
            thread,
            commands,
            load: load_control,
            interrupters,
            stopping,
            context_held,
            loading_since,
            heartbeat: None,
            ready,
        })
    }

    /// The handle through which the repository orders loads.
    pub fn loader(&self) -> GpuLoader {
        GpuLoader {
            commands: self.commands.clone(),
        }
    }

    /// Whether the thread holds a GPU context: false once `auto` mode has fallen back to the
    /// CPU and released it.
    pub fn gpu_in_use(&self) -> bool {
        self.context_held.load(Ordering::Relaxed)
    }

    /// How long the model load in progress has taken, if one is: the thread answers no
    /// heartbeat meanwhile.
    pub fn loading_for(&self) -> Option<Duration> {
        self.loading_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|since| since.elapsed())
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

/// A resident model version and its queue, on the GPU-owner thread.
struct Served {
    name: String,
    version: u64,
    /// Which load made it resident: a version unloaded and loaded again before it was freed
    /// is resident twice for a while, once retiring.
    load_number: u64,
    session: Box<dyn Session>,
    /// Its inputs and outputs and how they batch.
    signature: Arc<Signature>,
    queue: Receiver<Job>,
    counts: Arc<QueueCounts>,
    stats: Arc<ModelStats>,
    metrics: ModelMetrics,
    policy: BatchPolicy,
    /// Jobs taken off the queue that have not run yet, oldest first.
    pending: VecDeque<Job>,
    /// Requests ever submitted, as the previous batch began to form.
    arrived_before: u64,
    /// Taken out of the routing table: freed once nothing of it waits.
    retiring: bool,
}

impl Served {
    /// Whether a request waits to run.
    fn has_work(&self) -> bool {
        !self.pending.is_empty() || !self.queue.is_empty()
    }

    /// Whether it may be freed: retired, and nothing of it waits or runs.
    fn finished(&self) -> bool {
        self.retiring && self.pending.is_empty() && self.counts.waiting() == 0
    }
}

/// The GPU-owner thread's state while serving.
struct Owner<'a> {
    /// Declared before `context`: fields drop in order, so the sessions (and their device
    /// memory) are freed before the context is released.
    served: Vec<Served>,
    /// Where the round-robin looks first for work.
    next: usize,
    /// Loads carried out so far.
    loads: u64,
    /// Where a freed version's series are removed.
    metrics: Arc<Metrics>,
    runtime: Box<dyn Backend>,
    runtime_version: String,
    gpu: GpuConfig,
    control: &'a LoadControl,
    interrupters: &'a Mutex<Interrupters>,
    stopping: &'a AtomicBool,
    /// Cleared when the context is released early.
    context_held: &'a AtomicBool,
    /// Set while a load runs.
    loading_since: &'a Mutex<Option<Instant>>,
    context: Option<PrimaryContext>,
}

impl Owner<'_> {
    /// Serves the queues and carries out `commands` between executions, until told to stop
    /// (or the main thread is gone); then answers what is still queued without running it.
    fn run(&mut self, commands: &Receiver<GpuCommand>) {
        loop {
            // Commands first, so that heartbeats are answered between executions under load.
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.obey(command) {
                            return self.refuse_remaining();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        log::warn!("the main thread is gone; releasing the GPU");
                        return self.refuse_remaining();
                    }
                }
            }
            self.free_finished();
            let Some(index) = self.next_with_work() else {
                // Nothing to run: wait for a command or a request.
                let mut select = Select::new();
                select.recv(commands);
                for served in &self.served {
                    select.recv(&served.queue);
                }
                let ready = select.ready();
                if ready > 0 {
                    let served = &mut self.served[ready - 1];
                    match served.queue.try_recv() {
                        Ok(job) => served.pending.push_back(job),
                        // Every handle on the queue is gone: nothing more will come.
                        Err(TryRecvError::Disconnected) => served.retiring = true,
                        Err(TryRecvError::Empty) => {}
                    }
                }
                continue;
            };
            self.next = index + 1;
            self.serve(index, commands);
        }
    }

    /// The index of the next version with a request waiting, in turn after the last one
    /// served.
    fn next_with_work(&self) -> Option<usize> {
        let count = self.served.len();
        (0..count)
            .map(|offset| (self.next + offset) % count)
            .find(|&index| self.served[index].has_work())
    }

    /// Gathers one batch of version `index` and runs it.
    fn serve(&mut self, index: usize, commands: &Receiver<GpuCommand>) {
        let (this, before, after) = split_one(&mut self.served, index);
        // Company is coming when more than this one request arrived since the previous
        // batch began to form: callers are concurrent.
        let arrived = this.counts.arrived();
        let company_coming = arrived.saturating_sub(this.arrived_before) >= 2;
        this.arrived_before = arrived;
        let padding = this.signature.padding.clone();
        let batch = batcher::gather(
            &mut this.pending,
            &this.queue,
            this.policy,
            padding.as_ref(),
            company_coming,
            refuse_job,
            // A heartbeat, a stop or another model's request does not wait for a batch to
            // fill.
            || !commands.is_empty() || before.iter().chain(after).any(Served::has_work),
        );
        if batch.is_empty() {
            this.metrics.set_queue_depth(this.counts.waiting());
            return;
        }
        execute(this, batch, self.stopping);
    }

    /// Handles a command; false when the thread is to stop.
    fn obey(&mut self, command: GpuCommand) -> bool {
        match command {
            GpuCommand::Heartbeat(reply) => {
                // Test builds only: makes the thread stop answering for a while.
                #[cfg(feature = "failpoints")]
                fail::fail_point!("gpu::heartbeat");
                let sample = self
                    .context
                    .as_ref()
                    .and_then(PrimaryContext::memory_sample);
                let _ = reply.send(sample);
                true
            }
            GpuCommand::Load(order, reply) => {
                *self.loading_since.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now());
                let loaded = self.load(*order);
                *self.loading_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let _ = reply.send(loaded);
                true
            }
            GpuCommand::Retire { name, version } => {
                match self.served.iter_mut().find(|served| {
                    served.name == name && served.version == version && !served.retiring
                }) {
                    Some(served) => {
                        log::info!("model {name:?} version {version}: takes no new requests; freed once its {} queued request(s) have run", served.counts.waiting());
                        served.retiring = true;
                    }
                    None => log::warn!("model {name:?} version {version} is not resident"),
                }
                true
            }
            GpuCommand::Stop => {
                log::debug!("asked to stop");
                false
            }
        }
    }

    /// Frees the retired versions that have nothing left to run.
    fn free_finished(&mut self) {
        while let Some(index) = self.served.iter().position(Served::finished) {
            let served = self.served.remove(index);
            if self.next > index {
                self.next -= 1;
            }
            let Served {
                name,
                version,
                load_number,
                session,
                ..
            } = served;
            self.interrupters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&load_number);
            drop(session);
            // A version unloaded and loaded again before this copy was freed shares its
            // series: they stay for the copy that serves.
            if !self
                .served
                .iter()
                .any(|other| other.name == name && other.version == version)
            {
                self.metrics.model_freed(&name, version);
            }
            log::info!("model {name:?} version {version}: freed its session");
        }
    }

    /// Makes the version of `order` resident, beside those served, and serves its queue.
    fn load(&mut self, order: LoadOrder) -> Result<LoadedModel, GpuError> {
        let started = Instant::now();
        self.loads += 1;
        let load_number = self.loads;
        let path = order.path.clone();
        if let Some(context) = &self.context {
            // A regular file tells its size: refuse a model that cannot fit before reading it.
            if let Ok(metadata) = std::fs::metadata(&path) {
                if metadata.is_file() {
                    check_fits(context, &path, metadata.len())?;
                }
            }
        }
        log::info!(
            "loading model {:?} version {} from {}",
            order.name,
            order.version,
            path.display()
        );
        let bytes = file::read_model(&path, self.control)?;
        let size_bytes = bytes.bytes.len() as u64;
        let options = |provider| SessionOptions {
            provider,
            intra_op_threads: order.intra_op_threads.map_or_else(
                || match provider {
                    Provider::Cuda(_) => 1,
                    Provider::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
                },
                |threads| threads.0,
            ),
            max_batch_size: order.batching.max_batch_size,
        };
        let provider = self
            .context
            .as_ref()
            .map_or(Provider::Cpu, |c| Provider::Cuda(c.ordinal));
        let mut session = match self.runtime.load(&path, &bytes.bytes, &options(provider)) {
            Err(e @ LoadError::CudaProvider { .. }) => {
                if self.gpu.mode == GpuMode::Required {
                    return Err(GpuError::Required {
                        reason: e.to_string(),
                    });
                }
                log::warn!(
                    "sidecar.gpu.mode is \"auto\": {e}; running the models on the CPU, in host memory"
                );
                // The context is of no use without the provider: release it, unless other
                // sessions are on it.
                if self.served.is_empty() {
                    self.context = None;
                    self.context_held.store(false, Ordering::Relaxed);
                }
                self.runtime
                    .load(&path, &bytes.bytes, &options(Provider::Cpu))?
            }
            other => other?,
        };
        let warm_up = session.signature().zero_inputs(1);
        session.run(warm_up).map_err(|source| LoadError::WarmUp {
            path: path.clone(),
            source,
        })?;
        let mut signature = (**session.signature()).clone();
        match probe::padding(&mut *session, &signature, order.pad_id) {
            Ok(Some(padding)) => {
                log::info!(
                    "model {:?}: requests of token sequences of different lengths are batched together, padded to the longest of each batch (at most {} padded tokens per execution)",
                    order.name,
                    order.batching.max_batch_tokens
                );
                signature.padding = Some(padding);
            }
            Ok(None) => {}
            Err(why) => log::warn!(
                "model {:?}: requests of different lengths run in separate executions: {why}",
                order.name
            ),
        }
        let signature = Arc::new(signature);
        let location = session.provider().location();
        let model = LoadedModel {
            name: order.name.clone(),
            version: order.version,
            path: bytes.path.clone(),
            size_bytes,
            sha256: bytes.sha256.clone(),
            location,
            load_time: started.elapsed(),
            runtime_version: self.runtime_version.clone(),
            signature: Arc::clone(&signature),
            text: None,
        };
        log::info!(
            "model {:?} version {} resident {}: {} (sha256 {}), warmed up, in {:.3} s",
            model.name,
            model.version,
            match session.provider() {
                Provider::Cuda(ordinal) => format!("on GPU {ordinal} (CUDA execution provider)"),
                Provider::Cpu => "in host memory (CPU execution provider)".to_string(),
            },
            ByteSize(size_bytes),
            model.sha256,
            model.load_time.as_secs_f64()
        );
        log_signature(&signature);
        self.interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(load_number, session.interrupter());
        let policy = BatchPolicy {
            max_rows: signature.max_batch_size as usize,
            max_tokens: order.batching.max_batch_tokens as usize,
            max_padding: order.batching.max_padding(self.context.is_some()),
            max_delay: order.batching.max_queue_delay,
            delay_mode: order.batching.delay_mode,
        };
        self.served.push(Served {
            name: order.name,
            version: order.version,
            load_number,
            session,
            signature,
            queue: order.queue,
            counts: order.counts,
            stats: order.stats,
            metrics: order.metrics,
            policy,
            pending: VecDeque::new(),
            arrived_before: 0,
            retiring: false,
        });
        #[cfg(feature = "failpoints")]
        fail::fail_point!("gpu::after_load");
        Ok(model)
    }

    /// Answers every job still queued (or pending) UNAVAILABLE, without running it.
    fn refuse_remaining(&mut self) {
        let mut refused = 0;
        for served in &mut self.served {
            for job in served.pending.drain(..).chain(served.queue.try_iter()) {
                job.answer(Err(JobFailure::NotRun));
                refused += 1;
            }
            served.metrics.set_queue_depth(0);
        }
        if refused > 0 {
            log::warn!("{refused} queued request(s) answered UNAVAILABLE without running");
        }
    }

    /// Frees the sessions, then the context, logging what was released.
    fn release(self) {
        let Owner {
            served, context, ..
        } = self;
        let count = served.len();
        drop(served);
        match context {
            Some(context) => {
                let ordinal = context.ordinal;
                drop(context);
                log::info!(
                    "freed {count} model session(s) and released the context of GPU {ordinal}"
                );
            }
            None => log::info!("freed {count} model session(s)"),
        }
    }
}

/// The element at `index`, and those before and after it.
fn split_one<T>(items: &mut [T], index: usize) -> (&mut T, &[T], &[T]) {
    let (before, rest) = items.split_at_mut(index);
    let (this, after) = rest.split_first_mut().expect("index in range");
    (this, before, after)
}

/// Runs one execution of `served` for `batch` and answers each job with its rows.
fn execute(served: &mut Served, mut batch: Vec<Job>, stopping: &AtomicBool) {
    let started = Instant::now();
    let requests = batch.len() as u64;
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    for job in &mut batch {
        job.leave_queue();
        let waited = started.saturating_duration_since(job.enqueued);
        served.stats.queue.record(1, waited);
        served.metrics.observe_queue_time(waited);
    }
    // Test builds only: holds the execution, so that tests can fill the queue. It holds
    // after the queue times are counted: `inference_queue_seconds_count` tells a test
    // that its requests left the queue and are held here.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("gpu::execute");
    served.metrics.set_queue_depth(served.counts.waiting());
    let inputs = batcher::concatenate(&batch, &served.signature);
    let inputs_ready = Instant::now();
    let outcome = served.session.run(inputs);
    let ran = Instant::now();
    // Counted before anyone is answered, so a caller that reads the statistics after its
    // answer sees its own execution.
    served.stats.record_execution(rows as u64);
    served.metrics.record_execution(rows, ran - inputs_ready);
    match outcome {
        Ok(outputs) => batcher::split_and_answer(batch, outputs, &served.signature),
        Err(error) if stopping.load(Ordering::Relaxed) => {
            log::warn!("an execution of {rows} row(s) was ended by the shutdown: {error}");
            for job in batch {
                job.answer(Err(JobFailure::Stopped));
            }
        }
        Err(error) => {
            log::warn!(
                "an execution of model {:?} version {} ({rows} row(s)) failed: {error}",
                served.name,
                served.version
            );
            for job in batch {
                job.answer(Err(JobFailure::Execution(error.clone())));
            }
        }
    }
    let answered = Instant::now();
    served
        .stats
        .compute_input
        .record(requests, inputs_ready - started);
    served
        .stats
        .compute_infer
        .record(requests, ran - inputs_ready);
    served.stats.compute_output.record(requests, answered - ran);
}

/// Answers a job that will not run.
fn refuse_job(job: Job, failure: JobFailure) {
    log::debug!("not running a request: {failure:?}");
    job.answer(Err(failure));
}

/// Logs the model's inputs and outputs and how it is batched.
fn log_signature(signature: &Signature) {
    for (what, specs) in [("input", &signature.inputs), ("output", &signature.outputs)] {
        for spec in specs {
            log::info!(
                "model {what} {:?}: {} {:?}",
                spec.name,
                spec.datatype,
                spec.dims
            );
        }
    }
    if signature.batching() {
        log::info!(
            "requests are batched: up to {} rows per execution",
            signature.max_batch_size
        );
    } else {
        log::info!("requests are not batched: one request per execution");
    }
}

/// Fails unless `size_bytes` fit in the free memory of the device whose context is current.
fn check_fits(
    context: &PrimaryContext,
    path: &std::path::Path,
    size_bytes: u64,
) -> Result<(), GpuError> {
    let (free, _total) = cuda::memory_info()?;
    if size_bytes > free {
        return Err(GpuError::ModelTooLarge {
            path: path.to_path_buf(),
            ordinal: context.ordinal,
            needed: size_bytes,
            free,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;
    use crate::backend::RunError;
    use crate::metrics::Transport;
    use crate::model::job::JobResult;
    use crate::tensor::{DataType, Tensor, TensorSpec};

    /// A second backend in a few lines: an identity model, whose output is its input.
    #[derive(Debug)]
    struct Echo(Arc<Signature>);

    impl Session for Echo {
        fn signature(&self) -> &Arc<Signature> {
            &self.0
        }

        fn provider(&self) -> Provider {
            Provider::Cpu
        }

        fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
            Ok(inputs)
        }

        fn interrupter(&self) -> Interrupter {
            Interrupter::new(|| {})
        }
    }

    /// Makes an [`Echo`] of every model file.
    struct EchoBackend;

    impl Backend for EchoBackend {
        fn load(
            &self,
            _path: &std::path::Path,
            _model: &[u8],
            _options: &SessionOptions,
        ) -> Result<Box<dyn Session>, LoadError> {
            Ok(Box::new(Echo(Arc::new(Signature {
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
                max_batch_size: 8,
                ..Default::default()
            }))))
        }
    }

    /// What an [`Owner`] borrows, made for a test, with no GPU.
    struct Parts {
        control: LoadControl,
        interrupters: Mutex<Interrupters>,
        stopping: AtomicBool,
        context_held: AtomicBool,
        loading_since: Mutex<Option<Instant>>,
        metrics: Arc<Metrics>,
    }

    impl Parts {
        fn new() -> Self {
            Parts {
                control: LoadControl::default(),
                interrupters: Mutex::new(Interrupters::new()),
                stopping: AtomicBool::new(false),
                context_held: AtomicBool::new(false),
                loading_since: Mutex::new(None),
                metrics: Arc::new(Metrics::new(Transport::Unix).unwrap()),
            }
        }

        /// An owner on the echo backend, serving nothing yet.
        fn owner(&self) -> Owner<'_> {
            Owner {
                served: Vec::new(),
                next: 0,
                loads: 0,
                metrics: Arc::clone(&self.metrics),
                runtime: Box::new(EchoBackend),
                runtime_version: "test".to_string(),
                gpu: GpuConfig::default(),
                control: &self.control,
                interrupters: &self.interrupters,
                stopping: &self.stopping,
                context_held: &self.context_held,
                loading_since: &self.loading_since,
                context: None,
            }
        }
    }

    fn spec(name: &str) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 2],
            labels: Vec::new(),
        }
    }

    /// A job of `rows` rows, each value `fill`, answered on the returned channel.
    fn job(rows: u8, fill: u8) -> (Job, mpsc::Receiver<JobResult>) {
        let input = Tensor {
            shape: vec![i64::from(rows), 2],
            data: vec![fill; usize::from(rows) * 2 * 4],
        };
        Job::for_tests(vec![input], usize::from(rows))
    }

    /// Loads version `version` of model `name` on `owner`; returns its queue and statistics.
    fn load(
        owner: &mut Owner<'_>,
        file: &std::path::Path,
        name: &str,
        version: u64,
        metrics: &Metrics,
    ) -> (batcher::Submitter, Arc<ModelStats>) {
        let (submitter, queue, counts) = batcher::queue(64);
        let stats = Arc::new(ModelStats::default());
        let batching = BatchingConfig {
            max_queue_delay: Duration::from_millis(20),
            ..BatchingConfig::default()
        };
        owner
            .load(LoadOrder {
                name: name.to_string(),
                version,
                path: file.to_path_buf(),
                intra_op_threads: None,
                batching,
                pad_id: 0,
                queue,
                counts,
                stats: Arc::clone(&stats),
                metrics: metrics.for_model(name, version),
            })
            .unwrap();
        (submitter, stats)
    }

    #[test]
    fn the_owner_batches_runs_and_answers_every_model_in_turn_through_any_backend() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.onnx");
        std::fs::write(&file, b"any bytes: the echo backend reads none").unwrap();
        let parts = Parts::new();
        let metrics = Arc::clone(&parts.metrics);
        let mut owner = parts.owner();
        let (busy, busy_stats) = load(&mut owner, &file, "busy", 1, &metrics);
        let (light, light_stats) = load(&mut owner, &file, "light", 1, &metrics);
        // Three requests of the busy model and one of the light one wait before the loop
        // starts: one execution runs the busy model's three, one the light model's.
        let mut answers = Vec::new();
        for rows in 1..=3u8 {
            let (job, answer) = job(rows, rows);
            busy.submit(job).unwrap();
            answers.push((rows, rows, answer));
        }
        let (job, answer) = job(2, 9);
        light.submit(job).unwrap();
        answers.push((2, 9, answer));
        let (commands_in, commands) = unbounded();
        // The loop runs here, as on the GPU-owner thread; the answers are awaited beside it,
        // and then it is told to stop.
        let waiter = std::thread::spawn(move || {
            let mut got = Vec::new();
            for (rows, fill, answer) in answers {
                got.push((rows, fill, answer.recv().unwrap()));
            }
            commands_in.send(GpuCommand::Stop).unwrap();
            got
        });
        owner.run(&commands);
        for (rows, fill, answer) in waiter.join().unwrap() {
            let (outputs, indices) = answer.unwrap();
            assert_eq!(indices, [0]);
            assert_eq!(outputs[0].shape, [i64::from(rows), 2]);
            assert!(outputs[0].data.iter().all(|&b| b == fill), "fill {fill}");
        }
        assert_eq!(busy_stats.executions.load(Ordering::Relaxed), 1);
        assert_eq!(busy_stats.inferences.load(Ordering::Relaxed), 6);
        assert_eq!(light_stats.executions.load(Ordering::Relaxed), 1);
        assert_eq!(light_stats.inferences.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_retired_version_runs_what_it_queued_then_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.onnx");
        std::fs::write(&file, b"echo").unwrap();
        let parts = Parts::new();
        let metrics = Arc::clone(&parts.metrics);
        let mut owner = parts.owner();
        let (old, _) = load(&mut owner, &file, "m", 1, &metrics);
        let (job, answer) = job(1, 7);
        old.submit(job).unwrap();
        let (commands_in, commands) = unbounded();
        commands_in
            .send(GpuCommand::Retire {
                name: "m".to_string(),
                version: 1,
            })
            .unwrap();
        let waiter = std::thread::spawn(move || {
            let got = answer.recv().unwrap();
            commands_in.send(GpuCommand::Stop).unwrap();
            got
        });
        owner.run(&commands);
        let (outputs, _) = waiter.join().unwrap().unwrap();
        assert!(outputs[0].data.iter().all(|&b| b == 7));
        owner.free_finished();
        assert!(owner.served.is_empty(), "the retired version is freed");
    }
}
