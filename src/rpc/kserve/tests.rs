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

//! The codec's unit tests: what it decodes, and what it refuses as breaking the protocol.

use super::*;
use crate::proto::grpc_service::infer_parameter::Parameter_choice;
use crate::proto::grpc_service::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use crate::proto::grpc_service::{InferParameter, InferTensorContents};
use crate::tensor::{DataType, NamedTensor, Tensor};
use std::time::Duration;

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..InferInputTensor::default()
    }
}

/// A request with 2 rows of two inputs, raw.
fn request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "affine".into(),
        inputs: vec![input("k", "INT8", &[2, 1]), input("x", "FP32", &[2, 2])],
        raw_input_contents: vec![vec![1, 2], vec![0; 16]],
        ..ModelInferRequest::default()
    }
}

fn message(mut request: ModelInferRequest) -> String {
    match decode(&mut request) {
        Ok(_) => panic!("should be refused"),
        Err(DecodeError::Invalid(m)) => m,
        Err(other) => panic!("not a protocol error: {other:?}"),
    }
}

fn parameter(choice: Parameter_choice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
        ..InferParameter::default()
    }
}

/// `request()` with typed contents: INT8 `k` from `k`, FP32 `x` zeros.
fn typed(k: InferTensorContents) -> ModelInferRequest {
    let mut r = request();
    r.raw_input_contents.clear();
    r.inputs[0].contents = Some(k).into();
    r.inputs[1].contents = Some(InferTensorContents {
        fp32_contents: vec![0.0; 4],
        ..InferTensorContents::default()
    })
    .into();
    r
}

#[test]
fn raw_inputs_become_named_tensors_in_the_request_order() {
    let decoded = decode(&mut request()).unwrap();
    assert_eq!(decoded.inputs[0].name, "k");
    assert_eq!(decoded.inputs[0].datatype, DataType::Int8);
    assert_eq!(decoded.inputs[0].tensor.data, [1, 2]);
    assert_eq!(decoded.inputs[1].tensor.shape, [2, 2]);
    assert_eq!(decoded.timeout, None);
    assert!(decoded.outputs.is_empty());
}

#[test]
fn typed_contents_become_little_endian_bytes() {
    let decoded = decode(&mut typed(InferTensorContents {
        int_contents: vec![-1, 5],
        ..InferTensorContents::default()
    }))
    .unwrap();
    assert_eq!(decoded.inputs[0].tensor.data, [255, 5]);
    assert_eq!(decoded.inputs[1].tensor.data, [0; 16]);
}

#[test]
fn messages_that_break_the_protocol_name_the_tensor_and_the_problem() {
    type Change = Box<dyn Fn(&mut ModelInferRequest)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|r| r.inputs[1].datatype = "FLOAT".into()),
            "unknown datatype \"FLOAT\": the protocol's are BOOL",
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
                r.parameters.insert(
                    "timeout".into(),
                    parameter(Parameter_choice::StringParam("1s".into())),
                );
            }),
            "parameter \"timeout\"",
        ),
        (
            Box::new(|r| {
                r.parameters.insert(
                    "sequence_id".into(),
                    parameter(Parameter_choice::Int64Param(4)),
                );
            }),
            "sequence batching",
        ),
        (
            Box::new(|r| {
                let mut output = InferRequestedOutputTensor {
                    name: "y".into(),
                    ..Default::default()
                };
                output.parameters.insert(
                    "classification".into(),
                    parameter(Parameter_choice::Int64Param(0)),
                );
                r.outputs.push(output);
            }),
            "output \"y\": parameter \"classification\" must be an int64_param of at least 1",
        ),
    ];
    for (change, expected) in cases {
        let mut bad = request();
        change(&mut bad);
        let message = message(bad);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[test]
fn typed_contents_errors_are_named() {
    let out_of_range = typed(InferTensorContents {
        int_contents: vec![300, 1],
        ..InferTensorContents::default()
    });
    assert!(message(out_of_range).contains("value 300 is out of range for INT8"));
    let wrong_field = typed(InferTensorContents {
        fp32_contents: vec![1.0, 2.0],
        ..InferTensorContents::default()
    });
    assert!(message(wrong_field).contains("go in contents.int_contents"));
    let short = typed(InferTensorContents {
        int_contents: vec![1],
        ..InferTensorContents::default()
    });
    assert!(message(short).contains("has 1 values but the shape needs 2"));
    let empty = typed(InferTensorContents::default());
    assert!(message(empty).contains("no data"));
}

#[test]
fn strings_are_counted_against_the_shape_and_must_be_utf8_without_nul() {
    let strings = |elements: Vec<&[u8]>, shape: &[i64]| {
        let mut text = input("t", "BYTES", shape);
        text.contents = Some(InferTensorContents {
            bytes_contents: elements.into_iter().map(<[u8]>::to_vec).collect(),
            ..InferTensorContents::default()
        })
        .into();
        ModelInferRequest {
            inputs: vec![text],
            ..ModelInferRequest::default()
        }
    };
    let decoded = decode(&mut strings(vec![b"ab", b""], &[2])).unwrap();
    assert_eq!(
        decoded.inputs[0].tensor.data,
        [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
    );
    assert!(message(strings(vec![b"ab"], &[2])).contains("holds 1 elements but shape [2] has 2"));
    assert!(message(strings(vec![&[0xff]], &[1])).contains("element 0 is not valid UTF-8"));
    assert!(message(strings(vec![b"a\0"], &[1])).contains("element 0 holds a NUL byte"));
    assert!(message(strings(Vec::new(), &[1])).contains("no data"));
}

#[test]
fn the_timeout_and_classification_parameters_are_read() {
    let mut r = request();
    r.parameters.insert(
        "timeout".into(),
        parameter(Parameter_choice::Int64Param(1500)),
    );
    let mut output = InferRequestedOutputTensor {
        name: "y".into(),
        ..Default::default()
    };
    output.parameters.insert(
        "classification".into(),
        parameter(Parameter_choice::Int64Param(2)),
    );
    r.outputs.push(output);
    let decoded = decode(&mut r).unwrap();
    assert_eq!(decoded.timeout, Some(Duration::from_micros(1500)));
    assert_eq!(decoded.outputs[0].name, "y");
    assert_eq!(decoded.outputs[0].classification, Some(2));
}

#[test]
fn an_answer_carries_its_id_names_and_raw_bytes() {
    let answer = response(
        "affine",
        3,
        "req-7".into(),
        vec![NamedTensor {
            name: "z".into(),
            datatype: DataType::Int64,
            tensor: Tensor {
                shape: vec![2],
                data: vec![0; 16],
            },
        }],
    );
    assert_eq!(answer.id, "req-7");
    assert_eq!(answer.model_version, "3");
    assert_eq!(answer.outputs[0].name, "z");
    assert_eq!(answer.outputs[0].datatype, "INT64");
    assert_eq!(answer.raw_output_contents[0].len(), 16);
}

#[test]
fn size_limits_refuse_larger_messages() {
    let r = request();
    assert!(check_size("request", &r, 1 << 20).is_ok());
    assert!(matches!(
        check_size("request", &r, 8),
        Err(DecodeError::TooLarge {
            what: "request",
            limit: 8,
            ..
        })
    ));
}
