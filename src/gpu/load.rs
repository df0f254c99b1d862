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

//! Making a model version resident, on the loader's thread (the repository thread), never on
//! a GPU-owner thread, which serves every other model meanwhile: which threads run its
//! instances (its `devices` and `instances`), the free-memory check on each device, reading
//! the file (and its external data) once, a session per instance (on its GPU, with that
//! device's primary context current on this thread, or the CPU when there is no GPU or
//! `auto` mode finds no usable CUDA provider), each warmed up, the padding probe, the text
//! stage bound; then the one [`ModelVersion`] that the repository, the handlers and the
//! GPU-owner threads share, whose instances those threads adopt in a moment. Loads are made
//! one at a time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Sender};

use super::command::{GpuCommand, LoadOrder};
use super::cuda::{self, LoaderContext};
use super::error::GpuError;
use super::lane::{Place, Pool, Start};
use super::probe;
use super::served::Served;
use super::{GpuLoader, Runtime};
use crate::backend::{LoadError, Provider, Session, SessionOptions};
use crate::config::{GpuMode, Placement};
use crate::model::batcher::BatchPolicy;
use crate::model::file::{self, ModelBytes};
use crate::model::queue;
use crate::model::stats::Recorder;
use crate::model::text::TextStage;
use crate::model::warmup;
use crate::model::{Instances, ModelVersion};
use crate::serving::ByteSize;
use crate::tensor::{Signature, Tensor};

/// One instance to make: the thread that runs it, and its device while that thread holds
/// the device's context.
pub(super) struct Target {
    pub commands: Sender<GpuCommand>,
    pub device: Option<i32>,
}

/// An instance built, and whether `auto` mode fell back to the CPU for it.
pub(super) type Instance = (Served, bool);

impl Pool {
    /// The instances `placement` asks for model `name`: on each of its devices (default:
    /// every device served on), `instances` on that device's thread; without a GPU, each on
    /// a CPU thread of its own, started here if the pool has none yet. Returns them and the
    /// devices they are on (none on the CPU).
    fn targets(
        self: &Arc<Self>,
        name: &str,
        placement: &Placement,
    ) -> Result<(Vec<Target>, Vec<i32>), GpuError> {
        let mut lanes = self.lanes();
        // Checked under the lock that the stop takes too: no thread starts after it.
        if self.stopping.load(Ordering::Relaxed) {
            return Err(GpuError::Stopped);
        }
        let served: Vec<i32> = lanes
            .iter()
            .filter_map(|lane| match lane.place {
                Place::Device(ordinal) => Some(ordinal),
                Place::Cpu(_) => None,
            })
            .collect();
        let mut targets = Vec::new();
        if served.is_empty() {
            for instance in 0..placement.instances {
                if !lanes.iter().any(|lane| lane.place == Place::Cpu(instance)) {
                    self.spawn_into(
                        &mut lanes,
                        format!("cpu-instance-{instance}"),
                        Place::Cpu(instance),
                        Start::Cpu,
                    )?;
                }
                let lane = lanes
                    .iter()
                    .find(|lane| lane.place == Place::Cpu(instance))
                    .expect("started above");
                targets.push(Target {
                    commands: lane.commands.clone(),
                    device: None,
                });
            }
            return Ok((targets, Vec::new()));
        }
        let wanted = placement.devices.clone().unwrap_or_else(|| served.clone());
        let mut devices = Vec::with_capacity(wanted.len());
        for &ordinal in &wanted {
            let lane = lanes
                .iter()
                .find(|lane| lane.place == Place::Device(ordinal))
                .ok_or_else(|| GpuError::NotServedDevice {
                    name: name.to_string(),
                    ordinal,
                    served: served.clone(),
                })?;
            if lane.failed.load(Ordering::Relaxed) {
                log::warn!(
                    "model {name:?}: GPU {ordinal} is out of service; no instance goes there"
                );
                continue;
            }
            devices.push(ordinal);
            let held = lane.context_held.load(Ordering::Relaxed);
            for _ in 0..placement.instances {
                targets.push(Target {
                    commands: lane.commands.clone(),
                    device: held.then_some(ordinal),
                });
            }
        }
        if devices.is_empty() {
            return Err(GpuError::DevicesFailed {
                name: name.to_string(),
                devices: wanted,
            });
        }
        Ok((targets, devices))
    }
}

impl GpuLoader {
    /// Makes the version of `order` resident, beside those served, and has the GPU-owner
    /// threads of its instances serve its queue; waits until they do, or the version could
    /// not be made. Runs on the calling thread; a second load waits for the first.
    pub fn load(&self, order: LoadOrder) -> Result<Arc<ModelVersion>, GpuError> {
        let _one_at_a_time = self.pool.loading.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = self.pool.runtime.get().ok_or(GpuError::Stopped)?;
        let (targets, devices) = self.pool.targets(&order.name, &order.placement)?;
        // The devices' contexts stay current here until the instances are adopted: a session
        // a GPU-owner thread does not take (it stopped meanwhile) is freed on this thread,
        // where it was made, with its context still held.
        let mut contexts = Vec::new();
        let (instances, model) = self.build(runtime, order, &targets, devices, &mut contexts)?;
        // Test builds only: holds the loader after a load, as a long load would.
        #[cfg(feature = "failpoints")]
        crate::failpoint::hold("gpu::after_load");
        let (reply, adopted) = bounded(targets.len());
        let mut sent = 0;
        let mut refused = false;
        for (target, (served, fell_back)) in targets.iter().zip(instances) {
            match target.commands.send(GpuCommand::Adopt(
                Box::new(served),
                fell_back,
                reply.clone(),
            )) {
                Ok(()) => sent += 1,
                Err(unsent) => {
                    drop(unsent.into_inner());
                    refused = true;
                }
            }
        }
        drop(reply);
        for _ in 0..sent {
            adopted.recv().map_err(|_| GpuError::Stopped)?;
        }
        if refused {
            return Err(GpuError::Stopped);
        }
        drop(contexts);
        Ok(model)
    }

    /// Builds the version of `order` on this thread, ready to serve: read once, a session
    /// made for each of `targets` (on its GPU, with the device's context current on this
    /// thread, or the CPU) and warmed up, probed, its text stage bound. Returns each target's
    /// instance, with whether `auto` mode fell back to the CPU for want of a usable CUDA
    /// provider, and the version. The devices' contexts go into `contexts`.
    pub(super) fn build(
        &self,
        runtime: &Runtime,
        order: LoadOrder,
        targets: &[Target],
        devices: Vec<i32>,
        contexts: &mut Vec<LoaderContext>,
    ) -> Result<(Vec<Instance>, Arc<ModelVersion>), GpuError> {
        let started = Instant::now();
        let path = order.path.clone();
        let size_on_disk = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|metadata| metadata.len());
        // The device whose context is current on this thread: each is made current again only
        // when another's was.
        let mut current = None;
        for target in targets {
            let Some(ordinal) = target.device else {
                continue;
            };
            if contexts.iter().any(|context| context.ordinal == ordinal) {
                continue;
            }
            let context = LoaderContext::bind(ordinal)?;
            current = Some(ordinal);
            // A regular file tells its size: refuse a model that cannot fit before reading it.
            if let Some(size) = size_on_disk {
                check_fits(ordinal, &path, size)?;
            }
            contexts.push(context);
        }
        log::info!(
            "loading model {:?} version {} from {}",
            order.name,
            order.version,
            path.display()
        );
        let bytes = file::read_model(&path, &self.pool.load)?;
        let size_bytes = bytes.total_size();
        if !bytes.data_files.is_empty() {
            // With its data files the model may not fit after all: refuse it before a session
            // tries to take the memory.
            for context in contexts.iter() {
                if current != Some(context.ordinal) {
                    context.make_current()?;
                    current = Some(context.ordinal);
                }
                check_fits(context.ordinal, &path, size_bytes)?;
            }
        }
        for data in &bytes.data_files {
            log::info!(
                "model {:?} version {}: weights in {} ({})",
                order.name,
                order.version,
                data.path.display(),
                ByteSize(data.size)
            );
        }
        let mut fell_back = false;
        let mut warm_up = None;
        let mut sessions = Vec::with_capacity(targets.len());
        for target in targets {
            let device = target.device.filter(|_| !fell_back);
            if let Some(context) = device.and_then(|d| contexts.iter().find(|c| c.ordinal == d)) {
                if current != Some(context.ordinal) {
                    context.make_current()?;
                    current = Some(context.ordinal);
                }
            }
            let (session, fell) = self.session(
                runtime,
                &order,
                &bytes,
                device,
                (targets.len(), &mut warm_up),
            )?;
            fell_back |= fell;
            sessions.push(session);
        }
        let mut instances = sessions.into_iter();
        let mut first = instances.next().ok_or(GpuError::Stopped)?;
        let mut signature = (**first.signature()).clone();
        let pad_id = order.text.as_ref().map_or(0, TextStage::pad_id);
        match probe::padding(&mut *first, &signature, pad_id) {
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
        // The text stage is bound before the version exists: one that does not fit the model
        // leaves nothing resident.
        let text = order.text.map(|stage| stage.bind(&signature)).transpose()?;
        let signature = Arc::new(signature);
        let (queue, receiver, _) = queue::queue(order.batching.max_queue_size as usize);
        let on_gpu = matches!(first.provider(), Provider::Cuda(_));
        let policy = BatchPolicy {
            max_rows: signature.max_batch_size as usize,
            max_tokens: order.batching.max_batch_tokens as usize,
            max_padding: order.batching.max_padding(on_gpu),
            max_delay: order.batching.max_queue_delay,
            delay_mode: order.batching.delay_mode,
        };
        let instances_placed = if on_gpu {
            Instances {
                devices,
                count: order.placement.instances,
            }
        } else {
            Instances {
                devices: Vec::new(),
                count: u32::try_from(targets.len()).unwrap_or(u32::MAX),
            }
        };
        let model = Arc::new(ModelVersion {
            recorder: Recorder::new(self.pool.metrics.for_model(&order.name, order.version)),
            name: order.name,
            version: order.version,
            path: bytes.path.clone(),
            size_bytes,
            sha256: bytes.sha256.clone(),
            location: first.provider().location(),
            load_time: started.elapsed(),
            runtime_version: runtime.version.clone(),
            signature,
            text,
            batching: order.batching,
            cuda: order.cuda,
            instances: instances_placed,
            queue,
        });
        log::info!(
            "model {:?} version {} resident {}: {} (sha256 {}), warmed up, in {:.3} s",
            model.name,
            model.version,
            placed(&model.instances, on_gpu),
            ByteSize(size_bytes),
            model.sha256,
            model.load_time.as_secs_f64()
        );
        log_signature(&model.signature);
        let requeue = (targets.len() > 1).then(|| model.queue.channel());
        let served = |session| Served {
            model: Arc::clone(&model),
            load_number: 0,
            session,
            queue: receiver.clone(),
            requeue: requeue.clone(),
            policy,
            pending: VecDeque::new(),
            arrived_before: 0,
            retiring: false,
        };
        let built = std::iter::once(first)
            .chain(instances)
            .map(|session| (served(session), fell_back))
            .collect();
        // Sessions on the CPU need no context: let them go now, before the GPU-owner threads
        // (which let their own go when no session is on the device) adopt the instances.
        if fell_back {
            contexts.clear();
        }
        Ok((built, model))
    }

    /// One warmed-up session of `order` on `device` (the CPU when none), from `bytes`;
    /// with whether `auto` mode fell back to the CPU. `instances` of the model are made; their
    /// warm-up inputs are made (and their files read) once, for the first, into `warm_up`.
    fn session(
        &self,
        runtime: &Runtime,
        order: &LoadOrder,
        bytes: &ModelBytes,
        device: Option<i32>,
        (instances, warm_up): (usize, &mut Option<Vec<Tensor>>),
    ) -> Result<(Box<dyn Session>, bool), GpuError> {
        let path = &order.path;
        let options = |provider| SessionOptions {
            provider,
            intra_op_threads: order.intra_op_threads.map_or_else(
                || match provider {
                    Provider::Cuda(_) => 1,
                    // The cores, shared between the model's instances.
                    Provider::Cpu => std::thread::available_parallelism()
                        .map_or(1, |n| (n.get() / instances).max(1)),
                },
                |threads| threads.0,
            ),
            max_batch_size: order.batching.max_batch_size,
            cuda: order.cuda,
        };
        let provider = device.map_or(Provider::Cpu, Provider::Cuda);
        let mut fell_back = false;
        let mut session = match runtime.backend.load(path, &bytes.bytes, &options(provider)) {
            Err(e @ LoadError::CudaProvider { .. }) => {
                if runtime.mode == GpuMode::Required {
                    return Err(GpuError::Required {
                        reason: e.to_string(),
                    });
                }
                log::warn!(
                    "sidecar.gpu.mode is \"auto\": {e}; running the models on the CPU, in host memory"
                );
                // The GPU-owner threads let their contexts go if no session is on them.
                fell_back = true;
                runtime
                    .backend
                    .load(path, &bytes.bytes, &options(Provider::Cpu))?
            }
            other => other?,
        };
        let inputs =
            match warm_up {
                Some(inputs) => inputs.clone(),
                None => warm_up
                    .insert(warmup::inputs(session.signature(), &order.warmup).map_err(
                        |source| GpuError::Warmup {
                            path: path.clone(),
                            source,
                        },
                    )?)
                    .clone(),
            };
        session.run(inputs).map_err(|source| LoadError::WarmUp {
            path: path.clone(),
            source,
        })?;
        Ok((session, fell_back))
    }
}

/// Where a version's instances are, for the log.
fn placed(instances: &Instances, on_gpu: bool) -> String {
    match (on_gpu, instances.devices.as_slice()) {
        (true, [device]) if instances.count == 1 => {
            format!("on GPU {device} (CUDA execution provider)")
        }
        (true, devices) => format!(
            "on GPUs {devices:?}, {} instance(s) each (CUDA execution provider)",
            instances.count
        ),
        (false, _) if instances.count == 1 => "in host memory (CPU execution provider)".to_string(),
        (false, _) => format!(
            "in host memory, {} instances (CPU execution provider)",
            instances.count
        ),
    }
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

/// Fails unless `size_bytes` fit in the free memory of device `ordinal`, whose context is
/// current on this thread.
fn check_fits(ordinal: i32, path: &std::path::Path, size_bytes: u64) -> Result<(), GpuError> {
    let (free, _total) = cuda::memory_info()?;
    if size_bytes > free {
        return Err(GpuError::ModelTooLarge {
            path: path.to_path_buf(),
            ordinal,
            needed: size_bytes,
            free,
        });
    }
    Ok(())
}
