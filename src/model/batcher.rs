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

//! The dynamic batcher: one bounded queue of inference jobs that the gRPC handlers (on the
//! completion-queue threads) fill without blocking, through the model's handle, and that the
//! GPU-owner thread drains. The GPU-owner thread takes the oldest job, gathers more until it
//! has `max-batch-size` rows or the oldest has waited `max-queue-delay`, runs them as one
//! execution and answers each job with its own rows. Jobs whose caller gave up (cancelled,
//! vanished, deadline passed) are answered without running.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

use super::job::{Job, JobFailure};
use crate::backend::RunError;
use crate::tensor::{row_offsets, DataType, Tensor};

/// How often a batch that is not full looks for more jobs while its oldest job may wait.
const GATHER_POLL: Duration = Duration::from_micros(100);

/// Why a job could not join the queue.
#[derive(Debug)]
pub enum SubmitError {
    /// `max-queue-size` jobs wait already.
    Full(Job),
    /// The GPU-owner thread is gone.
    Closed(Job),
}

/// The producer side of the queue, held by the gRPC handlers.
#[derive(Debug, Clone)]
pub struct Submitter {
    sender: Sender<Job>,
    capacity: usize,
}

impl Submitter {
    /// Adds a job without blocking.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.sender.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => SubmitError::Full(job),
            TrySendError::Disconnected(job) => SubmitError::Closed(job),
        })
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.sender.len()
    }

    /// The most jobs that may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The bounded queue: the handlers' [`Submitter`] and the GPU-owner thread's receiver.
pub fn queue(capacity: usize) -> (Submitter, Receiver<Job>) {
    let (sender, receiver) = bounded(capacity);
    (Submitter { sender, capacity }, receiver)
}

/// How jobs are gathered into executions.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// The most rows in one execution; 0: one job per execution.
    pub max_rows: usize,
    /// How long the oldest job may wait for others to join.
    pub max_delay: Duration,
}

/// Gathers the jobs that run with `first`: from `held` (a job that did not fit last time) and
/// then the queue, until `max_rows` rows or the first job's delay is over. A job that does not
/// fit is left in `held` for the next execution; jobs whose callers have gone are answered
/// through `refuse` and skipped. Waiting also ends as soon as `interrupted` says so (a command
/// for the GPU-owner thread, such as a heartbeat, must not wait out a long delay).
pub fn gather(
    first: Job,
    queue: &Receiver<Job>,
    policy: BatchPolicy,
    held: &mut Option<Job>,
    mut refuse: impl FnMut(Job, JobFailure),
    interrupted: impl Fn() -> bool,
) -> Vec<Job> {
    let until = first.enqueued + policy.max_delay;
    let mut rows = first.rows;
    let mut batch = vec![first];
    if policy.max_rows == 0 {
        return batch;
    }
    while rows < policy.max_rows {
        let next = match held.take() {
            Some(job) => job,
            None => match queue.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= until || interrupted() {
                        break;
                    }
                    // Look again a little later rather than waking at every arrival: under
                    // load that saves a wake-up (and a context switch) per request.
                    std::thread::sleep((until - now).min(GATHER_POLL));
                    continue;
                }
            },
        };
        if let Some(failure) = next.refusal(Instant::now()) {
            refuse(next, failure);
            continue;
        }
        if rows + next.rows > policy.max_rows || !batch[0].fits_with(&next) {
            *held = Some(next);
            break;
        }
        rows += next.rows;
        batch.push(next);
    }
    batch
}

/// Concatenates the jobs' inputs along dimension 0: one tensor per model input.
pub fn concatenate(batch: &[Job]) -> Vec<Tensor> {
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    if batch.len() == 1 {
        return first.inputs.clone();
    }
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    (0..first.inputs.len())
        .map(|input| {
            let mut shape = first.inputs[input].shape.clone();
            if let Some(dim0) = shape.first_mut() {
                *dim0 = rows as i64;
            }
            let bytes = batch.iter().map(|job| job.inputs[input].data.len()).sum();
            let mut data = Vec::with_capacity(bytes);
            for job in batch {
                data.extend_from_slice(&job.inputs[input].data);
            }
            Tensor { shape, data }
        })
        .collect()
}

/// Splits the execution's outputs (one per model output, of the `datatypes` the model gives,
/// `rows` rows each) back into each job's rows, and answers every job with the outputs it
/// asked for. Fails every job if an output it asks for does not have the batch's rows.
pub fn split_and_answer(batch: Vec<Job>, outputs: Vec<Tensor>, datatypes: &[DataType]) {
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
        let mine = job
            .outputs
            .iter()
            .map(|&index| outputs[index].take().unwrap_or_default())
            .collect();
        job.answer_outputs(mine);
        return;
    }
    // Only what some job asks for: an output that is not served comes back empty and is
    // never split. Each output's row boundaries, in bytes.
    let asked: BTreeSet<usize> = batch
        .iter()
        .flat_map(|job| job.outputs.iter().copied())
        .collect();
    let mut offsets: Vec<Vec<usize>> = vec![Vec::new(); outputs.len()];
    for &index in &asked {
        let tensor = &outputs[index];
        let datatype = datatypes.get(index).copied().unwrap_or(DataType::Uint8);
        match row_offsets(datatype, &tensor.shape, &tensor.data, rows) {
            Some(found) => offsets[index] = found,
            None => {
                let error = RunError::OutputRows {
                    index,
                    shape: tensor.shape.clone(),
                    rows,
                };
                for job in batch {
                    job.answer(Err(JobFailure::Execution(error.clone())));
                }
                return;
            }
        }
    }
    let mut start_row = 0;
    for job in batch {
        let mine = job
            .outputs
            .iter()
            .map(|&index| {
                let tensor = &outputs[index];
                let rows = &offsets[index];
                let mut shape = tensor.shape.clone();
                shape[0] = job.rows as i64;
                Tensor {
                    shape,
                    data: tensor.data[rows[start_row]..rows[start_row + job.rows]].to_vec(),
                }
            })
            .collect();
        start_row += job.rows;
        job.answer_outputs(mine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::JobResult;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    fn job(rows: usize, width: i64, tag: u8) -> (Job, mpsc::Receiver<JobResult>) {
        let (tx, rx) = mpsc::channel();
        let input = Tensor {
            shape: vec![rows as i64, width],
            data: vec![tag; rows * width as usize],
        };
        let job = Job::new(
            vec![input],
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

    const POLICY: BatchPolicy = BatchPolicy {
        max_rows: 4,
        max_delay: Duration::from_millis(20),
    };

    #[test]
    fn gathers_until_the_row_limit_and_holds_what_does_not_fit() {
        let (submitter, queue) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (second, _r1) = job(2, 2, 1);
        let (third, _r2) = job(2, 2, 2);
        submitter.submit(second).unwrap();
        submitter.submit(third).unwrap();
        let mut held = None;
        let batch = gather(
            first,
            &queue,
            POLICY,
            &mut held,
            |_, _| panic!("no refusal"),
            || false,
        );
        assert_eq!(batch.iter().map(|j| j.rows).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(held.as_ref().map(|j| j.rows), Some(2));
    }

    #[test]
    fn waits_at_most_the_delay_for_company() {
        let (_submitter, queue) = queue(8);
        let (first, _r) = job(1, 2, 0);
        let started = Instant::now();
        let mut held = None;
        let batch = gather(first, &queue, POLICY, &mut held, |_, _| {}, || false);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(15));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_waiting_command_ends_the_wait_for_company() {
        let (_submitter, queue) = queue(8);
        let (first, _r) = job(1, 2, 0);
        let long = BatchPolicy {
            max_rows: 4,
            max_delay: Duration::from_secs(30),
        };
        let started = Instant::now();
        let batch = gather(
            first,
            &queue,
            long,
            &mut None,
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
        let (submitter, queue) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (second, _r1) = job(1, 2, 1);
        submitter.submit(second).unwrap();
        let policy = BatchPolicy {
            max_rows: 0,
            ..POLICY
        };
        let batch = gather(first, &queue, policy, &mut None, |_, _| {}, || false);
        assert_eq!(batch.len(), 1);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn abandoned_and_expired_jobs_are_refused_not_gathered() {
        let (submitter, queue) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (gone, _r1) = job(1, 2, 1);
        gone.abandoned.store(true, Ordering::Relaxed);
        let (mut late, _r2) = job(1, 2, 2);
        late.deadline = Some(Instant::now());
        submitter.submit(gone).unwrap();
        submitter.submit(late).unwrap();
        let mut refused = Vec::new();
        let batch = gather(
            first,
            &queue,
            POLICY,
            &mut None,
            |job, why| {
                refused.push(why);
                job.answer(Err(JobFailure::Cancelled));
            },
            || false,
        );
        assert_eq!(batch.len(), 1);
        assert_eq!(
            refused,
            [JobFailure::Cancelled, JobFailure::DeadlineExceeded]
        );
    }

    #[test]
    fn different_row_shapes_are_not_mixed() {
        let (submitter, queue) = queue(8);
        let (first, _r0) = job(1, 2, 0);
        let (wider, _r1) = job(1, 3, 1);
        submitter.submit(wider).unwrap();
        let mut held = None;
        let batch = gather(first, &queue, POLICY, &mut held, |_, _| {}, || false);
        assert_eq!(batch.len(), 1);
        assert!(held.is_some());
    }

    #[test]
    fn concatenates_and_splits_rows_back_to_each_job() {
        let (a, ra) = job(1, 2, 7);
        let (b, rb) = job(2, 2, 9);
        let batch = vec![a, b];
        let inputs = concatenate(&batch);
        assert_eq!(inputs[0].shape, [3, 2]);
        assert_eq!(inputs[0].data, [7, 7, 9, 9, 9, 9]);
        // An "identity model": the output is the input.
        split_and_answer(batch, inputs, &[DataType::Uint8]);
        let (a_out, a_indices) = ra.recv().unwrap().unwrap();
        let (b_out, _) = rb.recv().unwrap().unwrap();
        assert_eq!(a_indices, [0]);
        assert_eq!(a_out[0].shape, [1, 2]);
        assert_eq!(a_out[0].data, [7, 7]);
        assert_eq!(b_out[0].shape, [2, 2]);
        assert_eq!(b_out[0].data, [9, 9, 9, 9]);
    }

    #[test]
    fn an_output_no_job_asks_for_is_not_split() {
        let (a, ra) = job(1, 2, 3);
        let (b, rb) = job(1, 2, 4);
        let batch = vec![a, b];
        let inputs = concatenate(&batch);
        // Output 1 (say, a BYTES output nobody may ask for) comes back empty.
        split_and_answer(
            batch,
            vec![inputs[0].clone(), Tensor::default()],
            &[DataType::Uint8, DataType::Bytes],
        );
        assert_eq!(ra.recv().unwrap().unwrap().0[0].data, [3, 3]);
        assert_eq!(rb.recv().unwrap().unwrap().0[0].data, [4, 4]);
    }

    #[test]
    fn an_output_without_the_batch_rows_fails_every_job() {
        let (a, ra) = job(1, 2, 1);
        let (b, rb) = job(1, 2, 2);
        let wrong = Tensor {
            shape: vec![1, 2],
            data: vec![0; 2],
        };
        split_and_answer(vec![a, b], vec![wrong], &[DataType::Uint8]);
        for r in [ra, rb] {
            assert!(matches!(
                r.recv().unwrap(),
                Err(JobFailure::Execution(RunError::OutputRows { index: 0, .. }))
            ));
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let (submitter, _queue) = queue(1);
        let (a, _ra) = job(1, 2, 1);
        let (b, _rb) = job(1, 2, 2);
        submitter.submit(a).unwrap();
        assert!(matches!(submitter.submit(b), Err(SubmitError::Full(_))));
        assert_eq!(submitter.depth(), 1);
    }
}
