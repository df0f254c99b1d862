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

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender, TryRecvError};

use super::job::{Job, JobFailure};
use crate::backend::RunError;
use crate::config::DelayMode;
use crate::tensor::{cut_axis, row_offsets, DataType, Padding, Signature, Tensor};

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
            return Err(SubmitError::Full(job));
        }
        job.hold_place(&self.counts.waiting);
        self.counts.arrived.fetch_add(1, Ordering::Relaxed);
        self.sender.send(job).map_err(|e| {
            let mut job = e.into_inner();
            job.leave_queue();
            SubmitError::Closed(job)
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

/// Concatenates the jobs' inputs along dimension 0: one tensor per model input. Inputs with
/// a sequence axis in the signature's [`Padding`] are first padded to the batch's longest.
pub fn concatenate(batch: &[Job], signature: &Signature) -> Vec<Tensor> {
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    if batch.len() == 1 {
        return first.inputs.clone();
    }
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    let padded: &[Option<i64>] = signature.padding.as_ref().map_or(&[], |p| &p.inputs);
    (0..first.inputs.len())
        .map(|input| {
            let mut shape = first.inputs[input].shape.clone();
            if let Some(dim0) = shape.first_mut() {
                *dim0 = rows as i64;
            }
            let pad = padded.get(input).copied().flatten();
            let datatype = signature.inputs.get(input).map(|spec| spec.datatype);
            if let (Some(pad), Some(datatype)) = (pad, datatype) {
                let longest = batch
                    .iter()
                    .filter_map(|job| job.inputs[input].shape.get(1).copied())
                    .max()
                    .unwrap_or(0);
                shape[1] = longest;
                return pad_and_join(batch, input, &shape, &datatype.encode_integer(pad));
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

/// Joins input `input` of every job, each row's axis 1 padded with `pad` (one element's
/// bytes) to `shape[1]`.
fn pad_and_join(batch: &[Job], input: usize, shape: &[i64], pad: &[u8]) -> Tensor {
    let longest = shape[1] as usize;
    // Bytes per position: the element and any axes past the sequence axis.
    let per_position = pad.len() * shape[2..].iter().map(|&d| d as usize).product::<usize>();
    let mut data = Vec::with_capacity(shape[0] as usize * longest * per_position);
    for job in batch {
        let tensor = &job.inputs[input];
        let length = tensor.shape.get(1).map_or(0, |&l| l as usize);
        let row_bytes = length * per_position;
        for row in 0..job.rows {
            data.extend_from_slice(&tensor.data[row * row_bytes..(row + 1) * row_bytes]);
            for _ in 0..(longest - length) * per_position / pad.len() {
                data.extend_from_slice(pad);
            }
        }
    }
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// Splits the execution's outputs (one per model output, `rows` rows each) back into each
/// job's rows, outputs whose axis follows the sequence length cut back to the job's own,
/// and answers every job with the outputs it asked for. Fails every job if an output it asks
/// for does not have the batch's rows.
pub fn split_and_answer(batch: Vec<Job>, outputs: Vec<Tensor>, signature: &Signature) {
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
        // An output asked for twice (as itself and pooled, say) is copied for the first.
        let mine = job
            .outputs
            .iter()
            .enumerate()
            .map(|(i, &index)| {
                if job.outputs[i + 1..].contains(&index) {
                    outputs[index].clone().unwrap_or_default()
                } else {
                    outputs[index].take().unwrap_or_default()
                }
            })
            .collect();
        job.answer_outputs(mine);
        return;
    }
    let padding = signature.padding.as_ref();
    let padded: &[Option<i64>] = padding.map_or(&[], |p| &p.inputs);
    // Only what some job asks for: an output that is not served comes back empty and is
    // never split. Each output's row boundaries, in bytes.
    let asked: BTreeSet<usize> = batch
        .iter()
        .flat_map(|job| job.outputs.iter().copied())
        .collect();
    let mut offsets: Vec<Vec<usize>> = vec![Vec::new(); outputs.len()];
    for &index in &asked {
        let tensor = &outputs[index];
        let datatype = signature
            .outputs
            .get(index)
            .map_or(DataType::Uint8, |spec| spec.datatype);
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
        let length = job.length(padded);
        let mine = job
            .outputs
            .iter()
            .map(|&index| {
                let tensor = &outputs[index];
                let rows = &offsets[index];
                let mut shape = tensor.shape.clone();
                shape[0] = job.rows as i64;
                let data = &tensor.data[rows[start_row]..rows[start_row + job.rows]];
                let axis = padding.and_then(|p| p.outputs.get(index).copied().flatten());
                match axis {
                    Some(axis) if shape.get(axis).is_some_and(|&l| l as usize > length) => {
                        cut_axis(&shape, data, axis, length)
                    }
                    _ => Tensor {
                        shape,
                        data: data.to_vec(),
                    },
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
    use crate::tensor::TensorSpec;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    fn job(rows: usize, width: i64, tag: u8) -> (Job, mpsc::Receiver<JobResult>) {
        let input = Tensor {
            shape: vec![rows as i64, width],
            data: vec![tag; rows * width as usize],
        };
        job_of(vec![input], rows)
    }

    fn job_of(inputs: Vec<Tensor>, rows: usize) -> (Job, mpsc::Receiver<JobResult>) {
        Job::for_tests(inputs, rows)
    }

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
        let (gone, r1) = job(1, 2, 1);
        gone.abandoned.store(true, Ordering::Relaxed);
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

    /// A model of token ids `[-1, -1]` (INT64) whose output `[-1, -1, 2]` follows the length.
    fn sequence_model() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input_ids".into(),
                datatype: DataType::Int64,
                dims: vec![-1, -1],
                labels: Vec::new(),
            }],
            outputs: vec![TensorSpec {
                name: "tokens".into(),
                datatype: DataType::Int64,
                dims: vec![-1, -1, 2],
                labels: Vec::new(),
            }],
            max_batch_size: 8,
            padding: Some(Padding {
                inputs: vec![Some(9)],
                outputs: vec![Some(1)],
            }),
            max_positions: None,
        }
    }

    fn ids(rows: &[&[i64]]) -> Tensor {
        let length = rows[0].len();
        Tensor {
            shape: vec![rows.len() as i64, length as i64],
            data: rows
                .iter()
                .flat_map(|r| r.iter().flat_map(|v| v.to_le_bytes()))
                .collect(),
        }
    }

    fn values(tensor: &Tensor) -> Vec<i64> {
        bytemuck::pod_collect_to_vec(&tensor.data)
    }

    #[test]
    fn sequences_of_different_lengths_are_padded_together_and_cut_back() {
        let signature = sequence_model();
        let (submitter, queue, _) = queue(8);
        let (short, r_short) = job_of(vec![ids(&[&[1, 2]])], 1);
        let (long, r_long) = job_of(vec![ids(&[&[3, 4, 5, 6], &[7, 8, 9, 1]])], 2);
        submitter.submit(long).unwrap();
        let (batch, _) = gather_with(short, &queue, POLICY, signature.padding.as_ref(), false);
        assert_eq!(batch.len(), 2);
        let inputs = concatenate(&batch, &signature);
        assert_eq!(inputs[0].shape, [3, 4]);
        assert_eq!(values(&inputs[0]), [1, 2, 9, 9, 3, 4, 5, 6, 7, 8, 9, 1]);
        // A model that repeats each id twice: [rows, length, 2].
        let repeated: Vec<i64> = values(&inputs[0]).iter().flat_map(|&v| [v, v]).collect();
        let output = Tensor {
            shape: vec![3, 4, 2],
            data: bytemuck::cast_slice(&repeated).to_vec(),
        };
        split_and_answer(batch, vec![output], &signature);
        let (short_out, _) = r_short.recv().unwrap().unwrap();
        assert_eq!(short_out[0].shape, [1, 2, 2]);
        assert_eq!(values(&short_out[0]), [1, 1, 2, 2]);
        let (long_out, _) = r_long.recv().unwrap().unwrap();
        assert_eq!(long_out[0].shape, [2, 4, 2]);
        assert_eq!(values(&long_out[0])[..4], [3, 3, 4, 4]);
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

    #[test]
    fn concatenates_and_splits_rows_back_to_each_job() {
        let (a, ra) = job(1, 2, 7);
        let (b, rb) = job(2, 2, 9);
        let batch = vec![a, b];
        let signature = Signature::default();
        let inputs = concatenate(&batch, &signature);
        assert_eq!(inputs[0].shape, [3, 2]);
        assert_eq!(inputs[0].data, [7, 7, 9, 9, 9, 9]);
        // An "identity model": the output is the input.
        split_and_answer(batch, inputs, &signature);
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
        let signature = Signature {
            outputs: vec![
                TensorSpec {
                    name: "y".into(),
                    datatype: DataType::Uint8,
                    dims: vec![-1, 2],
                    labels: Vec::new(),
                },
                TensorSpec {
                    name: "s".into(),
                    datatype: DataType::Bytes,
                    dims: vec![-1],
                    labels: Vec::new(),
                },
            ],
            ..Default::default()
        };
        let inputs = concatenate(&batch, &signature);
        // Output 1 (say, a BYTES output nobody may ask for) comes back empty.
        split_and_answer(
            batch,
            vec![inputs[0].clone(), Tensor::default()],
            &signature,
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
        split_and_answer(vec![a, b], vec![wrong], &Signature::default());
        for r in [ra, rb] {
            assert!(matches!(
                r.recv().unwrap(),
                Err(JobFailure::Execution(RunError::OutputRows { index: 0, .. }))
            ));
        }
    }

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
