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

//! Decoding one input tensor of a request: its datatype and shape as the protocol names
//! them, and its bytes, from `raw_input_contents` as they are or from the typed `contents`
//! field the protocol gives its datatype (narrowed and written little-endian). BYTES elements
//! are counted against the shape and checked to be UTF-8 without NUL bytes.

use super::error::{invalid, DecodeError};
use crate::proto::grpc_service::model_infer_request::InferInputTensor;
use crate::proto::grpc_service::InferTensorContents;
use crate::tensor::{
    bytes_elements, element_count, encode_bytes_elements, DataType, NamedTensor, Tensor,
};

/// Decodes `input`, whose bytes are `raw` when the request sends raw contents, else its typed
/// contents.
pub fn decode(
    input: &mut InferInputTensor,
    raw: Option<Vec<u8>>,
) -> Result<NamedTensor, DecodeError> {
    let name = &input.name;
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        let known: Vec<&str> = DataType::SERVED.iter().map(|t| t.name()).collect();
        invalid(format!(
            "input {name:?}: unknown datatype {:?}: the protocol's are {}",
            input.datatype,
            known.join(", ")
        ))
    })?;
    let shape = input.shape.clone();
    if let Some(&dim) = shape.iter().find(|&&d| d < 0) {
        return Err(invalid(format!(
            "input {name:?}: shape {shape:?} has a negative dimension ({dim})"
        )));
    }
    let elements = element_count(&shape)
        .ok_or_else(|| invalid(format!("input {name:?}: shape {shape:?} is too large")))?;
    let data = match (datatype.size(), raw) {
        // Fixed-size elements, raw: their count is checked against the model's datatype.
        (Some(_), Some(bytes)) => bytes,
        (Some(_), None) => {
            let contents = input.contents.take().unwrap_or_default();
            typed_bytes(name, datatype, &contents, elements)?
        }
        // BYTES: elements of any length.
        (None, raw) => {
            let data = match raw {
                Some(bytes) => bytes,
                None => {
                    let contents = input.contents.take().unwrap_or_default();
                    check_typed_field(name, datatype, &contents, "bytes_contents")?;
                    if contents.bytes_contents.is_empty() && elements > 0 {
                        return Err(invalid(format!(
                            "input {name:?}: no data: give {elements} elements in contents.bytes_contents or raw_input_contents"
                        )));
                    }
                    encode_bytes_elements(&contents.bytes_contents)
                }
            };
            check_strings(name, &shape, &data, elements)?;
            data
        }
    };
    Ok(NamedTensor {
        name: name.clone(),
        datatype,
        tensor: Tensor { shape, data },
    })
}

/// Checks the raw form of a BYTES input: `elements` length-prefixed elements, each valid
/// UTF-8 (ONNX string tensors are UTF-8).
fn check_strings(
    name: &str,
    shape: &[i64],
    data: &[u8],
    elements: usize,
) -> Result<(), DecodeError> {
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

/// Checks that typed `contents` fill no field but `field`, the one the protocol gives
/// `datatype`; returns the fields filled.
fn check_typed_field(
    name: &str,
    datatype: DataType,
    contents: &InferTensorContents,
    field: &str,
) -> Result<Vec<&'static str>, DecodeError> {
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
) -> Result<Vec<u8>, DecodeError> {
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
