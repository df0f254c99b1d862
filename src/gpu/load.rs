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
//! the GPU-owner thread, which serves every other model meanwhile: the free-memory check,
//! reading the file (and its external data), the session (on the GPU, with the device's
//! primary context current on this thread, or the CPU when `auto` mode finds no usable CUDA
//! provider), the warm-up execution, the padding probe, the text stage bound; then the one
//! [`ModelVersion`] that the repository, the handlers and the GPU-owner thread share, handed
//! to the GPU-owner thread, which adopts it in a moment. Loads are made one at a time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;

use super::command::{GpuCommand, LoadOrder};
use super::cuda::{self, LoaderContext};
use super::error::GpuError;
use super::probe;
use super::served::Served;
use super::{GpuLoader, Runtime};
use crate::backend::{LoadError, Provider, SessionOptions};
use crate::config::GpuMode;
use crate::model::batcher::BatchPolicy;
use crate::model::file;
use crate::model::queue;
use crate::model::stats::Recorder;
use crate::model::text::TextStage;
use crate::model::ModelVersion;
use crate::serving::ByteSize;
use crate::tensor::Signature;

impl GpuLoader {
    /// Makes the version of `order` resident, beside those served, and has the GPU-owner
    /// thread serve its queue; waits until it does, or the version could not be made. Runs on
    /// the calling thread; a second load waits for the first.
    pub fn load(&self, order: LoadOrder) -> Result<Arc<ModelVersion>, GpuError> {
        let _one_at_a_time = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = self.runtime.get().ok_or(GpuError::Stopped)?;
        // The device's context stays current here until the version is adopted: a session
        // the GPU-owner thread does not take (it stopped meanwhile) is freed on this thread,
        // where it was made, with the context still held.
        let (served, model, fell_back, _context) = self.build(runtime, order)?;
        // Test builds only: holds the loader after a load, as a long load would.
        #[cfg(feature = "failpoints")]
        crate::failpoint::hold("gpu::after_load");
        let (reply, adopted) = bounded(1);
        if let Err(unsent) =
            self.commands
                .send(GpuCommand::Adopt(Box::new(served), fell_back, reply))
        {
            drop(unsent.into_inner());
            return Err(GpuError::Stopped);
        }
        adopted.recv().map_err(|_| GpuError::Stopped)?;
        Ok(model)
    }

    /// Builds the version of `order` on this thread, ready to serve: read, the session made
    /// (on the GPU, with the device's context current on this thread, or the CPU), warmed up,
    /// probed, its text stage bound. Returns the GPU-owner thread's part and whether `auto`
    /// mode fell back to the CPU for want of a usable CUDA provider.
    pub(super) fn build(
        &self,
        runtime: &Runtime,
        order: LoadOrder,
    ) -> Result<(Served, Arc<ModelVersion>, bool, Option<LoaderContext>), GpuError> {
        let started = Instant::now();
        let path = order.path.clone();
        let device = runtime
            .device
            .filter(|_| self.context_held.load(Ordering::Relaxed));
        // The device's context, current here while the session is made and warmed up; let
        // go (on this thread) once the version is adopted, the session's memory staying
        // with the context the GPU-owner thread holds.
        let context = device.map(LoaderContext::bind).transpose()?;
        if let Some(context) = &context {
            // A regular file tells its size: refuse a model that cannot fit before reading it.
            if let Ok(metadata) = std::fs::metadata(&path) {
                if metadata.is_file() {
                    check_fits(context.ordinal, &path, metadata.len())?;
                }
            }
        }
        log::info!(
            "loading model {:?} version {} from {}",
            order.name,
            order.version,
            path.display()
        );
        let bytes = file::read_model(&path, &self.control)?;
        let size_bytes = bytes.total_size();
        if let (Some(context), false) = (&context, bytes.data_files.is_empty()) {
            // With its data files the model may not fit after all: refuse it before a session
            // tries to take the memory.
            check_fits(context.ordinal, &path, size_bytes)?;
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
            cuda: order.cuda,
        };
        let provider = context
            .as_ref()
            .map_or(Provider::Cpu, |c| Provider::Cuda(c.ordinal));
        let mut fell_back = false;
        let mut session = match runtime
            .backend
            .load(&path, &bytes.bytes, &options(provider))
        {
            Err(e @ LoadError::CudaProvider { .. }) => {
                if runtime.mode == GpuMode::Required {
                    return Err(GpuError::Required {
                        reason: e.to_string(),
                    });
                }
                log::warn!(
                    "sidecar.gpu.mode is \"auto\": {e}; running the models on the CPU, in host memory"
                );
                // The GPU-owner thread lets the context go if no session is on it.
                fell_back = true;
                runtime
                    .backend
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
        let pad_id = order.text.as_ref().map_or(0, TextStage::pad_id);
        match probe::padding(&mut *session, &signature, pad_id) {
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
        let policy = BatchPolicy {
            max_rows: signature.max_batch_size as usize,
            max_tokens: order.batching.max_batch_tokens as usize,
            max_padding: order
                .batching
                .max_padding(matches!(session.provider(), Provider::Cuda(_))),
            max_delay: order.batching.max_queue_delay,
            delay_mode: order.batching.delay_mode,
        };
        let model = Arc::new(ModelVersion {
            recorder: Recorder::new(self.metrics.for_model(&order.name, order.version)),
            name: order.name,
            version: order.version,
            path: bytes.path.clone(),
            size_bytes,
            sha256: bytes.sha256.clone(),
            location: session.provider().location(),
            load_time: started.elapsed(),
            runtime_version: runtime.version.clone(),
            signature,
            text,
            batching: order.batching,
            cuda: order.cuda,
            queue,
        });
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
        log_signature(&model.signature);
        let served = Served {
            model: Arc::clone(&model),
            load_number: 0,
            session,
            queue: receiver,
            policy,
            pending: VecDeque::new(),
            arrived_before: 0,
            retiring: false,
        };
        // A session on the CPU needs no context: let it go now, before the GPU-owner thread
        // (which lets its own go when no session is on the device) adopts the version.
        let context = if fell_back { None } else { context };
        Ok((served, model, fell_back, context))
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
