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

//! One execution on the GPU-owner thread: the gathered jobs leave the queue, their inputs
//! are joined, the session runs them, each job is answered with its rows (or the typed
//! failure), and the version's recorder counts it for `ModelStatistics` and Prometheus alike.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::owner::Shared;
use super::served::Served;
use crate::model::assemble;
use crate::model::job::{Job, JobFailure};

/// Runs one execution of `served` for `batch` and answers each job with its rows.
pub(super) fn execute(served: &mut Served, mut batch: Vec<Job>, shared: &Shared<'_>) {
    let (stopping, clock) = (shared.stopping, shared.execution);
    let model = Arc::clone(&served.model);
    let recorder = model.recorder();
    let started = Instant::now();
    let requests = batch.len() as u64;
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    for job in &mut batch {
        job.leave_queue();
        recorder.left_queue(started.saturating_duration_since(job.enqueued));
    }
    recorder.set_queue_depth(model.queue_counts().waiting());
    let inputs = assemble::concatenate(&batch, &model.signature);
    let inputs_ready = Instant::now();
    clock.begin();
    // Test builds only: holds the execution, so that tests can fill the queue or hold a long
    // execution. It holds after the queue times are counted: `inference_queue_seconds_count`
    // tells a test that its requests left the queue and are held here.
    // `gpu::execute@NAME` holds the executions of the thread NAME alone.
    #[cfg(feature = "failpoints")]
    {
        crate::failpoint::hold("gpu::execute");
        crate::failpoint::hold(&format!("gpu::execute@{}", shared.lane));
    }
    let outcome = served.session.run(inputs);
    clock.end();
    let ran = Instant::now();
    recorder.executed(requests, rows, inputs_ready - started, ran - inputs_ready);
    match outcome {
        Ok(outputs) => assemble::split_and_answer(batch, outputs, &model.signature),
        Err(error) if stopping.load(Ordering::Relaxed) => {
            log::warn!("an execution of {rows} row(s) was ended by the shutdown: {error}");
            for job in batch {
                job.answer(Err(JobFailure::Stopped));
            }
        }
        Err(error) => {
            log::warn!(
                "an execution of model {:?} version {} ({rows} row(s)) failed: {error}",
                model.name,
                model.version
            );
            for job in batch {
                job.answer(Err(JobFailure::Execution(error.clone())));
            }
        }
    }
    recorder.answered(requests, ran.elapsed());
}

/// Answers a job that will not run.
pub fn refuse_job(job: Job, failure: JobFailure) {
    log::debug!("not running a request: {failure:?}");
    job.answer(Err(failure));
}
