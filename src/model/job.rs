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

//! One inference request on its way through the model: the [`Request`] the gRPC codec
//! checked, the queued [`Job`] built from it, and the typed answer it gets ([`JobResult`]).
//! Jobs are made on the completion-queue threads and answered on the GPU-owner thread (or
//! wherever one is dropped): every job is answered exactly once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::RunError;
use crate::tensor::Tensor;

/// A request that fits the model, checked by the protocol codec, ready to be admitted.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// One tensor per model input, in the model's order.
    pub inputs: Vec<Tensor>,
    /// Rows along dimension 0 (1 without batching).
    pub rows: usize,
    /// Model output indices, in the order asked for (all outputs when none are named).
    pub outputs: Vec<usize>,
    /// The caller's own timeout, when given.
    pub timeout: Option<Duration>,
}

/// Why a job got no outputs. A stop is not a failure of the model: the shutdown variants say
/// the request was not run, or was cut short, so that the caller may send it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    /// Its deadline passed before it ran; it was not run.
    #[error("the request's timeout passed before it ran; it was not run")]
    DeadlineExceeded,
    /// Its caller cancelled or went away before it ran; it was not run.
    #[error("the request was cancelled before it ran")]
    Cancelled,
    /// The sidecar is shutting down and did not run it.
    #[error("the sidecar is shutting down; the request was not run")]
    NotRun,
    /// The sidecar's shutdown ended the execution it was part of.
    #[error("the sidecar is shutting down; the execution was stopped")]
    Stopped,
    /// The backend failed on its batch.
    #[error("ONNX Runtime failed to run the batch: {0}")]
    Execution(RunError),
    /// The device running its batch failed, and was taken out of service.
    #[error("GPU {device} failed while running the request's batch ({reason}); the GPU is out of service, and the request may be sent again")]
    DeviceFailed { device: i32, reason: String },
    /// Every instance of its model version was on devices that failed; it was not run.
    #[error("no instance of the model version serves any more (its GPUs failed); the request was not run: send it again once the model is served elsewhere")]
    NoInstance,
}

/// What a job is answered with: its outputs (in the order it asked for them) with their
/// indices among the model's outputs, or why not.
pub type JobResult = Result<(Vec<Tensor>, Vec<usize>), JobFailure>;

/// Whether a queued job's caller still waits for it, as the transport that took the request
/// can tell: a flag its handler sets when the caller goes (cancels, disconnects, its deadline
/// passes), or a call deadline that can only be compared with the clock. Asked on the
/// GPU-owner thread before the job runs.
pub trait Caller: Send + Sync {
    /// Why the job must not run because of its caller, if it must not.
    fn gone(&self) -> Option<JobFailure>;
}

impl Caller for AtomicBool {
    fn gone(&self) -> Option<JobFailure> {
        self.load(Ordering::Relaxed)
            .then_some(JobFailure::Cancelled)
    }
}

/// How a job's answer is delivered; called exactly once, on the GPU-owner thread (or where a
/// queued job is dropped).
pub type Reply = Box<dyn FnOnce(JobResult) + Send>;

/// One request, checked against the model, waiting to run.
pub struct Job {
    /// One tensor per model input, in the model's input order.
    pub inputs: Vec<Tensor>,
    /// Rows along dimension 0 (1 when the model is not batched).
    pub rows: usize,
    /// Indices into the model's outputs, in the order the caller wants them.
    pub outputs: Vec<usize>,
    /// When it joined the queue.
    pub enqueued: Instant,
    /// It must not start after this.
    pub deadline: Option<Instant>,
    /// Whether its caller has gone (cancelled, disconnected, its gRPC deadline passed).
    pub caller: Arc<dyn Caller>,
    /// The queue's count of waiting jobs while this one counts in it.
    waiting: Option<Arc<AtomicUsize>>,
    reply: Option<Reply>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("rows", &self.rows)
            .field("outputs", &self.outputs)
            .field("enqueued", &self.enqueued)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Job {
    /// A job of `inputs` (`rows` rows) asking for output 0, with no deadline, answered on the
    /// returned channel.
    pub fn for_tests(
        inputs: Vec<Tensor>,
        rows: usize,
    ) -> (Job, std::sync::mpsc::Receiver<JobResult>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = Job::new(
            inputs,
            rows,
            vec![0],
            None,
            Arc::new(AtomicBool::new(false)),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        (job, rx)
    }
}

impl Job {
    pub fn new(
        inputs: Vec<Tensor>,
        rows: usize,
        outputs: Vec<usize>,
        deadline: Option<Instant>,
        caller: Arc<dyn Caller>,
        reply: Reply,
    ) -> Self {
        Job {
            inputs,
            rows,
            outputs,
            enqueued: Instant::now(),
            deadline,
            caller,
            waiting: None,
            reply: Some(reply),
        }
    }

    /// Holds the place reserved for the job in `waiting` (already counted) until it leaves
    /// the queue: runs, or is answered.
    pub(super) fn hold_place(&mut self, waiting: &Arc<AtomicUsize>) {
        self.waiting = Some(Arc::clone(waiting));
    }

    /// Takes the job out of its queue's count: it is about to run.
    pub fn leave_queue(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Answers the job.
    pub fn answer(mut self, result: JobResult) {
        if let Some(reply) = self.reply.take() {
            reply(result);
        }
    }

    /// Drops a job that never joined the queue, without answering it: its caller is told
    /// another way.
    pub fn withdraw(mut self) {
        self.reply = None;
    }

    /// Answers the job with `tensors`, the outputs it asked for.
    pub(super) fn answer_outputs(mut self, tensors: Vec<Tensor>) {
        let indices = std::mem::take(&mut self.outputs);
        self.answer(Ok((tensors, indices)));
    }

    /// Why the job must not run now, if its caller has gone or its deadline has passed.
    pub fn refusal(&self, now: Instant) -> Option<JobFailure> {
        if let Some(failure) = self.caller.gone() {
            Some(failure)
        } else if self.deadline.is_some_and(|deadline| now >= deadline) {
            Some(JobFailure::DeadlineExceeded)
        } else {
            None
        }
    }

    /// Whether `other` can run in one execution with this job: the same shape past dimension
    /// 0, except along the sequence axis (1) of the inputs in `padded`, which is padded.
    pub(super) fn fits_with(&self, other: &Job, padded: &[Option<i64>]) -> bool {
        self.inputs
            .iter()
            .zip(&other.inputs)
            .enumerate()
            .all(|(input, (a, b))| {
                if padded.get(input).is_some_and(Option::is_some) {
                    a.shape.len() == b.shape.len() && a.shape.get(2..) == b.shape.get(2..)
                } else {
                    a.shape.get(1..) == b.shape.get(1..)
                }
            })
    }

    /// The job's sequence length: axis 1 of its first input in `padded`; 0 without one.
    pub(super) fn length(&self, padded: &[Option<i64>]) -> usize {
        padded
            .iter()
            .position(Option::is_some)
            .and_then(|input| self.inputs.get(input)?.shape.get(1).copied())
            .map_or(0, |length| length.max(0) as usize)
    }
}

impl Drop for Job {
    /// A job dropped unanswered (its queue closed, a thread unwinding) is answered
    /// UNAVAILABLE: no caller waits forever.
    fn drop(&mut self) {
        self.leave_queue();
        if let Some(reply) = self.reply.take() {
            reply(Err(JobFailure::NotRun));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_dropped_job_is_answered_unavailable() {
        let (tx, rx) = mpsc::channel();
        let job = Job::new(
            vec![Tensor::default()],
            1,
            vec![0],
            None,
            Arc::new(AtomicBool::new(false)),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        drop(job);
        assert_eq!(rx.recv().unwrap(), Err(JobFailure::NotRun));
    }
}
