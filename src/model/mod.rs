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

//! A served model's handle: its queue, admission (readiness, queue limit, deadlines), its
//! statistics, and the batcher that drains the queue. The gRPC handlers (completion-queue
//! threads) submit every request through [`ModelHandle::submit`]; the GPU-owner thread holds
//! the queue's other end and runs the [`batcher`]. [`file`] reads the model's bytes.

pub mod batcher;
pub mod file;
pub mod job;
pub mod stats;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::Receiver;

use self::batcher::{QueueCounts, SubmitError, Submitter};
use self::job::{Job, Reply, Request};
use self::stats::ModelStats;
use crate::config::BatchingConfig;
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::Metrics;
use crate::serving::LoadedModel;
use crate::text::TextModel;

/// Why a request was not admitted to the model's queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The model is not resident yet.
    #[error("the model is still loading; retry when the sidecar is READY")]
    Loading,
    /// The sidecar is draining or stopped.
    #[error("the sidecar is shutting down and takes no new requests")]
    ShuttingDown,
    /// `max-queue-size` requests wait already.
    #[error("the inference queue is full ({capacity} requests wait, sidecar.batching.max-queue-size): back off and retry on this connection; do not reconnect")]
    QueueFull { capacity: usize },
}

/// One served model, as the request path sees it; shared by every handler.
#[derive(Debug)]
pub struct ModelHandle {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    stats: Arc<ModelStats>,
    queue: Submitter,
    batching: BatchingConfig,
    /// The tokenizer, bound once the model is resident, when texts are served.
    text: OnceLock<TextModel>,
}

impl ModelHandle {
    /// A handle with an empty queue of `batching.max-queue-size`, and the queue's receiving
    /// end and counts for the GPU-owner thread.
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        batching: BatchingConfig,
    ) -> (Self, Receiver<Job>, Arc<QueueCounts>) {
        let (queue, receiver, counts) = batcher::queue(batching.max_queue_size as usize);
        let handle = ModelHandle {
            lifecycle,
            metrics,
            stats: Arc::new(ModelStats::default()),
            queue,
            batching,
            text: OnceLock::new(),
        };
        (handle, receiver, counts)
    }

    /// Serves texts through `text` from now on; set once, before READY.
    pub fn serve_text(&self, text: TextModel) {
        let _ = self.text.set(text);
    }

    /// The tokenizer, when texts are served.
    pub fn text(&self) -> Option<&TextModel> {
        self.text.get()
    }

    /// The model's statistics, which the GPU-owner thread also records into.
    pub fn stats(&self) -> &Arc<ModelStats> {
        &self.stats
    }

    /// How requests are queued and batched, as configured.
    pub fn batching(&self) -> &BatchingConfig {
        &self.batching
    }

    /// The resident model, while it takes requests; why not otherwise.
    pub fn ready(&self) -> Result<&LoadedModel, AdmitError> {
        match self.lifecycle.state() {
            State::Ready => self
                .lifecycle
                .serving()
                .map(|serving| &serving.model)
                .ok_or(AdmitError::Loading),
            State::Starting => Err(AdmitError::Loading),
            State::Draining | State::Stopped => Err(AdmitError::ShuttingDown),
        }
    }

    /// The resident model, once loaded, whatever the sidecar's state.
    pub fn loaded(&self) -> Option<&LoadedModel> {
        self.lifecycle.serving().map(|serving| &serving.model)
    }

    /// Queues `request` without blocking; `reply` gets its answer, exactly once. The request
    /// must not start after the shorter of its own timeout and `default-timeout`; it is not
    /// run if `abandoned` is set first. Refused (and `reply` dropped unanswered) when the
    /// queue is full or closed.
    pub fn submit(
        &self,
        request: Request,
        abandoned: Arc<AtomicBool>,
        reply: Reply,
    ) -> Result<(), AdmitError> {
        let timeout = match (self.batching.default_timeout, request.timeout) {
            (Some(default), Some(asked)) => Some(default.min(asked)),
            (default, asked) => default.or(asked),
        };
        let job = Job::new(
            request.inputs,
            request.rows,
            request.outputs,
            timeout.map(|t| Instant::now() + t),
            abandoned,
            reply,
        );
        match self.queue.submit(job) {
            Ok(()) => {
                self.metrics.set_queue_depth(self.queue.depth());
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
