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

//! A request as the model sees it, and how its inputs are checked against the version it is
//! routed to, on the completion-queue threads. The codec hands over an [`InferRequest`] of
//! named tensors; [`check_inputs`] matches each input to the model's (name, datatype, shape,
//! rows, bytes) and turns a request of texts into token inputs through the version's text
//! stage ([`super::text`]). A bad request never reaches the queue; its message names the
//! tensor and what is wrong.

use std::time::Duration;

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

/// A request's inputs as the model takes them.
#[derive(Debug)]
pub struct CheckedInputs {
    /// One tensor per model input, in the model's order.
    pub inputs: Vec<Tensor>,
    /// Rows along dimension 0 (1 without batching).
    pub rows: usize,
    /// For a request of texts: which positions of each row are the text's tokens.
    pub token_mask: Option<Vec<bool>>,
}

/// Checks the `given` inputs against `signature` (and `text`, the version's text stage, when
/// it serves texts) and takes their tensors in the model's input order.
pub fn check_inputs(
    model: &str,
    signature: &Signature,
    text: Option<&TextModel>,
    given: Vec<NamedTensor>,
) -> Result<CheckedInputs, RequestError> {
    if let Some(text) = text {
        if given.iter().any(|input| input.name == text.info().input) {
            return check_texts(model, signature, text, given);
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
                // Triton's words first: its clients match them.
                invalid(format!(
                    "unexpected inference input '{}' for model '{model}': the model's inputs are {}",
                    input.name,
                    names(&signature.inputs)
                ))
            })?;
        if slots[index].is_some() {
            return Err(invalid(format!("input {:?} is given twice", input.name)));
        }
        let spec = &signature.inputs[index];
        check_input(model, signature, spec, &input)?;
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
        .map(|(slot, spec)| {
            slot.ok_or_else(|| {
                invalid(format!(
                    "expected {} inputs for model '{model}': missing input {:?}",
                    signature.inputs.len(),
                    spec.name
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_sequence_lengths(signature, &inputs)?;
    Ok(CheckedInputs {
        inputs,
        rows: rows.map_or(1, |(rows, _)| rows),
        token_mask: None,
    })
}

/// Checks one input against the model's `spec`: datatype, shape, and the size of its data.
fn check_input(
    model: &str,
    signature: &Signature,
    spec: &TensorSpec,
    input: &NamedTensor,
) -> Result<(), RequestError> {
    let name = &input.name;
    if input.datatype != spec.datatype {
        return Err(invalid(format!(
            "inference input '{name}' data-type is '{}', but model '{model}' expects '{}': send it as {}",
            input.datatype, spec.datatype, spec.datatype
        )));
    }
    let shape = &input.tensor.shape;
    check_shape(model, signature, spec, shape)?;
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
    model: &str,
    signature: &Signature,
    text: &TextModel,
    mut given: Vec<NamedTensor>,
) -> Result<CheckedInputs, RequestError> {
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
    check_input(model, &served, &spec, &input)?;
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
    Ok(CheckedInputs {
        inputs: tokens.inputs,
        rows: texts.len(),
        token_mask: Some(tokens.mask),
    })
}

/// Checks a request shape against the model's: same rank, fixed dimensions equal, and with
/// batching a first dimension from 1 to `max-batch-size`.
fn check_shape(
    model: &str,
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
        // Triton's words first (its dimensions without spaces), then the sidecar's.
        let compact = |dims: &[i64]| {
            let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
            format!("[{}]", dims.join(","))
        };
        invalid(format!(
            "unexpected shape for input '{name}' for model '{model}'. Expected {}, got {}{hint}",
            compact(&spec.dims),
            compact(shape)
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
