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

//! The dynamic batcher: one queue of inference jobs that the gRPC handlers (on the
//! completion-queue threads) fill without blocking, through the model's handle, and that the
//! GPU-owner thread drains. The GPU-owner thread takes the oldest job and gathers others that
//! can run with it, up to `max-batch-size` rows (and, for models of token sequences,
//! `max-batch-tokens` padded tokens), then runs them as one execution and answers each job
//! with its own rows. Jobs whose caller gave up (cancelled, vanished, deadline passed) are
//! answered without running.
//!
//! How long a batch waits for company is the [`DelayMode`]: `fixed` waits up to
//! `max-queue-delay` from the oldest job's arrival; `adaptive` (the default) waits only when
//! company is coming (other jobs waited already, or more than one arrived since the previous
//! batch began to form) and no job that cannot join is waiting for its turn. A lone caller's
//! request runs at once.
//!
//! Requests of token sequences of different lengths run together when the model allows
//! ([`Padding`]): their sequence inputs are padded to the longest in the batch, and outputs
//! whose size follows the length are cut back to each job's own. Gathering then prefers the
//! jobs of lengths nearest the oldest's, so that padding wastes little, and looks past a job
//! that does not fit (it waits for a later execution, in its turn).
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::job::{Job, JobFailure};
use crate::config::DelayMode;
use crate::tensor::Padding;

/// How often a batch that is not full looks for more jobs while its oldest job may wait.
const GATHER_POLL: Duration = Duration::from_micros(100);

/// How jobs are gathered into executions.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// The most rows in one execution; 0: one job per execution.
    pub max_rows: usize,
    /// The most padded tokens (rows times the longest length) in one execution of a model of
    /// token sequences; 0: no limit.
    pub max_tokens: usize,
    /// The largest share of a batch's tokens that may be padding (0 to 1).
    pub max_padding: f64,
    /// How long the oldest job may wait for others to join.
    pub max_delay: Duration,
    /// When waiting for company is worth it.
    pub delay_mode: DelayMode,
}

/// Gathers the jobs that run with the oldest of `pending` (jobs taken off the queue that have
/// not run yet), taking new ones from `queue`: up to `max_rows` rows and `max_tokens` padded
/// tokens, waiting for company per the policy's [`DelayMode`] (`company_coming`: callers
/// are concurrent, by the arrivals since the previous batch began to form). Jobs that do not fit stay in `pending`, in their order;
/// jobs whose callers have gone are answered through `refuse` and skipped. Waiting also ends
/// as soon as `interrupted` says so (a command for the GPU-owner thread, such as a heartbeat,
/// must not wait out a long delay). Empty when every pending job was refused.
pub fn gather(
    pending: &mut VecDeque<Job>,
    queue: &Receiver<Job>,
    policy: BatchPolicy,
    padding: Option<&Padding>,
    company_coming: bool,
    mut refuse: impl FnMut(Job, JobFailure),
    interrupted: impl Fn() -> bool,
) -> Vec<Job> {
    pending.extend(queue.try_iter());
    let now = Instant::now();
    let first = loop {
        let Some(job) = pending.pop_front() else {
            return Vec::new();
        };
        match job.refusal(now) {
            Some(failure) => refuse(job, failure),
            None => break job,
        }
    };
    let padded: &[Option<i64>] = padding.map_or(&[], |p| &p.inputs);
    let mut batch = Batch {
        rows: first.rows,
        longest: first.length(padded),
        tokens: first.rows * first.length(padded),
        jobs: vec![first],
        padded,
        policy,
    };
    if policy.max_rows == 0 {
        return batch.jobs;
    }
    // What waits already, nearest the first job's length first (a stable sort: in arrival
    // order among equals).
    let target = batch.longest;
    let mut waiting: Vec<Option<Job>> = pending.drain(..).map(Some).collect();
    let mut order: Vec<usize> = (0..waiting.len()).collect();
    order.sort_by_key(|&i| {
        waiting[i]
            .as_ref()
            .map_or(0, |job| job.length(padded).abs_diff(target))
    });
    for i in order {
        if batch.full() {
            break;
        }
        let Some(job) = waiting[i].take() else {
            continue;
        };
        if let Some(failure) = job.refusal(now) {
            refuse(job, failure);
        } else if batch.fits(&job) {
            batch.push(job);
        } else {
            waiting[i] = Some(job);
        }
    }
    pending.extend(waiting.into_iter().flatten());
    // Adaptive: wait while company is coming (callers are concurrent, or others were
    // waiting), but never while a job that cannot join waits for its turn.
    let adaptive = policy.delay_mode == DelayMode::Adaptive;
    let company = company_coming || batch.jobs.len() > 1;
    let until = batch.jobs[0].enqueued + policy.max_delay;
    while !batch.full() && (!adaptive || (company && pending.is_empty())) {
        let next = match queue.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= until || interrupted() {
                    break;
                }
                // Look again a little later rather than waking at every arrival: under load
                // that saves a wake-up (and a context switch) per request.
                std::thread::sleep((until - now).min(GATHER_POLL));
                continue;
            }
        };
        if let Some(failure) = next.refusal(Instant::now()) {
            refuse(next, failure);
        } else if batch.fits(&next) {
            batch.push(next);
        } else {
            pending.push_back(next);
        }
    }
    batch.jobs
}

/// A batch being gathered.
struct Batch<'a> {
    jobs: Vec<Job>,
    rows: usize,
    /// The longest sequence length among the jobs (0 without padding).
    longest: usize,
    /// The jobs' own tokens (rows times each job's length), without the batch's padding.
    tokens: usize,
    padded: &'a [Option<i64>],
    policy: BatchPolicy,
}

impl Batch<'_> {
    fn full(&self) -> bool {
        self.rows >= self.policy.max_rows
    }

    /// Whether `job` can join: its shapes fit the first job's, and the rows, padded tokens
    /// and the share of padding stay within the policy (past it, padding costs more than
    /// batching saves).
    fn fits(&self, job: &Job) -> bool {
        let rows = self.rows + job.rows;
        let length = job.length(self.padded);
        let padded = rows * self.longest.max(length);
        let own = self.tokens + job.rows * length;
        rows <= self.policy.max_rows
            && (self.policy.max_tokens == 0 || padded <= self.policy.max_tokens)
            && padded as f64 * (1.0 - self.policy.max_padding) <= own as f64
            && self.jobs[0].fits_with(job, self.padded)
    }

    fn push(&mut self, job: Job) {
        let length = job.length(self.padded);
        self.rows += job.rows;
        self.tokens += job.rows * length;
        self.longest = self.longest.max(length);
        self.jobs.push(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::queue::queue;
    use crate::model::testing::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const POLICY: BatchPolicy = BatchPolicy {
        max_rows: 4,
        max_tokens: 0,
        max_padding: 0.5,
        max_delay: Duration::from_millis(20),
        delay_mode: DelayMode::Fixed,
    };

    /// Gathers from `pending` (the first job) and the queue, as the GPU-owner thread does.
    fn gather_with(
        first: Job,
        queue: &Receiver<Job>,
        policy: BatchPolicy,
        padding: Option<&Padding>,
        company_coming: bool,
    ) -> (Vec<Job>, VecDeque<Job>) {
        let mut pending = VecDeque::from([first]);
        let batch = gather(
            &mut pending,
            queue,
            policy,
            padding,
            company_coming,
            |job, why| job.answer(Err(why)),
            || false,
        );
        (batch, pending)
    }

    #[test]
    fn gathers_until_the_row_limit_and_keeps_what_does_not_fit() {
        let (submitter, queue, counts) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (second, _r1) = job(2, 2, 1);
        let (third, _r2) = job(2, 2, 2);
        submitter.submit(second).unwrap();
        submitter.submit(third).unwrap();
        assert_eq!(counts.waiting(), 2);
        let (batch, pending) = gather_with(first, &queue, POLICY, None, false);
        assert_eq!(batch.iter().map(|j| j.rows).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(pending.iter().map(|j| j.rows).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_fixed_delay_waits_for_company() {
        let (_submitter, queue, _) = queue(8);
        let (first, _r) = job(1, 2, 0);
        let started = Instant::now();
        let (batch, _) = gather_with(first, &queue, POLICY, None, false);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(15));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_adaptive_delay_never_holds_a_lone_request() {
        let (_submitter, queue, _) = queue(8);
        let adaptive = BatchPolicy {
            max_delay: Duration::from_secs(30),
            delay_mode: DelayMode::Adaptive,
            ..POLICY
        };
        let (first, _r) = job(1, 2, 0);
        let started = Instant::now();
        let (batch, _) = gather_with(first, &queue, adaptive, None, false);
        assert_eq!(batch.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "held a lone request"
        );
    }

    #[test]
    fn the_adaptive_delay_waits_when_requests_arrived_during_the_last_execution() {
        let (submitter, queue, _) = queue(8);
        let adaptive = BatchPolicy {
            max_delay: Duration::from_secs(30),
            delay_mode: DelayMode::Adaptive,
            ..POLICY
        };
        let (first, _r) = job(1, 2, 0);
        // Company arrives a little later: the batch waits for it and fills up.
        let late = std::thread::spawn(move || {
            let mut receivers = Vec::new();
            for tag in 1..4 {
                std::thread::sleep(Duration::from_millis(5));
                let (next, r) = job(1, 2, tag);
                submitter.submit(next).unwrap();
                receivers.push(r);
            }
            receivers
        });
        let (batch, _) = gather_with(first, &queue, adaptive, None, true);
        let _receivers = late.join().unwrap();
        assert_eq!(batch.len(), 4);
    }

    #[test]
    fn a_waiting_command_ends_the_wait_for_company() {
        let (_submitter, queue, _) = queue(8);
        let (first, _r) = job(1, 2, 0);
        let long = BatchPolicy {
            max_delay: Duration::from_secs(30),
            ..POLICY
        };
        let started = Instant::now();
        let batch = gather(
            &mut VecDeque::from([first]),
            &queue,
            long,
            None,
            true,
            |_, _| {},
            || started.elapsed() >= Duration::from_millis(10),
        );
        assert_eq!(batch.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited out the delay"
        );
    }

    #[test]
    fn no_batching_runs_one_job() {
        let (submitter, queue, _) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (second, _r1) = job(1, 2, 1);
        submitter.submit(second).unwrap();
        let policy = BatchPolicy {
            max_rows: 0,
            ..POLICY
        };
        let (batch, pending) = gather_with(first, &queue, policy, None, false);
        assert_eq!(batch.len(), 1);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn abandoned_and_expired_jobs_are_refused_not_gathered() {
        let (submitter, queue, counts) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (mut gone, r1) = job(1, 2, 1);
        gone.caller = Arc::new(AtomicBool::new(true));
        let (mut late, r2) = job(1, 2, 2);
        late.deadline = Some(Instant::now());
        submitter.submit(gone).unwrap();
        submitter.submit(late).unwrap();
        let (batch, pending) = gather_with(first, &queue, POLICY, None, false);
        assert_eq!(batch.len(), 1);
        assert!(pending.is_empty());
        assert_eq!(r1.recv().unwrap(), Err(JobFailure::Cancelled));
        assert_eq!(r2.recv().unwrap(), Err(JobFailure::DeadlineExceeded));
        assert_eq!(counts.waiting(), 0);
    }

    #[test]
    fn gathering_looks_past_a_job_of_another_shape() {
        let (submitter, queue, _) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (wider, _r1) = job(1, 3, 1);
        let (same, _r2) = job(1, 2, 2);
        submitter.submit(wider).unwrap();
        submitter.submit(same).unwrap();
        let (batch, pending) = gather_with(first, &queue, POLICY, None, false);
        assert_eq!(
            batch
                .iter()
                .map(|j| j.inputs[0].data[0])
                .collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(
            pending.len(),
            1,
            "the wider job waits for its own execution"
        );
    }

    /// Gathers a job of length `first` and queued jobs of `queued` lengths (one row each) under
    /// `policy`: the lengths gathered, and how many stay pending.
    fn gather_lengths(first: usize, queued: &[usize], policy: BatchPolicy) -> (Vec<i64>, usize) {
        let signature = sequence_model();
        let (submitter, queue, _) = queue(8);
        let mut receivers = Vec::new();
        for &length in queued {
            let (job, r) = job_of(vec![ids(&[&vec![1; length]])], 1);
            submitter.submit(job).unwrap();
            receivers.push(r);
        }
        let (first, _r) = job_of(vec![ids(&[&vec![1; first]])], 1);
        let (batch, pending) =
            gather_with(first, &queue, policy, signature.padding.as_ref(), false);
        let lengths = batch.iter().map(|j| j.inputs[0].shape[1]).collect();
        (lengths, pending.len())
    }

    #[test]
    fn the_token_budget_and_nearest_lengths_shape_the_batch() {
        // 2 rows of 40 is 80 tokens, over the budget of 48; 2 rows of 12 fit.
        let policy = BatchPolicy {
            max_tokens: 48,
            ..POLICY
        };
        assert_eq!(gather_lengths(10, &[40, 12], policy), (vec![10, 12], 1));
    }

    #[test]
    fn a_batch_holds_no_more_padding_than_its_share() {
        // 10 and 30 together are 60 tokens of which 20 padding (33%); 10 and 11, 1 in 22.
        let policy = BatchPolicy {
            max_padding: 0.2,
            ..POLICY
        };
        assert_eq!(gather_lengths(10, &[30, 11], policy), (vec![10, 11], 1));
    }
}
