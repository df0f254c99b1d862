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

//! The Open Inference Protocol's tensor codec (KServe v2, as Triton speaks it), on the
//! completion-queue threads. Decodes and checks a request against the model before anything
//! is queued: model and version, every input's name, datatype, shape and bytes
//! (`raw_input_contents` or typed `contents`, never both), requested outputs and parameters.
//! A bad request never reaches the runtime; its message names the tensor and what is wrong.
//! Also builds the answer: outputs as `raw_output_contents`.

use std::collections::HashSet;
use std::time::Duration;

use super::classification;
use crate::model::job::Request;
use crate::proto::grpc_service::infer_parameter::Parameter_choice;
use crate::proto::grpc_service::model_infer_request::InferInputTensor;
use crate::proto::grpc_service::model_infer_response::InferOutputTensor;
use crate::proto::grpc_service::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use crate::serving::{LoadedModel, TextInfo};
use crate::tensor::{
    bytes_elements, element_count, encode_bytes_elements, DataType, Signature, Tensor, TensorSpec,
};
use crate::text;

/// Why a request is refused before it is queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request, or the answer it asks for, is larger than the configured limit:
    /// INVALID_ARGUMENT (never RESOURCE_EXHAUSTED, which tells a client to back off and retry).
    #[error("the {what} is {size} bytes, over sidecar.rpc.max-message-size ({limit} bytes): send fewer rows per request, or raise the limit")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The model or version is not served here: NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the model: INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
}

/// Fails if `message`, a request or an answer (`what`), is larger than `limit` bytes.
pub fn check_size(
    what: &'static str,
    message: &impl protobuf::Message,
    limit: usize,
) -> Result<(), RequestError> {
    let size = usize::try_from(message.compute_size()).unwrap_or(usize::MAX);
    if size > limit {
        return Err(RequestError::TooLarge { what, size, limit });
    }
    Ok(())
}

/// Checks that `model_name` and `model_version` name the served model.
pub fn check_model(model: &LoadedModel, name: &str, version: &str) -> Result<(), RequestError> {
    if name != model.name {
        return Err(RequestError::NotFound(format!(
            "unknown model {name:?}: this sidecar serves {:?}",
            model.name
        )));
    }
    if !version.is_empty() && version != model.version.to_string() {
        return Err(RequestError::NotFound(format!(
            "model {name:?} has no version {version:?}: this is version {}",
            model.version
        )));
    }
    Ok(())
}

/// How one requested output is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputForm {
    /// As the model gives it.
    Tensor,
    /// Its top k classes (Triton's classification extension).
    Classification(usize),
    /// Pooled into one embedding per row (text models).
    Embedding,
}

/// How a request's answer is made from its outputs: each requested output's form, in the
/// request's order, and for embeddings which positions of each row pooling keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answering {
    pub forms: Vec<OutputForm>,
    /// `[rows, length]` row-major: whether each position is one of the row's tokens; none:
    /// all are.
    pub mask: Option<Vec<bool>>,
}

/// A request that fits the model: what the model runs (or, for texts, what the tokenizer
/// turns into its inputs), and how its answer is made.
#[derive(Debug)]
pub struct Checked {
    pub request: Request,
    pub answering: Answering,
    /// The texts, in order, when the request sends texts: the inputs are still to be made.
    pub texts: Option<Vec<String>>,
}

/// Checks `request` against `model` and takes its tensors' bytes out of it.
pub fn check_request(
    model: &LoadedModel,
    request: &mut ModelInferRequest,
) -> Result<Checked, RequestError> {
    check_model(model, &request.model_name, &request.model_version)?;
    let signature = &*model.signature;
    let timeout = parameters(request)?;
    if let Some(text) = &model.text {
        if request.inputs.iter().any(|input| input.name == text.input) {
            return check_texts(model, text, request, timeout);
        }
    }
    let raw = std::mem::take(&mut request.raw_input_contents);
    if !raw.is_empty() {
        if raw.len() != request.inputs.len() {
            return Err(invalid(format!(
                "raw_input_contents has {} entries but the request has {} inputs: give one per input, in order",
                raw.len(),
                request.inputs.len()
            )));
        }
        if let Some(input) = request.inputs.iter().find(|i| i.contents.is_some()) {
            return Err(invalid(format!(
                "input {:?}: has typed contents while the request uses raw_input_contents; use one or the other for all inputs",
                input.name
            )));
        }
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    let mut rows: Option<(usize, String)> = None;
    let mut raw = raw.into_iter();
    for input in &mut request.inputs {
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
        let tensor = check_input(signature, spec, input, raw.next())?;
        if signature.batching() {
            let these = tensor.shape[0] as usize;
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
        slots[index] = Some(tensor);
    }
    let inputs = slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(slot, spec)| slot.ok_or_else(|| invalid(format!("missing input {:?}", spec.name))))
        .collect::<Result<Vec<_>, _>>()?;
    check_sequence_lengths(signature, &inputs)?;
    let (outputs, forms): (Vec<usize>, Vec<OutputForm>) = requested_outputs(model, request, false)?
        .into_iter()
        .unzip();
    let mask = match (&model.text, forms.contains(&OutputForm::Embedding)) {
        (Some(text), true) => text.mask.map(|mask| {
            let tensor = &inputs[mask];
            let size = signature.inputs[mask].datatype.size().unwrap_or(1);
            tensor
                .data
                .chunks(size)
                .map(|value| value.iter().any(|&b| b != 0))
                .collect()
        }),
        _ => None,
    };
    Ok(Checked {
        request: Request {
            inputs,
            rows: rows.map_or(1, |(rows, _)| rows),
            outputs,
            timeout,
        },
        answering: Answering { forms, mask },
        texts: None,
    })
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

/// Checks a request of texts: one BYTES input `text.input`, shape `[n]` or `[n, 1]`.
fn check_texts(
    model: &LoadedModel,
    text: &TextInfo,
    request: &mut ModelInferRequest,
    timeout: Option<Duration>,
) -> Result<Checked, RequestError> {
    if let Some(other) = request.inputs.iter().find(|i| i.name != text.input) {
        return Err(invalid(format!(
            "input {:?}: a request of texts has the one input {:?}; send token ids in a request of their own",
            other.name, text.input
        )));
    }
    if request.inputs.len() > 1 {
        return Err(invalid(format!("input {:?} is given twice", text.input)));
    }
    let raw = std::mem::take(&mut request.raw_input_contents);
    if raw.len() > 1 {
        return Err(invalid(format!(
            "raw_input_contents has {} entries but the request has 1 input: give one per input, in order",
            raw.len()
        )));
    }
    let input = &mut request.inputs[0];
    let rank = input.shape.len();
    if rank == 0 || rank > 2 || (rank == 2 && input.shape[1] != 1) {
        return Err(invalid(format!(
            "input {:?}: shape {:?} is not [texts] or [texts, 1]",
            text.input, input.shape
        )));
    }
    let spec = TensorSpec {
        name: text.input.clone(),
        datatype: DataType::Bytes,
        dims: vec![-1; rank],
        labels: Vec::new(),
    };
    let served = Signature {
        inputs: vec![spec.clone()],
        // Without batching, a request's texts run as one execution of their own.
        max_batch_size: if model.signature.batching() {
            model.signature.max_batch_size
        } else {
            u32::MAX
        },
        ..Default::default()
    };
    if raw.is_empty() && input.contents.is_none() {
        return Err(invalid(format!(
            "input {:?}: no data: give the texts in contents.bytes_contents or raw_input_contents",
            text.input
        )));
    }
    let tensor = check_input(&served, &spec, input, raw.into_iter().next())?;
    let texts = bytes_elements(&tensor.data)
        .map_err(|e| invalid(format!("input {:?}: {e}", text.input)))?
        .into_iter()
        .map(|element| String::from_utf8_lossy(element).into_owned())
        .collect::<Vec<_>>();
    if model.signature.batching() && texts.len() > model.signature.max_batch_size as usize {
        return Err(invalid(format!(
            "input {:?}: has {} texts, more than max-batch-size {}",
            text.input,
            texts.len(),
            model.signature.max_batch_size
        )));
    }
    let (outputs, forms) = requested_outputs(model, request, true)?.into_iter().unzip();
    Ok(Checked {
        request: Request {
            inputs: Vec::new(),
            rows: texts.len(),
            outputs,
            timeout,
        },
        answering: Answering { forms, mask: None },
        texts: Some(texts),
    })
}

fn invalid(message: String) -> RequestError {
    RequestError::Invalid(message)
}

fn names(specs: &[TensorSpec]) -> String {
    let names: Vec<String> = specs.iter().map(|s| format!("{:?}", s.name)).collect();
    names.join(", ")
}

/// Checks one input's datatype and shape, and takes its bytes (raw or typed).
fn check_input(
    signature: &Signature,
    spec: &TensorSpec,
    input: &mut InferInputTensor,
    raw: Option<Vec<u8>>,
) -> Result<Tensor, RequestError> {
    let name = &input.name;
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        invalid(format!(
            "input {name:?}: unknown datatype {:?}; the model takes {}",
            input.datatype, spec.datatype
        ))
    })?;
    if datatype != spec.datatype {
        return Err(invalid(format!(
            "input {name:?}: datatype {datatype} does not match the model's {}",
            spec.datatype
        )));
    }
    check_shape(signature, spec, &input.shape)?;
    let elements = element_count(&input.shape).ok_or_else(|| {
        invalid(format!(
            "input {name:?}: shape {:?} is too large",
            input.shape
        ))
    })?;
    let Some(element_size) = datatype.size() else {
        // BYTES: elements of any length.
        let data = match raw {
            Some(bytes) => bytes,
            None => {
                let contents = input.contents.take().unwrap_or_default();
                check_typed_field(name, datatype, &contents, "bytes_contents")?;
                encode_bytes_elements(&contents.bytes_contents)
            }
        };
        check_strings(name, &input.shape, &data, elements)?;
        return Ok(Tensor {
            shape: input.shape.clone(),
            data,
        });
    };
    let expected = elements.checked_mul(element_size).ok_or_else(|| {
        invalid(format!(
            "input {name:?}: shape {:?} is too large",
            input.shape
        ))
    })?;
    let data = match raw {
        Some(bytes) => {
            if bytes.len() != expected {
                return Err(invalid(format!(
                    "input {name:?}: raw contents are {} bytes but shape {:?} of {datatype} needs {expected}",
                    bytes.len(),
                    input.shape
                )));
            }
            bytes
        }
        None => {
            let contents = input.contents.take().unwrap_or_default();
            typed_bytes(name, datatype, &contents, elements)?
        }
    };
    Ok(Tensor {
        shape: input.shape.clone(),
        data,
    })
}

/// Checks the raw form of a BYTES input: `elements` length-prefixed elements, each valid
/// UTF-8 (ONNX string tensors are UTF-8).
fn check_strings(
    name: &str,
    shape: &[i64],
    data: &[u8],
    elements: usize,
) -> Result<(), RequestError> {
    let found = bytes_elements(data).map_err(|e| {
        invalid(format!(
            "input {name:?}: {e} (BYTES elements are each a 4-byte little-endian length, then the bytes)"
        ))
    })?;
    if found.len() != elements {
        return Err(invalid(format!(
            "input {name:?}: holds {} elements but shape {shape:?} has {elements}",
            found.len()
        )));
    }
    if let Some(index) = found.iter().position(|e| std::str::from_utf8(e).is_err()) {
        return Err(invalid(format!(
            "input {name:?}: element {index} is not valid UTF-8 (the model's strings are UTF-8 text)"
        )));
    }
    if let Some(index) = found.iter().position(|e| e.contains(&0)) {
        return Err(invalid(format!(
            "input {name:?}: element {index} holds a NUL byte, which ONNX Runtime's strings cannot carry"
        )));
    }
    Ok(())
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
    if let Some(&dim) = shape.iter().find(|&&d| d < 0) {
        return Err(invalid(format!(
            "input {name:?}: shape {shape:?} has a negative dimension ({dim})"
        )));
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

/// Checks that typed `contents` fill no field but `field`, the one the protocol gives
/// `datatype`; returns the fields filled.
fn check_typed_field(
    name: &str,
    datatype: DataType,
    contents: &InferTensorContents,
    field: &str,
) -> Result<Vec<&'static str>, RequestError> {
    let filled: Vec<&'static str> = [
        ("bool_contents", contents.bool_contents.len()),
        ("int_contents", contents.int_contents.len()),
        ("int64_contents", contents.int64_contents.len()),
        ("uint_contents", contents.uint_contents.len()),
        ("uint64_contents", contents.uint64_contents.len()),
        ("fp32_contents", contents.fp32_contents.len()),
        ("fp64_contents", contents.fp64_contents.len()),
        ("bytes_contents", contents.bytes_contents.len()),
    ]
    .into_iter()
    .filter(|(_, len)| *len > 0)
    .map(|(field, _)| field)
    .collect();
    if let Some(other) = filled.iter().find(|f| **f != field) {
        return Err(invalid(format!(
            "input {name:?}: {datatype} values go in contents.{field}, not contents.{other}"
        )));
    }
    Ok(filled)
}

/// The little-endian bytes of typed `contents`, which must hold `elements` values in the
/// field that the protocol gives `datatype`, and nothing in the others.
fn typed_bytes(
    name: &str,
    datatype: DataType,
    contents: &InferTensorContents,
    elements: usize,
) -> Result<Vec<u8>, RequestError> {
    let field = match datatype {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Fp16 => {
            return Err(invalid(format!(
                "input {name:?}: FP16 has no typed contents field; send it in raw_input_contents"
            )))
        }
        DataType::Bytes | DataType::Unsupported(_) => {
            return Err(invalid(format!(
                "input {name:?}: {datatype} tensors have no fixed-size typed contents"
            )))
        }
    };
    let filled = check_typed_field(name, datatype, contents, field)?;
    if filled.is_empty() && elements > 0 {
        return Err(invalid(format!(
            "input {name:?}: no data: give {elements} values in contents.{field} or the bytes in raw_input_contents"
        )));
    }
    let count_error = |given: usize| {
        invalid(format!(
            "input {name:?}: contents.{field} has {given} values but the shape needs {elements}"
        ))
    };
    macro_rules! narrow {
        ($values:expr, $t:ty) => {{
            let values = $values;
            if values.len() != elements {
                return Err(count_error(values.len()));
            }
            let mut bytes = Vec::with_capacity(elements * std::mem::size_of::<$t>());
            for &value in values {
                let narrowed = <$t>::try_from(value).map_err(|_| {
                    invalid(format!(
                        "input {name:?}: value {value} is out of range for {datatype}"
                    ))
                })?;
                bytes.extend_from_slice(&narrowed.to_le_bytes());
            }
            bytes
        }};
    }
    let bytes = match datatype {
        DataType::Bool => {
            if contents.bool_contents.len() != elements {
                return Err(count_error(contents.bool_contents.len()));
            }
            contents
                .bool_contents
                .iter()
                .map(|&b| u8::from(b))
                .collect()
        }
        DataType::Int8 => narrow!(&contents.int_contents, i8),
        DataType::Int16 => narrow!(&contents.int_contents, i16),
        DataType::Int32 => narrow!(&contents.int_contents, i32),
        DataType::Int64 => narrow!(&contents.int64_contents, i64),
        DataType::Uint8 => narrow!(&contents.uint_contents, u8),
        DataType::Uint16 => narrow!(&contents.uint_contents, u16),
        DataType::Uint32 => narrow!(&contents.uint_contents, u32),
        DataType::Uint64 => narrow!(&contents.uint64_contents, u64),
        DataType::Fp32 => {
            if contents.fp32_contents.len() != elements {
                return Err(count_error(contents.fp32_contents.len()));
            }
            bytemuck::cast_slice(&contents.fp32_contents).to_vec()
        }
        DataType::Fp64 => {
            if contents.fp64_contents.len() != elements {
                return Err(count_error(contents.fp64_contents.len()));
            }
            bytemuck::cast_slice(&contents.fp64_contents).to_vec()
        }
        DataType::Fp16 | DataType::Bytes | DataType::Unsupported(_) => {
            unreachable!("refused above")
        }
    };
    Ok(bytes)
}

/// The outputs asked for, in the order asked, each as an index into the model's outputs and
/// how it is answered. When none are named: every output the model serves, or for a request
/// of `texts`, the embedding (where one is served).
fn requested_outputs(
    model: &LoadedModel,
    request: &ModelInferRequest,
    texts: bool,
) -> Result<Vec<(usize, OutputForm)>, RequestError> {
    let signature = &*model.signature;
    let embedding = model.text.as_ref().and_then(|text| text.embedding.as_ref());
    if request.outputs.is_empty() {
        if let (true, Some((pooled, _))) = (texts, embedding) {
            return Ok(vec![(*pooled, OutputForm::Embedding)]);
        }
        // Every output that can be served (BYTES outputs are left out until they can be).
        return Ok((0..signature.outputs.len())
            .filter(|&index| signature.outputs[index].datatype.is_served())
            .map(|index| (index, OutputForm::Tensor))
            .collect());
    }
    let mut seen = HashSet::new();
    request
        .outputs
        .iter()
        .map(|output| {
            if !seen.insert(output.name.as_str()) {
                return Err(invalid(format!(
                    "output {:?} is asked for twice",
                    output.name
                )));
            }
            if let Some((pooled, _)) = embedding.filter(|(_, spec)| spec.name == output.name) {
                return Ok((*pooled, OutputForm::Embedding));
            }
            let index = signature
                .outputs
                .iter()
                .position(|spec| spec.name == output.name)
                .ok_or_else(|| {
                    let mut names = names(&signature.outputs);
                    if let Some((_, spec)) = embedding {
                        names = format!("{:?}, {names}", spec.name);
                    }
                    invalid(format!(
                        "unknown output {:?}: the model's outputs are {names}",
                        output.name
                    ))
                })?;
            let datatype = signature.outputs[index].datatype;
            if !datatype.is_served() {
                return Err(invalid(format!(
                    "output {:?}: {datatype} tensors are not served",
                    output.name
                )));
            }
            let classes =
                classification::requested(&signature.outputs[index], output, signature.batching())?;
            Ok((
                index,
                classes.map_or(OutputForm::Tensor, OutputForm::Classification),
            ))
        })
        .collect()
}

/// The request's parameters: `timeout` (microseconds) is honoured; sequence batching is
/// refused; others (priority, binary_data_output, ...) do not change what is computed.
fn parameters(request: &ModelInferRequest) -> Result<Option<Duration>, RequestError> {
    for key in ["sequence_id", "sequence_start", "sequence_end"] {
        if let Some(value) = request.parameters.get(key) {
            let set = match &value.parameter_choice {
                Some(Parameter_choice::BoolParam(b)) => *b,
                Some(Parameter_choice::Int64Param(n)) => *n != 0,
                Some(Parameter_choice::Uint64Param(n)) => *n != 0,
                Some(Parameter_choice::StringParam(s)) => !s.is_empty(),
                _ => false,
            };
            if set {
                return Err(invalid(format!(
                    "parameter {key:?}: sequence batching is not supported by this sidecar"
                )));
            }
        }
    }
    let Some(timeout) = request.parameters.get("timeout") else {
        return Ok(None);
    };
    let micros = timeout_micros(timeout)?;
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

fn timeout_micros(parameter: &InferParameter) -> Result<u64, RequestError> {
    match &parameter.parameter_choice {
        Some(Parameter_choice::Int64Param(n)) if *n >= 0 => Ok(*n as u64),
        Some(Parameter_choice::Uint64Param(n)) => Ok(*n),
        Some(Parameter_choice::Int64Param(n)) => Err(invalid(format!(
            "parameter \"timeout\" is {n}: give microseconds, 0 or more"
        ))),
        _ => Err(invalid(
            "parameter \"timeout\" must be an int64_param or uint64_param of microseconds"
                .to_string(),
        )),
    }
}

/// The answer to a request: its `id`, the outputs it asked for (`indices` into the model's
/// outputs, answered as `answering` says) with their shapes, and their bytes in
/// `raw_output_contents`.
pub fn response(
    model: &LoadedModel,
    id: String,
    indices: &[usize],
    answering: &Answering,
    tensors: Vec<Tensor>,
) -> ModelInferResponse {
    let mut response = ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        id,
        ..ModelInferResponse::default()
    };
    for (i, (&index, tensor)) in indices.iter().zip(tensors).enumerate() {
        let spec = &model.signature.outputs[index];
        let form = answering
            .forms
            .get(i)
            .copied()
            .unwrap_or(OutputForm::Tensor);
        let (name, datatype, tensor) = match (form, &model.text) {
            (OutputForm::Classification(count), _) => (
                spec.name.clone(),
                DataType::Bytes,
                classification::top_classes(spec, &tensor, count),
            ),
            (OutputForm::Embedding, Some(text)) => (
                text::EMBEDDING.to_string(),
                DataType::Fp32,
                text::pool(text, &tensor, answering.mask.as_deref()),
            ),
            _ => (spec.name.clone(), spec.datatype, tensor),
        };
        response.outputs.push(InferOutputTensor {
            name,
            datatype: datatype.name().to_string(),
            shape: tensor.shape,
            ..InferOutputTensor::default()
        });
        response.raw_output_contents.push(tensor.data);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn model(max_batch_size: u32) -> LoadedModel {
        let mut model = LoadedModel::for_tests();
        model.name = "affine".to_string();
        model.signature = Arc::new(Signature {
            inputs: vec![
                TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    dims: vec![-1, 2],
                    labels: Vec::new(),
                },
                TensorSpec {
                    name: "k".into(),
                    datatype: DataType::Int8,
                    dims: vec![-1, 1],
                    labels: Vec::new(),
                },
            ],
            outputs: vec![
                TensorSpec {
                    name: "y".into(),
                    datatype: DataType::Fp32,
                    dims: vec![-1, 2],
                    labels: Vec::new(),
                },
                TensorSpec {
                    name: "z".into(),
                    datatype: DataType::Int64,
                    dims: vec![-1],
                    labels: Vec::new(),
                },
            ],
            max_batch_size,
            ..Default::default()
        });
        model
    }

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..InferInputTensor::default()
        }
    }

    /// A valid request with 2 rows, raw.
    fn request() -> ModelInferRequest {
        ModelInferRequest {
            model_name: "affine".into(),
            inputs: vec![input("k", "INT8", &[2, 1]), input("x", "FP32", &[2, 2])],
            raw_input_contents: vec![vec![1, 2], vec![0; 16]],
            ..ModelInferRequest::default()
        }
    }

    fn message(model: &LoadedModel, mut request: ModelInferRequest) -> String {
        match check_request(model, &mut request) {
            Ok(_) => panic!("should be refused"),
            Err(RequestError::Invalid(m)) => m,
            Err(other) => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn a_valid_raw_request_is_reordered_to_the_model_inputs() {
        let model = model(8);
        let checked = check_request(&model, &mut request()).unwrap();
        assert_eq!(checked.request.rows, 2);
        assert_eq!(checked.request.inputs[0].shape, [2, 2]);
        assert_eq!(checked.request.inputs[1].data, [1, 2]);
        assert_eq!(checked.request.outputs, [0, 1]);
        assert_eq!(checked.request.timeout, None);
    }

    #[test]
    fn typed_contents_become_little_endian_bytes() {
        let model = model(8);
        let mut request = request();
        request.raw_input_contents.clear();
        request.inputs[0].contents = Some(InferTensorContents {
            int_contents: vec![-1, 5],
            ..InferTensorContents::default()
        })
        .into();
        request.inputs[1].contents = Some(InferTensorContents {
            fp32_contents: vec![1.0, 2.0, 3.0, 4.0],
            ..InferTensorContents::default()
        })
        .into();
        let checked = check_request(&model, &mut request).unwrap();
        assert_eq!(checked.request.inputs[1].data, [255, 5]);
        assert_eq!(&checked.request.inputs[0].data[..4], 1.0f32.to_le_bytes());
    }

    #[test]
    fn unknown_model_or_version_is_not_found() {
        let model = model(8);
        let mut wrong = request();
        wrong.model_name = "other".into();
        assert!(matches!(
            check_request(&model, &mut wrong),
            Err(RequestError::NotFound(m)) if m.contains("\"other\"")
        ));
        let mut version = request();
        version.model_version = "2".into();
        assert!(matches!(
            check_request(&model, &mut version),
            Err(RequestError::NotFound(_))
        ));
        let mut one = request();
        one.model_version = "1".into();
        assert!(check_request(&model, &mut one).is_ok());
    }

    #[test]
    fn bad_requests_name_the_tensor_and_the_problem() {
        let model = model(8);
        type Change = Box<dyn Fn(&mut ModelInferRequest)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.inputs[1].name = "w".into()),
                "unknown input \"w\"",
            ),
            (
                Box::new(|r| {
                    r.inputs.remove(0);
                    r.raw_input_contents.remove(0);
                }),
                "missing input \"k\"",
            ),
            (
                Box::new(|r| r.inputs[1].datatype = "FP64".into()),
                "datatype FP64 does not match the model's FP32",
            ),
            (
                Box::new(|r| r.inputs[1].datatype = "FLOAT".into()),
                "unknown datatype \"FLOAT\"",
            ),
            (
                Box::new(|r| r.inputs[1].shape = vec![2, 3]),
                "shape [2, 3] does not match",
            ),
            (
                Box::new(|r| r.inputs[1].shape = vec![2]),
                "shape [2] does not match",
            ),
            (
                Box::new(|r| r.raw_input_contents[1].pop().map(|_| ()).unwrap()),
                "raw contents are 15 bytes",
            ),
            (
                Box::new(|r| {
                    r.inputs[0].shape = vec![9, 1];
                    r.inputs[1].shape = vec![9, 2];
                }),
                "more than max-batch-size 8",
            ),
            (
                Box::new(|r| {
                    r.inputs[0].shape = vec![1, 1];
                    r.raw_input_contents[0] = vec![1];
                }),
                "has 2 rows but input \"k\" has 1",
            ),
            (
                Box::new(|r| r.inputs[1].shape = vec![-2, 2]),
                "negative dimension",
            ),
            (
                Box::new(|r| r.raw_input_contents.pop().map(|_| ()).unwrap()),
                "raw_input_contents has 1 entries",
            ),
            (
                Box::new(|r| {
                    r.inputs[0].contents = Some(InferTensorContents::default()).into();
                }),
                "use one or the other",
            ),
            (
                Box::new(|r| {
                    let dup = r.inputs[1].clone();
                    r.inputs.push(dup);
                    r.raw_input_contents.push(vec![0; 16]);
                }),
                "given twice",
            ),
            (
                Box::new(|r| {
                    r.outputs.push(Default::default());
                    r.outputs[0].name = "q".into();
                }),
                "unknown output \"q\"",
            ),
            (
                Box::new(|r| {
                    r.parameters.insert(
                        "timeout".into(),
                        InferParameter {
                            parameter_choice: Some(Parameter_choice::StringParam("1s".into())),
                            ..InferParameter::default()
                        },
                    );
                }),
                "parameter \"timeout\"",
            ),
            (
                Box::new(|r| {
                    r.parameters.insert(
                        "sequence_id".into(),
                        InferParameter {
                            parameter_choice: Some(Parameter_choice::Int64Param(4)),
                            ..InferParameter::default()
                        },
                    );
                }),
                "sequence batching",
            ),
        ];
        for (change, expected) in cases {
            let mut bad = request();
            change(&mut bad);
            let message = message(&model, bad);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn typed_contents_errors_are_named() {
        let model = model(8);
        let typed = |k: InferTensorContents| {
            let mut r = request();
            r.raw_input_contents.clear();
            r.inputs[0].contents = Some(k).into();
            r.inputs[1].contents = Some(InferTensorContents {
                fp32_contents: vec![0.0; 4],
                ..InferTensorContents::default()
            })
            .into();
            r
        };
        let out_of_range = typed(InferTensorContents {
            int_contents: vec![300, 1],
            ..InferTensorContents::default()
        });
        assert!(message(&model, out_of_range).contains("value 300 is out of range for INT8"));
        let wrong_field = typed(InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..InferTensorContents::default()
        });
        assert!(message(&model, wrong_field).contains("go in contents.int_contents"));
        let short = typed(InferTensorContents {
            int_contents: vec![1],
            ..InferTensorContents::default()
        });
        assert!(message(&model, short).contains("has 1 values but the shape needs 2"));
        let empty = typed(InferTensorContents::default());
        assert!(message(&model, empty).contains("no data"));
    }

    #[test]
    fn without_batching_the_model_shape_is_required() {
        let mut model = model(0);
        let mut signature = (*model.signature).clone();
        signature.inputs[0].dims = vec![2, 2];
        model.signature = Arc::new(signature);
        let checked = check_request(&model, &mut request()).unwrap();
        assert_eq!(checked.request.rows, 1);
        let mut three = request();
        three.inputs[0].shape = vec![3, 1];
        three.inputs[1].shape = vec![3, 2];
        three.raw_input_contents = vec![vec![0; 3], vec![0; 24]];
        assert!(message(&model, three).ends_with("does not match the model's [2, 2]"));
        // With a dimension of any size, the message says what -1 means.
        let mut wide = request();
        wide.inputs[1].shape = vec![1, 3];
        wide.raw_input_contents[1] = vec![0; 12];
        assert!(message(&self::model(8), wide)
            .ends_with("does not match the model's [-1, 2] (-1: any size)"));
    }

    #[test]
    fn outputs_that_cannot_be_served_are_left_out_or_refused() {
        let mut model = model(8);
        let mut signature = (*model.signature).clone();
        signature.outputs[1].datatype = DataType::Unsupported("BF16");
        model.signature = Arc::new(signature);
        assert_eq!(
            check_request(&model, &mut request())
                .unwrap()
                .request
                .outputs,
            [0]
        );
        let mut r = request();
        r.outputs.push(Default::default());
        r.outputs[0].name = "z".into();
        assert!(message(&model, r).contains("output \"z\": BF16 tensors are not served"));
    }

    #[test]
    fn timeout_and_output_subset() {
        let model = model(8);
        let mut r = request();
        r.parameters.insert(
            "timeout".into(),
            InferParameter {
                parameter_choice: Some(Parameter_choice::Int64Param(1500)),
                ..InferParameter::default()
            },
        );
        r.outputs.push(Default::default());
        r.outputs[0].name = "z".into();
        let checked = check_request(&model, &mut r).unwrap();
        assert_eq!(checked.request.timeout, Some(Duration::from_micros(1500)));
        assert_eq!(checked.request.outputs, [1]);
        let answer = response(
            &model,
            "req-7".into(),
            &checked.request.outputs,
            &checked.answering,
            vec![Tensor {
                shape: vec![2],
                data: vec![0; 16],
            }],
        );
        assert_eq!(answer.id, "req-7");
        assert_eq!(answer.outputs[0].name, "z");
        assert_eq!(answer.outputs[0].datatype, "INT64");
        assert_eq!(answer.raw_output_contents[0].len(), 16);
    }
}
