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

//! One loaded model version, [`ModelVersion`]: built once, when its session is warmed up,
//! with everything it serves (its file, signature, text stage, batching, queue and recorder),
//! and shared behind an `Arc` by the repository (in its model's routing table), the gRPC
//! handlers (which check requests against it and queue them on completion-queue threads) and
//! the GPU-owner thread (which drains its queue and records its executions).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::{Job, Reply};
use super::outputs::{self, Answering};
use super::queue::{QueueCounts, SubmitError, Submitter};
use super::request::{self, Checked, InferRequest, RequestError};
use super::stats::Recorder;
use super::text::{TextInfo, TextModel};
use super::AdmitError;
use crate::config::BatchingConfig;
use crate::serving::ModelLocation;
use crate::tensor::{NamedTensor, Signature, Tensor};

/// A model version resident and warmed up, with everything it serves.
#[derive(Debug)]
pub struct ModelVersion {
    /// The model's name in the inference protocol.
    pub name: String,
    /// Its version: the folder's number in a repository, else 1.
    pub version: u64,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    /// Where its weights live.
    pub location: ModelLocation,
    pub load_time: Duration,
    /// The ONNX Runtime version serving it.
    pub runtime_version: String,
    /// Its inputs and outputs (with class labels), and how requests are batched.
    pub signature: Arc<Signature>,
    /// Its text stage, when it serves text in (`[sidecar.model.text]`).
    pub text: Option<TextModel>,
    /// How its requests are queued and batched, as configured.
    pub batching: BatchingConfig,
    pub(crate) queue: Submitter,
    pub(crate) recorder: Recorder,
}

impl ModelVersion {
    /// What it serves for text, when it does.
    pub fn text_info(&self) -> Option<&TextInfo> {
        self.text.as_ref().map(TextModel::info)
    }

    /// Its statistics and Prometheus series.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Its queue's counts, which both of the queue's ends move.
    pub fn queue_counts(&self) -> &Arc<QueueCounts> {
        self.queue.counts()
    }

    /// Checks `request` against the version (tokenizing its texts, if it sends texts).
    pub fn check(&self, request: InferRequest) -> Result<Checked, RequestError> {
        request::check(&self.signature, self.text.as_ref(), request)
    }

    /// The named outputs of an answer, made as `answering` says from the execution's
    /// `tensors` (the model's outputs at `indices`). Pools embeddings: call it on the
    /// handler's thread, never the GPU-owner thread.
    pub fn answer(
        &self,
        answering: &Answering,
        tensors: Vec<Tensor>,
        indices: &[usize],
    ) -> Vec<NamedTensor> {
        outputs::answer(
            &self.signature,
            self.text_info(),
            answering,
            tensors,
            indices,
        )
    }

    /// Queues a `checked` request without blocking; `reply` gets its answer, exactly once.
    /// The request must not start after the shorter of its own timeout and
    /// `default-timeout`; it is not run if `abandoned` is set first. Refused (and `reply`
    /// dropped unanswered) when the queue is full or closed.
    pub fn submit(
        &self,
        checked: super::job::Request,
        abandoned: Arc<AtomicBool>,
        reply: Reply,
    ) -> Result<(), AdmitError> {
        let timeout = match (self.batching.default_timeout, checked.timeout) {
            (Some(default), Some(asked)) => Some(default.min(asked)),
            (default, asked) => default.or(asked),
        };
        let job = Job::new(
            checked.inputs,
            checked.rows,
            checked.outputs,
            timeout.map(|t| Instant::now() + t),
            abandoned,
            reply,
        );
        match self.queue.submit(job) {
            Ok(()) => {
                // Handlers on several threads set the gauge at once: each writes the count
                // again until it is still the count after its write, so that the last write
                // standing is the true depth.
                loop {
                    let depth = self.queue.depth();
                    self.recorder.set_queue_depth(depth);
                    if self.queue.depth() == depth {
                        break;
                    }
                }
                Ok(())
            }
            Err(SubmitError::Full(job)) => {
                job.withdraw();
                Err(AdmitError::QueueFull {
                    capacity: self.queue.capacity(),
                })
            }
            Err(SubmitError::Closed(job)) => {
                job.withdraw();
                Err(AdmitError::ShuttingDown)
            }
        }
    }
}

#[cfg(test)]
impl ModelVersion {
    /// Version 1 of model "m" with `signature`, on the CPU, whose queue goes nowhere.
    pub fn for_tests(signature: Signature) -> Self {
        let metrics = crate::metrics::Metrics::new(crate::metrics::Transport::Unix)
            .expect("metrics")
            .for_model("m", 1);
        let (queue, _, _) = super::queue::queue(1);
        ModelVersion {
            name: "m".to_string(),
            version: 1,
            path: PathBuf::from("/m.onnx"),
            size_bytes: 1,
            sha256: String::new(),
            location: ModelLocation::HostMemory,
            load_time: Duration::ZERO,
            runtime_version: "test".to_string(),
            signature: Arc::new(signature),
            text: None,
            batching: BatchingConfig::default(),
            queue,
            recorder: Recorder::new(metrics),
        }
    }
}
