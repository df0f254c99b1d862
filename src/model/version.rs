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
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admit::AdmitError;
use super::job::{Caller, Job, Reply, Request};
use super::outputs::{self, Answering};
use super::queue::{QueueCounts, SubmitError, Submitter};
use super::request::{self, InferRequest, RequestError};
use super::stats::Recorder;
use super::text::{TextInfo, TextModel};
use crate::config::{BatchingConfig, CudaOptions};
use crate::serving::ModelLocation;
use crate::tensor::{NamedTensor, Signature, Tensor};

/// Where a version's instances run (Triton's instance group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    /// Its devices, `count` instances on each; empty: `count` instances on the CPU.
    pub devices: Vec<i32>,
    pub count: u32,
}

impl Instances {
    /// All of its instances.
    pub fn total(&self) -> u32 {
        self.count * u32::try_from(self.devices.len().max(1)).unwrap_or(u32::MAX)
    }
}

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
    /// ONNX Runtime's CUDA provider options, as configured (used on a GPU).
    pub cuda: CudaOptions,
    /// Where its instances run, each with its own session, all fed by its one queue.
    pub instances: Instances,
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
        check(&self.name, &self.signature, self.text.as_ref(), request)
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
    /// `default-timeout`; it is not run if its `caller` has gone first. Refused (and `reply`
    /// dropped unanswered) when the queue is full or closed.
    pub fn submit(
        &self,
        checked: Request,
        caller: Arc<dyn Caller>,
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
            caller,
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

/// A request that fits the model: what the model runs, and how its answer is made.
#[derive(Debug)]
pub struct Checked {
    pub request: Request,
    pub answering: Answering,
}

/// Checks `request` against `signature` (and `text`, the version's text stage): its inputs
/// ([`request`]) and the outputs it asks for ([`outputs`]).
pub fn check(
    model: &str,
    signature: &Signature,
    text: Option<&TextModel>,
    request: InferRequest,
) -> Result<Checked, RequestError> {
    let InferRequest {
        inputs,
        outputs: asked,
        timeout,
    } = request;
    let given = request::check_inputs(model, signature, text, inputs)?;
    let info = text.map(TextModel::info);
    let texts = given.token_mask.is_some();
    let (outputs, mut answering) = outputs::requested_outputs(signature, info, &asked, texts)?;
    answering = match given.token_mask {
        Some(mask) => Answering {
            mask: Some(mask),
            ..answering
        },
        None => answering.with_mask_from(signature, info, &given.inputs),
    };
    Ok(Checked {
        request: Request {
            inputs: given.inputs,
            rows: given.rows,
            outputs,
            timeout,
        },
        answering,
    })
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
            cuda: CudaOptions::default(),
            instances: Instances {
                devices: Vec::new(),
                count: 1,
            },
            queue,
            recorder: Recorder::new(metrics),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::request::RequestedOutput;
    use crate::tensor::{DataType, TensorSpec};
    use std::time::Duration;

    fn spec(name: &str, datatype: DataType, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            dims: dims.to_vec(),
            labels: Vec::new(),
        }
    }

    fn model(max_batch_size: u32) -> Signature {
        Signature {
            inputs: vec![
                spec("x", DataType::Fp32, &[-1, 2]),
                spec("k", DataType::Int8, &[-1, 1]),
            ],
            outputs: vec![
                spec("y", DataType::Fp32, &[-1, 2]),
                spec("z", DataType::Int64, &[-1]),
            ],
            max_batch_size,
            ..Default::default()
        }
    }

    fn input(name: &str, datatype: DataType, shape: &[i64], data: Vec<u8>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            datatype,
            tensor: Tensor {
                shape: shape.to_vec(),
                data,
            },
        }
    }

    /// A valid request with 2 rows, its inputs in another order than the model's.
    fn request() -> InferRequest {
        InferRequest {
            inputs: vec![
                input("k", DataType::Int8, &[2, 1], vec![1, 2]),
                input("x", DataType::Fp32, &[2, 2], vec![0; 16]),
            ],
            ..InferRequest::default()
        }
    }

    fn asked(name: &str) -> RequestedOutput {
        RequestedOutput {
            name: name.into(),
            classification: None,
        }
    }

    fn message(signature: &Signature, request: InferRequest) -> String {
        match check("m", signature, None, request) {
            Ok(_) => panic!("should be refused"),
            Err(RequestError::Invalid(m)) => m,
            Err(other) => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_is_reordered_to_the_model_inputs() {
        let checked = check("m", &model(8), None, request()).unwrap();
        assert_eq!(checked.request.rows, 2);
        assert_eq!(checked.request.inputs[0].shape, [2, 2]);
        assert_eq!(checked.request.inputs[1].data, [1, 2]);
        assert_eq!(checked.request.outputs, [0, 1]);
        assert_eq!(checked.request.timeout, None);
    }

    #[test]
    fn requests_that_do_not_fit_the_model_name_the_tensor_and_the_problem() {
        type Change = Box<dyn Fn(&mut InferRequest)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.inputs[1].name = "w".into()),
                "unexpected inference input 'w' for model 'm': the model's inputs are \"x\", \"k\"",
            ),
            (
                Box::new(|r| {
                    r.inputs.remove(0);
                }),
                "missing input \"k\"",
            ),
            (
                Box::new(|r| r.inputs[1].datatype = DataType::Fp64),
                "data-type is 'FP64', but model 'm' expects 'FP32'",
            ),
            (
                Box::new(|r| r.inputs[1].tensor.shape = vec![2, 3]),
                "Expected [-1,2], got [2,3]",
            ),
            (
                Box::new(|r| r.inputs[1].tensor.shape = vec![2]),
                "Expected [-1,2], got [2]",
            ),
            (
                Box::new(|r| {
                    r.inputs[1].tensor.data.pop();
                }),
                "raw contents are 15 bytes but shape [2, 2] of FP32 needs 16",
            ),
            (
                Box::new(|r| {
                    r.inputs[0].tensor.shape = vec![9, 1];
                    r.inputs[1].tensor.shape = vec![9, 2];
                }),
                "more than max-batch-size 8",
            ),
            (
                Box::new(|r| {
                    r.inputs[0].tensor.shape = vec![1, 1];
                    r.inputs[0].tensor.data = vec![1];
                }),
                "has 2 rows but input \"k\" has 1",
            ),
            (
                Box::new(|r| {
                    let dup = r.inputs[1].clone();
                    r.inputs.push(dup);
                }),
                "given twice",
            ),
            (
                Box::new(|r| r.outputs.push(asked("q"))),
                "unknown output \"q\"",
            ),
            (
                Box::new(|r| {
                    r.outputs.push(asked("y"));
                    r.outputs.push(asked("y"));
                }),
                "output \"y\" is asked for twice",
            ),
            (
                Box::new(|r| {
                    r.outputs.push(RequestedOutput {
                        name: "y".into(),
                        classification: Some(2),
                    })
                }),
                "output \"y\" is FP32 [-1, 2, 2]: classification needs one vector",
            ),
        ];
        let mut model = model(8);
        // "y" is no vector of scores per row; "z" could be.
        model.outputs[0].dims = vec![-1, 2, 2];
        for (change, expected) in cases {
            let mut bad = request();
            change(&mut bad);
            let message = message(&model, bad);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn without_batching_the_model_shape_is_required() {
        let mut signature = model(0);
        signature.inputs[0].dims = vec![2, 2];
        let checked = check("m", &signature, None, request()).unwrap();
        assert_eq!(checked.request.rows, 1);
        let mut three = request();
        three.inputs[0].tensor = Tensor {
            shape: vec![3, 1],
            data: vec![0; 3],
        };
        three.inputs[1].tensor = Tensor {
            shape: vec![3, 2],
            data: vec![0; 24],
        };
        assert!(message(&signature, three).ends_with("Expected [2,2], got [3,2]"));
        // With a dimension of any size, the message says what -1 means.
        let mut wide = request();
        wide.inputs[1].tensor = Tensor {
            shape: vec![1, 3],
            data: vec![0; 12],
        };
        assert!(message(&model(8), wide).ends_with("Expected [-1,2], got [1,3] (-1: any size)"));
    }

    #[test]
    fn outputs_that_cannot_be_served_are_left_out_or_refused() {
        let mut signature = model(8);
        signature.outputs[1].datatype = DataType::Unsupported("BF16");
        assert_eq!(
            check("m", &signature, None, request())
                .unwrap()
                .request
                .outputs,
            [0]
        );
        let mut r = request();
        r.outputs.push(asked("z"));
        assert!(message(&signature, r).contains("output \"z\": BF16 tensors are not served"));
    }

    #[test]
    fn outputs_asked_for_come_in_their_order_and_form() {
        let mut r = request();
        r.outputs.push(RequestedOutput {
            name: "y".into(),
            classification: Some(1),
        });
        r.outputs.push(asked("z"));
        r.timeout = Some(Duration::from_micros(1500));
        let mut signature = model(8);
        signature.outputs.swap(0, 1);
        signature.outputs[1].dims = vec![-1, 2];
        let checked = check("m", &signature, None, r).unwrap();
        assert_eq!(checked.request.outputs, [1, 0]);
        assert_eq!(checked.request.timeout, Some(Duration::from_micros(1500)));
        use crate::model::outputs::OutputForm;
        assert_eq!(
            checked.answering.forms,
            [OutputForm::Classification(1), OutputForm::Tensor]
        );
    }
}
