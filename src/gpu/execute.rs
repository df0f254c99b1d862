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

//! One execution on a GPU-owner thread: the gathered jobs leave the queue, their inputs
//! are joined, the session runs them, each job is answered with its rows (or the typed
//! failure), and the version's recorder counts it for `ModelStatistics` and Prometheus alike.
//! A CUDA error that ends the device's context (an illegal address, an uncorrectable ECC
//! error, a lost device) is told apart from a failure of the batch: its jobs are answered
//! UNAVAILABLE, to be sent again, and the thread takes its device out of service.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::owner::Shared;
use super::served::Served;
use crate::model::assemble;
use crate::model::job::{Job, JobFailure};

/// What CUDA says, in ONNX Runtime's message, when an error ends the context: the device
/// serves nothing more until the process is restarted (CUDA's "sticky" errors, and a device
/// gone).
const DEVICE_FAILURES: [&str; 14] = [
    "cudaErrorIllegalAddress",
    "an illegal memory access was encountered",
    "cudaErrorLaunchFailure",
    "unspecified launch failure",
    "cudaErrorECCUncorrectable",
    "uncorrectable ECC error",
    "cudaErrorAssert",
    "device-side assert triggered",
    "cudaErrorHardwareStackError",
    "cudaErrorIllegalInstruction",
    "cudaErrorMisalignedAddress",
    "cudaErrorDevicesUnavailable",
    "cudaErrorNoDevice",
    "cudaErrorUnknown",
];

/// Whether `message`, an execution's failure on a GPU, ends the device's context.
fn ends_the_device(message: &str) -> bool {
    DEVICE_FAILURES
        .iter()
        .any(|marker| message.contains(marker))
}

/// Runs one execution of `served` for `batch` and answers each job with its rows. Returns
/// why the device (`device`, the thread's) failed, when the execution ended it.
pub(super) fn execute(
    served: &mut Served,
    mut batch: Vec<Job>,
    shared: &Shared<'_>,
    device: Option<i32>,
) -> Option<String> {
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
    let inputs = assemble::concatenate(&mut batch, &model.signature);
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
    // Test builds only: `gpu::device_fails@NAME` fails the thread NAME's device.
    #[cfg(feature = "failpoints")]
    let outcome = if crate::failpoint::fires(&format!("gpu::device_fails@{}", shared.lane)) {
        drop(inputs);
        Err(crate::backend::RunError::Runtime {
            message: "CUDA failure 999: unknown error (cudaErrorUnknown), from fail point gpu::device_fails"
                .to_string(),
        })
    } else {
        served.session.run(inputs)
    };
    #[cfg(not(feature = "failpoints"))]
    let outcome = served.session.run(inputs);
    clock.end();
    let ran = Instant::now();
    recorder.executed(requests, rows, inputs_ready - started, ran - inputs_ready);
    let mut device_failure = None;
    match outcome {
        Ok(outputs) => assemble::split_and_answer(batch, outputs, &model.signature),
        Err(error) if stopping.load(Ordering::Relaxed) => {
            log::warn!("an execution of {rows} row(s) was ended by the shutdown: {error}");
            for job in batch {
                job.answer(Err(JobFailure::Stopped));
            }
        }
        Err(error) if device.is_some_and(|_| ends_the_device(&error.to_string())) => {
            let device = device.unwrap_or_default();
            let reason = error.to_string();
            log::error!(
                "an execution of model {:?} version {} ({rows} row(s)) on GPU {device} failed with an error that ends the device: {reason}",
                model.name,
                model.version
            );
            for job in batch {
                job.answer(Err(JobFailure::DeviceFailed {
                    device,
                    reason: reason.clone(),
                }));
            }
            device_failure = Some(reason);
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
    device_failure
}

/// Answers a job that will not run.
pub fn refuse_job(job: Job, failure: JobFailure) {
    log::debug!("not running a request: {failure:?}");
    job.answer(Err(failure));
}

#[cfg(test)]
mod tests {
    use super::ends_the_device;

    #[test]
    fn only_errors_that_end_the_context_take_the_device_out() {
        // As ONNX Runtime's CUDA provider words them.
        assert!(ends_the_device(
            "CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; hostname=h"
        ));
        assert!(ends_the_device(
            "CUDA error cudaErrorECCUncorrectable:uncorrectable ECC error encountered"
        ));
        // Out of memory, a bad shape: the batch failed, the device serves on.
        assert!(!ends_the_device(
            "CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; expr=cudaMalloc"
        ));
        assert!(!ends_the_device(
            "Got invalid dimensions for input: x for the following indices"
        ));
    }
}
