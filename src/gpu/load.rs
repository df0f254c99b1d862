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

//! Making a model version resident on the GPU-owner thread: the free-memory check, reading
//! the file, the session (on the GPU, or the CPU when `auto` mode finds no usable CUDA
//! provider), the warm-up execution, the padding probe, the text stage bound to the model;
//! then the one [`ModelVersion`] that the repository, the handlers and this thread share.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::command::LoadOrder;
use super::cuda::{self, PrimaryContext};
use super::error::GpuError;
use super::owner::Owner;
use super::probe;
use super::served::Served;
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

impl Owner<'_> {
    /// Makes the version of `order` resident, beside those served, and serves its queue.
    pub fn load(&mut self, order: LoadOrder) -> Result<Arc<ModelVersion>, GpuError> {
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
        let bytes = file::read_model(&path, self.shared.control)?;
        let size_bytes = bytes.total_size();
        if let (Some(context), false) = (&self.context, bytes.data_files.is_empty()) {
            // With its data files the model may not fit after all: refuse it before a session
            // tries to take the memory.
            check_fits(context, &path, size_bytes)?;
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
                    self.shared.context_held.store(false, Ordering::Relaxed);
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
            max_padding: order.batching.max_padding(self.context.is_some()),
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
            runtime_version: self.runtime_version.clone(),
            signature,
            text,
            batching: order.batching,
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
        self.shared
            .interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(load_number, session.interrupter());
        self.served.push(Served {
            model: Arc::clone(&model),
            load_number,
            session,
            queue: receiver,
            policy,
            pending: VecDeque::new(),
            arrived_before: 0,
            retiring: false,
        });
        // Test builds only: holds the thread after a load, as a long load would.
        #[cfg(feature = "failpoints")]
        crate::failpoint::hold("gpu::after_load");
        Ok(model)
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
