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

//! How many positions (tokens) a transformer's graph has: the rows of its position
//! embeddings initializer (`embeddings.position_embeddings.weight` in BERT-family exports).
//! Read at load on the GPU-owner thread by walking the model's protobuf wire format: the
//! weights are skipped, not copied.

use protobuf::rt::WireType;
use protobuf::CodedInputStream;

/// ModelProto.graph, GraphProto.initializer, TensorProto.dims and TensorProto.name.
const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const TENSOR_DIMS: u32 = 1;
const TENSOR_NAME: u32 = 8;

/// The rows of the first two-dimensional initializer whose name holds `position_embeddings`,
/// if the model (ONNX bytes) has one.
pub fn position_rows(model: &[u8]) -> Option<usize> {
    let mut input = CodedInputStream::from_bytes(model);
    let graph = find_message(model, &mut input, MODEL_GRAPH).ok()??;
    let mut stream = CodedInputStream::from_bytes(graph);
    while let Some(tensor) = find_message(graph, &mut stream, GRAPH_INITIALIZER).ok()? {
        let (name, dims) = tensor_name_and_dims(tensor).ok()?;
        if name.contains("position_embeddings") && dims.len() == 2 {
            return usize::try_from(dims[0]).ok().filter(|&rows| rows > 0);
        }
    }
    None
}

/// The bytes of the next field `field` (a message) of `input`, a stream over `bytes`,
/// skipping the others; `None` at the end.
fn find_message<'a>(
    bytes: &'a [u8],
    input: &mut CodedInputStream<'_>,
    field: u32,
) -> protobuf::Result<Option<&'a [u8]>> {
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        let (number, wire_type) = (tag >> 3, WireType::new(tag & 7));
        let Some(wire_type) = wire_type else {
            return Err(protobuf::Error::from(std::io::Error::other(
                "invalid wire type",
            )));
        };
        if number == field && wire_type == WireType::LengthDelimited {
            let length = u32::try_from(input.read_raw_varint64()?).unwrap_or(u32::MAX);
            let start = input.pos() as usize;
            input.skip_raw_bytes(length)?;
            return Ok(bytes.get(start..start + length as usize));
        }
        input.skip_field(wire_type)?;
    }
    Ok(None)
}

/// A TensorProto's name and dims, its data skipped.
fn tensor_name_and_dims(tensor: &[u8]) -> protobuf::Result<(String, Vec<i64>)> {
    let mut input = CodedInputStream::from_bytes(tensor);
    let (mut name, mut dims) = (String::new(), Vec::new());
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        match (tag >> 3, WireType::new(tag & 7)) {
            (TENSOR_NAME, Some(WireType::LengthDelimited)) => name = input.read_string()?,
            (TENSOR_DIMS, Some(WireType::LengthDelimited)) => {
                input.read_repeated_packed_int64_into(&mut dims)?
            }
            (TENSOR_DIMS, Some(WireType::Varint)) => dims.push(input.read_int64()?),
            (_, Some(wire_type)) => input.skip_field(wire_type)?,
            (_, None) => {
                return Err(protobuf::Error::from(std::io::Error::other(
                    "invalid wire type",
                )))
            }
        }
    }
    Ok((name, dims))
}
