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

//! Which external data files an ONNX model's weights live in (ONNX's external data: every
//! model over 2 GB keeps its initializers in files beside the graph, named by each tensor's
//! `external_data` entry `location`, relative to the model's folder). Read by walking the
//! model's protobuf wire format from a stream: the weights a model holds inline are skipped,
//! never kept. Runs wherever a model is checked or loaded (main thread, repository thread).

use std::io::Read;

use protobuf::rt::WireType;
use protobuf::CodedInputStream;

/// ModelProto.graph, GraphProto.initializer, TensorProto.external_data and data_location,
/// StringStringEntryProto.key and value (ONNX's field numbers).
const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const TENSOR_EXTERNAL_DATA: u32 = 13;
const TENSOR_DATA_LOCATION: u32 = 14;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
/// TensorProto.DataLocation.EXTERNAL.
const EXTERNAL: u64 = 1;

/// The distinct `location`s of the external data of `model`'s initializers, in the order
/// first named; empty for a model that holds its weights itself. Fails on bytes that are not
/// a protobuf message.
pub fn locations(model: &mut dyn Read) -> protobuf::Result<Vec<String>> {
    let mut input = CodedInputStream::new(model);
    let mut found = Vec::new();
    while let Some((number, wire_type)) = next_field(&mut input)? {
        if number == MODEL_GRAPH && wire_type == WireType::LengthDelimited {
            within(&mut input, |graph| {
                while let Some((number, wire_type)) = next_field(graph)? {
                    if number == GRAPH_INITIALIZER && wire_type == WireType::LengthDelimited {
                        if let Some(location) = within(graph, tensor_location)? {
                            if !found.contains(&location) {
                                found.push(location);
                            }
                        }
                    } else {
                        graph.skip_field(wire_type)?;
                    }
                }
                Ok(())
            })?;
        } else {
            input.skip_field(wire_type)?;
        }
    }
    Ok(found)
}

/// The next field's number and wire type, or `None` at the end (of the stream or limit).
fn next_field(input: &mut CodedInputStream<'_>) -> protobuf::Result<Option<(u32, WireType)>> {
    if input.eof()? {
        return Ok(None);
    }
    let tag = input.read_raw_varint32()?;
    let wire_type = WireType::new(tag & 7)
        .ok_or_else(|| protobuf::Error::from(std::io::Error::other("invalid wire type")))?;
    Ok(Some((tag >> 3, wire_type)))
}

/// Runs `read` over the length-delimited field that comes next, as if it were the stream.
fn within<T>(
    input: &mut CodedInputStream<'_>,
    read: impl FnOnce(&mut CodedInputStream<'_>) -> protobuf::Result<T>,
) -> protobuf::Result<T> {
    let length = input.read_raw_varint64()?;
    let outer = input.push_limit(length)?;
    let value = read(input)?;
    // Whatever `read` left of the field is skipped.
    while !input.eof()? {
        let (_, wire_type) = next_field(input)?.expect("not at the end");
        input.skip_field(wire_type)?;
    }
    input.pop_limit(outer);
    Ok(value)
}

/// A TensorProto's external data `location`, if its data is external.
fn tensor_location(tensor: &mut CodedInputStream<'_>) -> protobuf::Result<Option<String>> {
    let (mut location, mut external) = (None, false);
    while let Some((number, wire_type)) = next_field(tensor)? {
        match (number, wire_type) {
            (TENSOR_DATA_LOCATION, WireType::Varint) => {
                external = tensor.read_raw_varint64()? == EXTERNAL;
            }
            (TENSOR_EXTERNAL_DATA, WireType::LengthDelimited) => {
                let (key, value) = within(tensor, |entry| {
                    let (mut key, mut value) = (String::new(), String::new());
                    while let Some((number, wire_type)) = next_field(entry)? {
                        match (number, wire_type) {
                            (ENTRY_KEY, WireType::LengthDelimited) => key = entry.read_string()?,
                            (ENTRY_VALUE, WireType::LengthDelimited) => {
                                value = entry.read_string()?
                            }
                            (_, wire_type) => entry.skip_field(wire_type)?,
                        }
                    }
                    Ok((key, value))
                })?;
                if key == "location" {
                    location = Some(value);
                }
            }
            (_, wire_type) => tensor.skip_field(wire_type)?,
        }
    }
    Ok(location.filter(|_| external))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::fs::File {
        std::fs::File::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/models")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn a_model_with_external_data_names_its_file_and_others_name_none() {
        assert_eq!(
            locations(&mut fixture("external.onnx")).unwrap(),
            ["external.onnx.data"]
        );
        assert!(locations(&mut fixture("affine.onnx")).unwrap().is_empty());
        assert!(locations(&mut fixture("minibert.onnx")).unwrap().is_empty());
    }

    #[test]
    fn bytes_that_are_not_a_model_are_an_error() {
        assert!(locations(&mut &[0xff, 0xff, 0xff][..]).is_err());
    }
}
