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
//! A model version's queue of inference jobs: the gRPC handlers (completion-queue threads)
//! fill it without blocking through the [`Submitter`], up to `max-queue-size` jobs waiting;
//! the GPU-owner thread drains it through the batcher. Both ends share the [`QueueCounts`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::job::Job;

/// Why a job could not join the queue; the job comes back (boxed: refusals are rare, and a
/// job is large).
#[derive(Debug)]
pub enum SubmitError {
    /// `max-queue-size` jobs wait already.
    Full(Box<Job>),
    /// The GPU-owner thread is gone.
    Closed(Box<Job>),
}

/// The producer side of the queue, held by the gRPC handlers.
#[derive(Debug, Clone)]
pub struct Submitter {
    sender: Sender<Job>,
    capacity: usize,
    counts: Arc<QueueCounts>,
}

/// What the queue counts, shared by both ends.
#[derive(Debug, Default)]
pub struct QueueCounts {
    /// Jobs submitted and not yet running or answered (in the channel or held by the
    /// batcher).
    waiting: Arc<AtomicUsize>,
    /// Jobs ever submitted.
    arrived: AtomicU64,
}

impl QueueCounts {
    /// Jobs waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Jobs ever submitted.
    pub fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::Relaxed)
    }
}

impl Submitter {
    /// Adds a job without blocking.
    pub fn submit(&self, mut job: Job) -> Result<(), SubmitError> {
        // Reserve a place, exactly: handlers on several threads submit at once.
        let reserved =
            self.counts
                .waiting
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                    (waiting < self.capacity).then_some(waiting + 1)
                });
        if reserved.is_err() {
            return Err(SubmitError::Full(Box::new(job)));
        }
        job.hold_place(&self.counts.waiting);
        self.counts.arrived.fetch_add(1, Ordering::Relaxed);
        self.sender.send(job).map_err(|e| {
            let mut job = e.into_inner();
            job.leave_queue();
            SubmitError::Closed(Box::new(job))
        })
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.counts.waiting()
    }

    /// The most jobs that may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counts both ends share.
    pub fn counts(&self) -> &Arc<QueueCounts> {
        &self.counts
    }

    /// The channel itself, for an instance that gives back jobs it took and will not run
    /// now (they keep the places they hold).
    pub fn channel(&self) -> Sender<Job> {
        self.sender.clone()
    }
}

/// The queue of at most `capacity` waiting jobs: the handlers' [`Submitter`], and the
/// GPU-owner thread's receiver and counts.
pub fn queue(capacity: usize) -> (Submitter, Receiver<Job>, Arc<QueueCounts>) {
    let (sender, receiver) = unbounded();
    let counts = Arc::new(QueueCounts::default());
    let submitter = Submitter {
        sender,
        capacity,
        counts: Arc::clone(&counts),
    };
    (submitter, receiver, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::job;

    #[test]
    fn a_full_queue_refuses_at_once_and_a_running_job_frees_its_place() {
        let (submitter, queue, counts) = queue(1);
        let (a, _ra) = job(1, 2, 1);
        let (b, _rb) = job(1, 2, 2);
        submitter.submit(a).unwrap();
        let (c, _rc) = job(1, 2, 3);
        assert!(matches!(submitter.submit(b), Err(SubmitError::Full(_))));
        assert_eq!(submitter.depth(), 1);
        let mut running = queue.recv().unwrap();
        running.leave_queue();
        assert_eq!(counts.waiting(), 0);
        submitter.submit(c).unwrap();
    }
}
