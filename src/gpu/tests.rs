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

//! The loader and the GPU-owner thread's loop, run here on a fake backend: versions made and
//! adopted, batching, round-robin between models, retirement.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::unbounded;

use super::clock::ExecutionClock;
use super::command::{GpuCommand, Interrupters, LoadOrder};
use super::lane::Pool;
use super::load::Target;
use super::owner::{Owner, Shared};
use super::{GpuLoader, Runtime};
use crate::backend::{
    Backend, Interrupter, LoadError, Provider, RunError, Session, SessionOptions,
};
use crate::config::{BatchingConfig, GpuConfig, GpuMode, Placement};
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, Transport};
use crate::model::job::{Job, JobResult};
use crate::model::ModelVersion;
use crate::tensor::{DataType, Signature, Tensor, TensorSpec};

/// A second backend in a few lines: an identity model, whose output is its input.
#[derive(Debug)]
struct Echo(Arc<Signature>);

impl Session for Echo {
    fn signature(&self) -> &Arc<Signature> {
        &self.0
    }

    fn provider(&self) -> Provider {
        Provider::Cpu
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        Ok(inputs)
    }

    fn interrupter(&self) -> Interrupter {
        Interrupter::new(|| {})
    }
}

/// Makes an [`Echo`] of every model file.
struct EchoBackend;

impl Backend for EchoBackend {
    fn load(
        &self,
        _path: &std::path::Path,
        _model: &[u8],
        _options: &SessionOptions,
    ) -> Result<Box<dyn Session>, LoadError> {
        Ok(Box::new(Echo(Arc::new(Signature {
            inputs: vec![spec("x")],
            outputs: vec![spec("y")],
            max_batch_size: 8,
            ..Default::default()
        }))))
    }
}

/// What an [`Owner`] borrows, and a loader on the echo backend, made for a test, with no GPU.
struct Parts {
    interrupters: Mutex<Interrupters>,
    execution: ExecutionClock,
    context_held: AtomicBool,
    failed: AtomicBool,
    pool: Arc<Pool>,
    loader: GpuLoader,
}

impl Parts {
    fn new() -> Self {
        let metrics = Arc::new(Metrics::new(Transport::Unix).unwrap());
        let pool = Arc::new(Pool::new(
            GpuConfig::default(),
            metrics,
            Arc::new(Lifecycle::new()),
            unbounded().0,
        ));
        pool.runtime
            .set(Runtime {
                backend: Box::new(EchoBackend),
                version: "test".to_string(),
                mode: GpuMode::Auto,
            })
            .unwrap();
        Parts {
            interrupters: Mutex::new(Interrupters::new()),
            execution: ExecutionClock::default(),
            context_held: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            loader: GpuLoader {
                pool: Arc::clone(&pool),
            },
            pool,
        }
    }

    /// An owner serving nothing yet.
    fn owner(&self) -> Owner<'_> {
        Owner::new(
            Arc::clone(&self.pool.metrics),
            Shared {
                lane: "test",
                interrupters: &self.interrupters,
                stopping: &self.pool.stopping,
                execution: &self.execution,
                context_held: &self.context_held,
                failed: &self.failed,
                resident: &self.pool.resident,
                lifecycle: &self.pool.lifecycle,
                lost: &self.pool.lost.0,
            },
            None,
        )
    }

    /// Makes version `version` of model `name` from `file` (on this thread, as the loader
    /// does) and has `owner` adopt it.
    fn load(
        &self,
        owner: &mut Owner<'_>,
        file: &Path,
        name: &str,
        version: u64,
    ) -> Arc<ModelVersion> {
        let batching = BatchingConfig {
            max_queue_delay: Duration::from_millis(20),
            ..BatchingConfig::default()
        };
        let order = LoadOrder {
            name: name.to_string(),
            version,
            path: file.to_path_buf(),
            intra_op_threads: None,
            batching,
            text: None,
            cuda: Default::default(),
            placement: Placement::default(),
            warmup: Default::default(),
        };
        let runtime = self.pool.runtime.get().unwrap();
        let target = Target {
            commands: unbounded().0,
            device: None,
        };
        let (mut built, model) = self
            .loader
            .build(runtime, order, &[target], Vec::new(), &mut Vec::new())
            .unwrap();
        let (served, fell_back) = built.pop().unwrap();
        assert!(!fell_back);
        owner.adopt(served, fell_back);
        model
    }
}

fn spec(name: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: DataType::Fp32,
        dims: vec![-1, 2],
        labels: Vec::new(),
    }
}

/// A job of `rows` rows, each value `fill`, answered on the returned channel.
fn job(rows: u8, fill: u8) -> (Job, mpsc::Receiver<JobResult>) {
    let input = Tensor {
        shape: vec![i64::from(rows), 2],
        data: vec![fill; usize::from(rows) * 2 * 4],
    };
    Job::for_tests(vec![input], usize::from(rows))
}

#[test]
fn the_owner_batches_runs_and_answers_every_model_in_turn_through_any_backend() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, b"any bytes: the echo backend reads none").unwrap();
    let parts = Parts::new();
    let mut owner = parts.owner();
    let busy = parts.load(&mut owner, &file, "busy", 1);
    let light = parts.load(&mut owner, &file, "light", 1);
    // Three requests of the busy model and one of the light one wait before the loop
    // starts: one execution runs the busy model's three, one the light model's.
    let mut answers = Vec::new();
    for rows in 1..=3u8 {
        let (job, answer) = job(rows, rows);
        busy.queue.submit(job).unwrap();
        answers.push((rows, rows, answer));
    }
    let (job, answer) = job(2, 9);
    light.queue.submit(job).unwrap();
    answers.push((2, 9, answer));
    let (commands_in, commands) = unbounded();
    // The loop runs here, as on the GPU-owner thread; the answers are awaited beside it,
    // and then it is told to stop.
    let waiter = std::thread::spawn(move || {
        let mut got = Vec::new();
        for (rows, fill, answer) in answers {
            got.push((rows, fill, answer.recv().unwrap()));
        }
        commands_in.send(GpuCommand::Stop).unwrap();
        got
    });
    owner.run(&commands);
    for (rows, fill, answer) in waiter.join().unwrap() {
        let (outputs, indices) = answer.unwrap();
        assert_eq!(indices, [0]);
        assert_eq!(outputs[0].shape, [i64::from(rows), 2]);
        assert!(outputs[0].data.iter().all(|&b| b == fill), "fill {fill}");
    }
    let (busy, light) = (busy.recorder().stats(), light.recorder().stats());
    assert_eq!(busy.executions.load(Ordering::Relaxed), 1);
    assert_eq!(busy.inferences.load(Ordering::Relaxed), 6);
    assert_eq!(light.executions.load(Ordering::Relaxed), 1);
    assert_eq!(light.inferences.load(Ordering::Relaxed), 2);
}

#[test]
fn a_retired_version_runs_what_it_queued_then_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, b"echo").unwrap();
    let parts = Parts::new();
    let mut owner = parts.owner();
    let old = parts.load(&mut owner, &file, "m", 1);
    let (job, answer) = job(1, 7);
    old.queue.submit(job).unwrap();
    let (commands_in, commands) = unbounded();
    commands_in
        .send(GpuCommand::Retire(Arc::clone(&old)))
        .unwrap();
    let waiter = std::thread::spawn(move || {
        let got = answer.recv().unwrap();
        commands_in.send(GpuCommand::Stop).unwrap();
        got
    });
    owner.run(&commands);
    let (outputs, _) = waiter.join().unwrap().unwrap();
    assert!(outputs[0].data.iter().all(|&b| b == 7));
    owner.free_finished();
    assert!(owner.served.is_empty(), "the retired version is freed");
}
