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

//! A request as the model sees it, and how it is checked against the version it is routed to,
//! on the completion-queue threads. The codec hands over an [`InferRequest`] of named tensors;
//! [`check`] matches each input to the model's (name, datatype, shape, rows, bytes), turns a
//! request of texts into token inputs through the version's text stage ([`super::text`]), and
//! decides how each requested output is answered ([`super::outputs`]). A bad request never
//! reaches the queue; its message names the tensor and what is wrong.

use std::time::Duration;

use super::job::Request;
use super::outputs::{requested_outputs, Answering};
use super::text::{TextError, TextModel};
use crate::tensor::{
    bytes_elements, element_count, DataType, NamedTensor, Signature, Tensor, TensorSpec,
};

/// A request decoded from the wire: named input tensors, the outputs asked for, the caller's
/// own timeout.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InferRequest {
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for, in order; none: every output served.
    pub outputs: Vec<RequestedOutput>,
    pub timeout: Option<Duration>,
}

/// An output asked for by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// Its top k classes instead of its scores (Triton's classification extension).
    pub classification: Option<usize>,
}

/// Why a request does not fit the model version it was routed to: INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An input or output does not match the model.
    #[error("{0}")]
    Invalid(String),
    /// Its texts cannot be tokenized as the model needs.
    #[error(transparent)]
    Text(#[from] TextError),
}

/// A request that fits the model: what the model runs, and how its answer is made.
#[derive(Debug)]
pub struct Checked {
    pub request: Request,
    pub answering: Answering,
}

/// Checks `request` against `signature` (and `text`, the version's text stage, when it serves
/// texts) and takes its tensors in the model's input order.
pub fn check(
    signature: &Signature,
    text: Option<&TextModel>,
    request: InferRequest,
) -> Result<Checked, RequestError> {
    let InferRequest {
        inputs: given,
        outputs: asked,
        timeout,
    } = request;
    if let Some(text) = text {
        if given.iter().any(|input| input.name == text.info().input) {
            return check_texts(signature, text, given, &asked, timeout);
        }
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    let mut rows: Option<(usize, String)> = None;
    for input in given {
        let index = signature
            .inputs
            .iter()
            .position(|spec| spec.name == input.name)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown input {:?}: the model's inputs are {}",
                    input.name,
                    names(&signature.inputs)
                ))
            })?;
        if slots[index].is_some() {
            return Err(invalid(format!("input {:?} is given twice", input.name)));
        }
        let spec = &signature.inputs[index];
        check_input(signature, spec, &input)?;
        if signature.batching() {
            let these = input.tensor.shape[0] as usize;
            match &rows {
                Some((rows, first)) if *rows != these => {
                    return Err(invalid(format!(
                        "input {:?} has {these} rows but input {first:?} has {rows}: every input needs the same first dimension",
                        input.name
                    )))
                }
                Some(_) => {}
                None => rows = Some((these, input.name.clone())),
            }
        }
        slots[index] = Some(input.tensor);
    }
    let inputs = slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(slot, spec)| slot.ok_or_else(|| invalid(format!("missing input {:?}", spec.name))))
        .collect::<Result<Vec<_>, _>>()?;
    check_sequence_lengths(signature, &inputs)?;
    let info = text.map(TextModel::info);
    let (outputs, answering) = requested_outputs(signature, info, &asked, false)?;
    let answering = answering.with_mask_from(signature, info, &inputs);
    Ok(Checked {
        request: Request {
            inputs,
            rows: rows.map_or(1, |(rows, _)| rows),
            outputs,
            timeout,
        },
        answering,
    })
}

/// Checks one input against the model's `spec`: datatype, shape, and the size of its data.
fn check_input(
    signature: &Signature,
    spec: &TensorSpec,
    input: &NamedTensor,
) -> Result<(), RequestError> {
    let name = &input.name;
    if input.datatype != spec.datatype {
        return Err(invalid(format!(
            "input {name:?}: datatype {} does not match the model's {}",
            input.datatype, spec.datatype
        )));
    }
    let shape = &input.tensor.shape;
    check_shape(signature, spec, shape)?;
    // BYTES elements were counted against the shape as they were decoded.
    let Some(element_size) = spec.datatype.size() else {
        return Ok(());
    };
    let expected = element_count(shape)
        .and_then(|elements| elements.checked_mul(element_size))
        .ok_or_else(|| invalid(format!("input {name:?}: shape {shape:?} is too large")))?;
    if input.tensor.data.len() != expected {
        return Err(invalid(format!(
            "input {name:?}: raw contents are {} bytes but shape {shape:?} of {} needs {expected}",
            input.tensor.data.len(),
            spec.datatype
        )));
    }
    Ok(())
}

/// For a model that pads sequences: every padded input has the same length (axis 1), and
/// it is not 0. Padding each to its own longest would make an execution of inputs that do
/// not fit together, and fail every request batched with this one.
fn check_sequence_lengths(signature: &Signature, inputs: &[Tensor]) -> Result<(), RequestError> {
    let Some(padding) = &signature.padding else {
        return Ok(());
    };
    let mut first: Option<(&str, i64)> = None;
    for ((spec, tensor), pad) in signature.inputs.iter().zip(inputs).zip(&padding.inputs) {
        let (Some(_), Some(&length)) = (pad, tensor.shape.get(1)) else {
            continue;
        };
        if length == 0 {
            return Err(invalid(format!(
                "input {:?}: has 0 positions: send at least one token",
                spec.name
            )));
        }
        match first {
            Some((name, other)) if other != length => {
                return Err(invalid(format!(
                    "input {:?} has {length} positions but input {name:?} has {other}: the model's sequence inputs need the same length",
                    spec.name
                )))
            }
            Some(_) => {}
            None => first = Some((&spec.name, length)),
        }
    }
    Ok(())
}

/// Checks a request of texts (one BYTES input, shape `[n]` or `[n, 1]`) and tokenizes them
/// into the model's inputs.
fn check_texts(
    signature: &Signature,
    text: &TextModel,
    mut given: Vec<NamedTensor>,
    asked: &[RequestedOutput],
    timeout: Option<Duration>,
) -> Result<Checked, RequestError> {
    let info = text.info();
    if let Some(other) = given.iter().find(|i| i.name != info.input) {
        return Err(invalid(format!(
            "input {:?}: a request of texts has the one input {:?}; send token ids in a request of their own",
            other.name, info.input
        )));
    }
    if given.len() > 1 {
        return Err(invalid(format!("input {:?} is given twice", info.input)));
    }
    let input = given.remove(0);
    let rank = input.tensor.shape.len();
    if rank == 0 || rank > 2 || (rank == 2 && input.tensor.shape[1] != 1) {
        return Err(invalid(format!(
            "input {:?}: shape {:?} is not [texts] or [texts, 1]",
            info.input, input.tensor.shape
        )));
    }
    let spec = TensorSpec {
        name: info.input.clone(),
        datatype: DataType::Bytes,
        dims: vec![-1; rank],
        labels: Vec::new(),
    };
    let served = Signature {
        inputs: vec![spec.clone()],
        // Without batching, a request's texts run as one execution of their own.
        max_batch_size: if signature.batching() {
            signature.max_batch_size
        } else {
            u32::MAX
        },
        ..Default::default()
    };
    check_input(&served, &spec, &input)?;
    let elements = bytes_elements(&input.tensor.data)
        .map_err(|e| invalid(format!("input {:?}: {e}", info.input)))?;
    if signature.batching() && elements.len() > signature.max_batch_size as usize {
        return Err(invalid(format!(
            "input {:?}: has {} texts, more than max-batch-size {}",
            info.input,
            elements.len(),
            signature.max_batch_size
        )));
    }
    // The codec checked that every element is UTF-8.
    let texts: Vec<String> = elements
        .into_iter()
        .map(|element| String::from_utf8_lossy(element).into_owned())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = text.tokenize(&texts)?;
    let (outputs, mut answering) = requested_outputs(signature, Some(info), asked, true)?;
    answering.mask = Some(tokens.mask);
    Ok(Checked {
        request: Request {
            inputs: tokens.inputs,
            rows: texts.len(),
            outputs,
            timeout,
        },
        answering,
    })
}

/// Checks a request shape against the model's: same rank, fixed dimensions equal, and with
/// batching a first dimension from 1 to `max-batch-size`.
fn check_shape(
    signature: &Signature,
    spec: &TensorSpec,
    shape: &[i64],
) -> Result<(), RequestError> {
    let name = &spec.name;
    let mismatch = || {
        let hint = if spec.dims.contains(&-1) {
            " (-1: any size)"
        } else {
            ""
        };
        invalid(format!(
            "input {name:?}: shape {shape:?} does not match the model's {:?}{hint}",
            spec.dims
        ))
    };
    if shape.len() != spec.dims.len() {
        return Err(mismatch());
    }
    if let (Some(positions), Some(&length)) = (signature.max_positions, shape.get(1)) {
        if spec.dims[1] == -1 && length as usize > positions {
            return Err(invalid(format!(
                "input {name:?}: has {length} positions, over the model's {positions} (the rows of its position embeddings): truncate to {positions}"
            )));
        }
    }
    for (axis, (&dim, &model)) in shape.iter().zip(&spec.dims).enumerate() {
        if signature.batching() && axis == 0 {
            if dim == 0 {
                return Err(invalid(format!("input {name:?}: has 0 rows")));
            }
            if dim > i64::from(signature.max_batch_size) {
                return Err(invalid(format!(
                    "input {name:?}: has {dim} rows, more than max-batch-size {}",
                    signature.max_batch_size
                )));
            }
        } else if model != -1 && dim != model {
            return Err(mismatch());
        }
    }
    Ok(())
}

pub(super) fn invalid(message: String) -> RequestError {
    RequestError::Invalid(message)
}

/// "\"a\", \"b\"" of the tensors' names.
pub(super) fn names(specs: &[TensorSpec]) -> String {
    let names: Vec<String> = specs.iter().map(|s| format!("{:?}", s.name)).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        match check(signature, None, request) {
            Ok(_) => panic!("should be refused"),
            Err(RequestError::Invalid(m)) => m,
            Err(other) => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_is_reordered_to_the_model_inputs() {
        let checked = check(&model(8), None, request()).unwrap();
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
                "unknown input \"w\": the model's inputs are \"x\", \"k\"",
            ),
            (
                Box::new(|r| {
                    r.inputs.remove(0);
                }),
                "missing input \"k\"",
            ),
            (
                Box::new(|r| r.inputs[1].datatype = DataType::Fp64),
                "datatype FP64 does not match the model's FP32",
            ),
            (
                Box::new(|r| r.inputs[1].tensor.shape = vec![2, 3]),
                "shape [2, 3] does not match",
            ),
            (
                Box::new(|r| r.inputs[1].tensor.shape = vec![2]),
                "shape [2] does not match",
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
        let checked = check(&signature, None, request()).unwrap();
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
        assert!(message(&signature, three).ends_with("does not match the model's [2, 2]"));
        // With a dimension of any size, the message says what -1 means.
        let mut wide = request();
        wide.inputs[1].tensor = Tensor {
            shape: vec![1, 3],
            data: vec![0; 12],
        };
        assert!(
            message(&model(8), wide).ends_with("does not match the model's [-1, 2] (-1: any size)")
        );
    }

    #[test]
    fn outputs_that_cannot_be_served_are_left_out_or_refused() {
        let mut signature = model(8);
        signature.outputs[1].datatype = DataType::Unsupported("BF16");
        assert_eq!(
            check(&signature, None, request()).unwrap().request.outputs,
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
        let checked = check(&signature, None, r).unwrap();
        assert_eq!(checked.request.outputs, [1, 0]);
        assert_eq!(checked.request.timeout, Some(Duration::from_micros(1500)));
        use crate::model::outputs::OutputForm;
        assert_eq!(
            checked.answering.forms,
            [OutputForm::Classification(1), OutputForm::Tensor]
        );
    }
}
