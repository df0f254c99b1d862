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

//! The GPU-owner thread: the only thread that touches CUDA and the ONNX Runtime session.
//!
//! At start-up it brings up the device ([`cuda`]: driver, primary context), loads the
//! backend (ONNX Runtime, [`crate::backend`]) and creates the model's session on that device,
//! or on the CPU without a GPU, and runs one warm-up execution: then the model is resident.
//! While serving, it drains the model's queue with the [`crate::model::batcher`], running one
//! execution per gathered batch, and answers the main thread's heartbeats between executions.
//! At shutdown it answers what is still queued, then frees the session and releases the
//! context on itself.

mod cuda;
mod probe;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TryRecvError};
use cudarc::driver::result::DriverError;

use self::cuda::PrimaryContext;
use crate::backend::onnx;
use crate::backend::{Backend, Interrupter, LoadError, Provider, Session, SessionOptions};
use crate::config::{BatchingConfig, GpuConfig, GpuMode, ModelConfig};
use crate::metrics::Metrics;
use crate::model::batcher::{self, BatchPolicy, QueueCounts};
use crate::model::file::{self, LoadControl, ModelError};
use crate::model::job::{Job, JobFailure};
use crate::model::stats::ModelStats;
use crate::serving::{ByteSize, LoadedModel, MemorySample, ServingInfo};
use crate::shutdown::{ComponentThread, Event, ShutdownError};
use crate::tensor::Signature;

/// Why the GPU or the model could not be brought up; exit code 1.
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
    #[error("model {} needs {} but GPU {ordinal} has only {} free", path.display(), ByteSize(*needed), ByteSize(*free))]
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

/// The GPU-owner thread's answer to a heartbeat: a memory sample when a GPU is in use.
pub type HeartbeatReply = Option<MemorySample>;

/// Messages to the GPU-owner thread.
#[derive(Debug)]
enum GpuCommand {
    /// Answer on the channel, to show the thread is not stuck.
    Heartbeat(Sender<HeartbeatReply>),
    /// Answer what is queued without running it, free everything and end the thread.
    Stop,
}

/// What the GPU-owner thread loads and how it serves it.
#[derive(Debug, Clone)]
pub struct ServingPlan {
    pub gpu: GpuConfig,
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    /// The token id that pads `input_ids` (the tokenizer's, with text in; else 0).
    pub pad_id: i64,
}

/// The main thread's handle on the GPU-owner thread.
#[derive(Debug)]
pub struct GpuOwner {
    thread: ComponentThread,
    commands: Sender<GpuCommand>,
    load: Arc<LoadControl>,
    /// Ends the session's execution in progress, once the session exists.
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    /// Set when stopping: a failed execution then means it was ended on purpose.
    stopping: Arc<AtomicBool>,
    /// The reply to the last heartbeat, while it is awaited, and when it was sent.
    heartbeat: Option<(Receiver<HeartbeatReply>, Instant)>,
    /// Receives, once, the outcome of start-up.
    pub ready: Receiver<Result<ServingInfo, GpuError>>,
}

impl GpuOwner {
    /// Starts the `gpu-owner` thread, which brings up the GPU and the model per `plan`,
    /// reports on [`GpuOwner::ready`], then runs the jobs of `queue` until stopped.
    pub fn start(
        plan: ServingPlan,
        queue: Receiver<Job>,
        counts: Arc<QueueCounts>,
        stats: Arc<ModelStats>,
        metrics: Arc<Metrics>,
        events: Sender<Event>,
    ) -> Result<Self, ShutdownError> {
        let (commands, command_receiver) = unbounded();
        let (ready_sender, ready) = bounded(1);
        let load_control = Arc::new(LoadControl::default());
        let control = Arc::clone(&load_control);
        let interrupter = Arc::new(Mutex::new(None));
        let interrupter_slot = Arc::clone(&interrupter);
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping_flag = Arc::clone(&stopping);
        let thread = ComponentThread::spawn("gpu-owner", events, move || {
            let mut resident = match load(&plan, &control) {
                Ok(resident) => resident,
                Err(e) => {
                    let _ = ready_sender.send(Err(e));
                    return Ok(());
                }
            };
            *interrupter_slot.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(resident.session.interrupter());
            let _ = ready_sender.send(Ok(resident.info.clone()));
            #[cfg(feature = "failpoints")]
            fail::fail_point!("gpu::after_ready");
            let policy = BatchPolicy {
                max_rows: resident.signature.max_batch_size as usize,
                max_tokens: plan.batching.max_batch_tokens as usize,
                max_padding: plan.batching.max_padding(resident.context.is_some()),
                max_delay: plan.batching.max_queue_delay,
                delay_mode: plan.batching.delay_mode,
            };
            let serving = Serving {
                resident: &mut resident,
                policy,
                counts: &counts,
                stats: &stats,
                metrics: &metrics,
                stopping: &stopping_flag,
            };
            serving.run(&command_receiver, &queue);
            resident.release();
            Ok(())
        })?;
        Ok(GpuOwner {
            thread,
            commands,
            load: load_control,
            interrupter,
            stopping,
            heartbeat: None,
            ready,
        })
    }

    /// How far the model load has got: (bytes read, file size if known).
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

    /// Tells the thread to end the execution in progress (its requests are answered
    /// UNAVAILABLE), answer what is still queued without running it, free everything and end;
    /// waits up to `timeout` for it. Called once the grace period is over.
    pub fn stop(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.stopping.store(true, Ordering::Relaxed);
        self.load.request_stop();
        let _ = self.commands.send(GpuCommand::Stop);
        if let Some(interrupter) = self
            .interrupter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            interrupter.interrupt();
        }
        self.thread.join_within(timeout)
    }
}

/// The session and what it runs on.
struct Resident {
    session: Box<dyn Session>,
    // Declared after `session`: fields drop in order, so the session (and its device memory)
    // is freed before the context is released.
    context: Option<PrimaryContext>,
    info: ServingInfo,
    /// The model's inputs and outputs and how they batch (as `info.model.signature`).
    signature: Arc<Signature>,
}

impl Resident {
    /// Frees the session, then the context, logging what was released.
    fn release(self) {
        let Resident {
            session, context, ..
        } = self;
        drop(session);
        match context {
            Some(context) => {
                let ordinal = context.ordinal;
                drop(context);
                log::info!("freed the model's session and released the context of GPU {ordinal}");
            }
            None => log::info!("freed the model's session"),
        }
    }
}

/// The serving loop's state, on the GPU-owner thread.
struct Serving<'a> {
    resident: &'a mut Resident,
    policy: BatchPolicy,
    counts: &'a QueueCounts,
    stats: &'a ModelStats,
    metrics: &'a Metrics,
    stopping: &'a AtomicBool,
}

impl Serving<'_> {
    /// Runs batches from `queue` and answers `commands` between them, until told to stop (or
    /// the main thread is gone); then answers what is still queued without running it.
    fn run(mut self, commands: &Receiver<GpuCommand>, queue: &Receiver<Job>) {
        // Jobs taken off the queue that have not run yet, oldest first.
        let mut pending: VecDeque<Job> = VecDeque::new();
        let mut queue_open = true;
        // Requests ever submitted, as the previous batch began to form.
        let mut arrived_before = 0;
        loop {
            // Commands first, so that heartbeats are answered between executions under load.
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.obey(command) {
                            return self.refuse_remaining(pending, queue);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        log::warn!("the main thread is gone; releasing the GPU");
                        return self.refuse_remaining(pending, queue);
                    }
                }
            }
            if pending.is_empty() {
                let first = if queue_open {
                    select! {
                        recv(commands) -> command => {
                            match command.map(|command| self.obey(command)) {
                                Ok(true) => continue,
                                _ => return self.refuse_remaining(pending, queue),
                            }
                        }
                        recv(queue) -> job => match job {
                            Ok(job) => job,
                            Err(_) => {
                                queue_open = false;
                                continue;
                            }
                        },
                    }
                } else {
                    match commands.recv().map(|command| self.obey(command)) {
                        Ok(true) => continue,
                        _ => return self.refuse_remaining(pending, queue),
                    }
                };
                pending.push_back(first);
            }
            // Company is coming when more than this one request arrived since the previous
            // batch began to form: callers are concurrent.
            let arrived = self.counts.arrived();
            let company_coming = arrived.saturating_sub(arrived_before) >= 2;
            arrived_before = arrived;
            let batch = batcher::gather(
                &mut pending,
                queue,
                self.policy,
                self.resident.signature.padding.as_ref(),
                company_coming,
                refuse_job,
                // A heartbeat or a stop does not wait for a batch to fill.
                || !commands.is_empty(),
            );
            if batch.is_empty() {
                self.metrics.set_queue_depth(self.counts.waiting());
                continue;
            }
            self.execute(batch);
        }
    }

    /// Handles a command; false when the thread is to stop.
    fn obey(&mut self, command: GpuCommand) -> bool {
        match command {
            GpuCommand::Heartbeat(reply) => {
                // Test builds only: makes the thread stop answering for a while.
                #[cfg(feature = "failpoints")]
                fail::fail_point!("gpu::heartbeat");
                let sample = self
                    .resident
                    .context
                    .as_ref()
                    .and_then(PrimaryContext::memory_sample);
                let _ = reply.send(sample);
                true
            }
            GpuCommand::Stop => {
                log::debug!("asked to stop");
                false
            }
        }
    }

    /// Answers every job still queued (or pending) UNAVAILABLE, without running it.
    fn refuse_remaining(self, pending: VecDeque<Job>, queue: &Receiver<Job>) {
        let mut refused = 0;
        for job in pending.into_iter().chain(queue.try_iter()) {
            job.answer(Err(JobFailure::NotRun));
            refused += 1;
        }
        if refused > 0 {
            log::warn!("{refused} queued request(s) answered UNAVAILABLE without running");
        }
        self.metrics.set_queue_depth(0);
    }

    /// Runs one execution for `batch` and answers each job with its rows.
    fn execute(&mut self, mut batch: Vec<Job>) {
        let started = Instant::now();
        let requests = batch.len() as u64;
        let rows: usize = batch.iter().map(|job| job.rows).sum();
        for job in &mut batch {
            job.leave_queue();
            let waited = started.saturating_duration_since(job.enqueued);
            self.stats.queue.record(1, waited);
            self.metrics.observe_queue_time(waited);
        }
        // Test builds only: holds the execution, so that tests can fill the queue. It holds
        // after the queue times are counted: `inference_queue_seconds_count` tells a test
        // that its requests left the queue and are held here.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("gpu::execute");
        self.metrics.set_queue_depth(self.counts.waiting());
        let inputs = batcher::concatenate(&batch, &self.resident.signature);
        let inputs_ready = Instant::now();
        let outcome = self.resident.session.run(inputs);
        let ran = Instant::now();
        // Counted before anyone is answered, so a caller that reads the statistics after its
        // answer sees its own execution.
        self.stats.record_execution(rows as u64);
        self.metrics.record_execution(rows, ran - inputs_ready);
        match outcome {
            Ok(outputs) => batcher::split_and_answer(batch, outputs, &self.resident.signature),
            Err(error) if self.stopping.load(Ordering::Relaxed) => {
                log::warn!("an execution of {rows} row(s) was ended by the shutdown: {error}");
                for job in batch {
                    job.answer(Err(JobFailure::Stopped));
                }
            }
            Err(error) => {
                log::warn!("an execution of {rows} row(s) failed: {error}");
                for job in batch {
                    job.answer(Err(JobFailure::Execution(error.clone())));
                }
            }
        }
        let answered = Instant::now();
        self.stats
            .compute_input
            .record(requests, inputs_ready - started);
        self.stats
            .compute_infer
            .record(requests, ran - inputs_ready);
        self.stats.compute_output.record(requests, answered - ran);
    }
}

/// Answers a job that will not run.
fn refuse_job(job: Job, failure: JobFailure) {
    log::debug!("not running a request: {failure:?}");
    job.answer(Err(failure));
}

/// Brings up the GPU (if one is to be used), loads ONNX Runtime, reads the model, creates its
/// session where it will run and warms it up.
fn load(plan: &ServingPlan, control: &LoadControl) -> Result<Resident, GpuError> {
    let started = Instant::now();
    let model_path = plan.model.uri.path.clone();
    let mut context = cuda::open_device(&plan.gpu)?;
    let (runtime, source, runtime_version) =
        onnx::load_library(plan.model.runtime_library.as_deref())?;
    log::info!("ONNX Runtime {runtime_version} loaded from {source}");
    if let Some(context) = &context {
        // A regular file tells its size: refuse a model that cannot fit before reading it.
        if let Ok(metadata) = std::fs::metadata(&model_path) {
            if metadata.is_file() {
                check_fits(context, &model_path, metadata.len())?;
            }
        }
    }
    log::info!("loading model {}", model_path.display());
    let bytes = file::read_model(&model_path, control)?;
    let size_bytes = bytes.bytes.len() as u64;
    let options = |provider| SessionOptions {
        provider,
        intra_op_threads: plan.model.intra_op_threads.map_or_else(
            || match provider {
                Provider::Cuda(_) => 1,
                Provider::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            |threads| threads.0,
        ),
        max_batch_size: plan.batching.max_batch_size,
    };
    let provider = context
        .as_ref()
        .map_or(Provider::Cpu, |c| Provider::Cuda(c.ordinal));
    let mut session = match runtime.load(&model_path, &bytes.bytes, &options(provider)) {
        Err(e @ LoadError::CudaProvider { .. }) => {
            if plan.gpu.mode == GpuMode::Required {
                return Err(GpuError::Required {
                    reason: e.to_string(),
                });
            }
            log::warn!(
                "sidecar.gpu.mode is \"auto\": {e}; running the model on the CPU, in host memory"
            );
            // The context is of no use without the provider: release it now.
            context = None;
            runtime.load(&model_path, &bytes.bytes, &options(Provider::Cpu))?
        }
        other => other?,
    };
    let warm_up = session.signature().zero_inputs(1);
    session.run(warm_up).map_err(|source| LoadError::WarmUp {
        path: model_path.clone(),
        source,
    })?;
    let mut signature = (**session.signature()).clone();
    match probe::padding(&mut *session, &signature, plan.pad_id) {
        Ok(Some(padding)) => {
            log::info!(
                "model {}: requests of token sequences of different lengths are batched together, padded to the longest of each batch (at most {} padded tokens per execution)",
                model_path.display(),
                plan.batching.max_batch_tokens
            );
            signature.padding = Some(padding);
        }
        Ok(None) => {}
        Err(why) => log::warn!(
            "model {}: requests of different lengths run in separate executions: {why}",
            model_path.display()
        ),
    }
    let signature = Arc::new(signature);
    let info = ServingInfo {
        gpu: context.as_ref().map(|c| c.info.clone()),
        model: LoadedModel {
            name: plan.model.name(),
            path: bytes.path.clone(),
            size_bytes,
            sha256: bytes.sha256.clone(),
            location: session.provider().location(),
            load_time: started.elapsed(),
            runtime_version,
            signature: Arc::clone(&signature),
            text: None,
        },
    };
    log::info!(
        "model {:?} resident {}: {} (sha256 {}), warmed up, in {:.3} s",
        info.model.name,
        match &context {
            Some(c) => format!("on GPU {} (CUDA execution provider)", c.ordinal),
            None => "in host memory (CPU execution provider)".to_string(),
        },
        ByteSize(size_bytes),
        info.model.sha256,
        info.model.load_time.as_secs_f64()
    );
    log_signature(&signature);
    Ok(Resident {
        session,
        context,
        info,
        signature,
    })
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
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

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

    fn spec(name: &str) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 2],
            labels: Vec::new(),
        }
    }

    #[test]
    fn the_serving_loop_batches_runs_and_answers_through_any_backend() {
        let signature = Arc::new(Signature {
            inputs: vec![spec("x")],
            outputs: vec![spec("y")],
            max_batch_size: 8,
            ..Default::default()
        });
        let mut resident = Resident {
            session: Box::new(Echo(Arc::clone(&signature))),
            context: None,
            info: ServingInfo::for_tests(),
            signature: Arc::clone(&signature),
        };
        let (submitter, queue, counts) = batcher::queue(16);
        let mut answers = Vec::new();
        // Three requests wait before the loop starts: one execution runs them all.
        for rows in 1..=3u8 {
            let (tx, rx) = mpsc::channel::<JobResult>();
            let job = Job::new(
                vec![Tensor {
                    shape: vec![i64::from(rows), 2],
                    data: vec![rows; usize::from(rows) * 2 * 4],
                }],
                usize::from(rows),
                vec![0],
                None,
                Arc::new(AtomicBool::new(false)),
                Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            );
            submitter.submit(job).unwrap();
            answers.push((rows, rx));
        }
        let (commands_in, commands) = unbounded();
        let stats = ModelStats::default();
        let metrics = Metrics::new(Transport::Unix).unwrap();
        let stopping = AtomicBool::new(false);
        // The loop runs here, as on the GPU-owner thread (the context is not Send); the answers
        // are awaited beside it, and then it is told to stop.
        let waiter = std::thread::spawn(move || {
            let mut got = Vec::new();
            for (rows, answer) in answers {
                got.push((rows, answer.recv().unwrap()));
            }
            commands_in.send(GpuCommand::Stop).unwrap();
            got
        });
        Serving {
            resident: &mut resident,
            policy: BatchPolicy {
                max_rows: 8,
                max_tokens: 0,
                max_padding: 0.5,
                max_delay: Duration::from_millis(50),
                delay_mode: crate::config::DelayMode::Fixed,
            },
            counts: &counts,
            stats: &stats,
            metrics: &metrics,
            stopping: &stopping,
        }
        .run(&commands, &queue);
        for (rows, answer) in waiter.join().unwrap() {
            let (outputs, indices) = answer.unwrap();
            assert_eq!(indices, [0]);
            assert_eq!(outputs[0].shape, [i64::from(rows), 2]);
            assert!(outputs[0].data.iter().all(|&b| b == rows), "row {rows}");
        }
        assert_eq!(stats.executions.load(Ordering::Relaxed), 1);
        assert_eq!(stats.inferences.load(Ordering::Relaxed), 6);
    }
}
