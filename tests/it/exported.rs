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

//! Models as the standard exporters write them (`tests/fixtures/make_exported_models.py`:
//! skl2onnx and onnxmltools with their default options), against the real binary over both
//! transports: ZipMap outputs served as probability tensors with their class labels, the
//! LightGBM label declared `[1]` probed and batched, Triton's classification extension.

use std::collections::BTreeMap;
use std::thread;

use gpu_sidecar::proto::grpc_service::infer_parameter::Parameter_choice;
use gpu_sidecar::proto::grpc_service::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use gpu_sidecar::proto::grpc_service::*;

use crate::inference::{client, counts, patient, serve};
use crate::util::{fixture_path, PATIENCE};

/// What make_exported_models.py recorded: the inputs, ONNX Runtime's outputs (a ZipMap as
/// the [rows, classes] tensor it is served as) and each ZipMap's labels.
struct Recorded {
    features: Vec<f32>,
    rows: usize,
    input: String,
    /// Every input, as recorded: (datatype, shape, values).
    inputs: BTreeMap<String, (String, Vec<i64>, Vec<serde_json::Value>)>,
    outputs: BTreeMap<String, (String, Vec<i64>, Vec<serde_json::Value>)>,
    labels: BTreeMap<String, Vec<String>>,
}

fn recorded(model: &str) -> Recorded {
    let path = fixture_path(&format!("models/{model}.expected.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensors = |key: &str| -> BTreeMap<String, (String, Vec<i64>, Vec<serde_json::Value>)> {
        json[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, t)| {
                let datatype = t["datatype"].as_str().unwrap().to_string();
                let shape = serde_json::from_value(t["shape"].clone()).unwrap();
                let data = t["data"].as_array().unwrap().clone();
                (name.clone(), (datatype, shape, data))
            })
            .collect()
    };
    let inputs = tensors("inputs");
    let outputs = tensors("outputs");
    let (input, (_, shape, data)) = inputs.iter().next().unwrap();
    let features: Vec<f32> = data
        .iter()
        .filter_map(|v| v.as_f64())
        .map(|v| v as f32)
        .collect();
    let labels = serde_json::from_value(json["labels"].clone()).unwrap();
    Recorded {
        features,
        rows: shape[0] as usize,
        input: input.clone(),
        inputs: inputs.clone(),
        outputs,
        labels,
    }
}

impl Recorded {
    /// Rows `from..to` of the inputs, asking for `outputs` (each with its classification).
    fn request(
        &self,
        model: &str,
        from: usize,
        to: usize,
        outputs: &[(&str, Option<i64>)],
    ) -> ModelInferRequest {
        let data: Vec<u8> = self.features[from * 4..to * 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        ModelInferRequest {
            model_name: model.to_string(),
            inputs: vec![InferInputTensor {
                name: self.input.clone(),
                datatype: "FP32".to_string(),
                shape: vec![(to - from) as i64, 4],
                ..Default::default()
            }],
            raw_input_contents: vec![data],
            outputs: outputs
                .iter()
                .map(|(name, classes)| {
                    let mut output = InferRequestedOutputTensor {
                        name: name.to_string(),
                        ..Default::default()
                    };
                    if let Some(k) = classes {
                        output.parameters.insert(
                            "classification".to_string(),
                            InferParameter {
                                parameter_choice: Some(Parameter_choice::Int64Param(*k)),
                                ..Default::default()
                            },
                        );
                    }
                    output
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The recorded probabilities of `output`, row by row.
    fn probabilities(&self, output: &str) -> Vec<Vec<f64>> {
        let (_, shape, data) = &self.outputs[output];
        let classes = shape[1] as usize;
        data.chunks(classes)
            .map(|row| row.iter().map(|v| v.as_f64().unwrap()).collect())
            .collect()
    }
}

/// An answer's output `name` as f64 values (FP32 or INT64) and its shape.
fn numbers(response: &ModelInferResponse, name: &str) -> (Vec<i64>, Vec<f64>) {
    let i = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap();
    let output = &response.outputs[i];
    let bytes = &response.raw_output_contents[i];
    let values = match output.datatype.as_str() {
        "FP32" => bytes
            .chunks(4)
            .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
            .collect(),
        "INT64" => bytes
            .chunks(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("output {name} is {other}"),
    };
    (output.shape.clone(), values)
}

/// An answer's BYTES output `name` as strings, and its shape.
fn strings(response: &ModelInferResponse, name: &str) -> (Vec<i64>, Vec<String>) {
    let i = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap();
    assert_eq!(response.outputs[i].datatype, "BYTES");
    let mut rest = &response.raw_output_contents[i][..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(rest[4..4 + len].to_vec()).unwrap());
        rest = &rest[4 + len..];
    }
    (response.outputs[i].shape.clone(), out)
}

/// The models, their probability output (a ZipMap but for XGBoost's) and their label output.
const MODELS: [(&str, &str, Option<&str>); 4] = [
    ("iris_logreg", "output_probability", Some("output_label")),
    // Its label output is BYTES: the class names.
    ("iris_forest", "output_probability", Some("output_label")),
    ("iris_lightgbm", "probabilities", Some("label")),
    // A plain probability tensor, no class labels.
    ("iris_xgboost", "probabilities", Some("label")),
];

fn served_as_exported_over(tcp: bool) {
    for (model, probabilities, label) in MODELS {
        let (_dir, mut sidecar) = serve(
            model,
            tcp,
            "[sidecar.batching]\nmax-queue-delay = \"20 ms\"\n",
            &[],
        );
        let client = client(&sidecar.grpc_target());
        let recorded = recorded(model);

        // Metadata: the ZipMap is an FP32 [-1, classes] tensor; every output is batched.
        let metadata = client
            .model_metadata_opt(
                &ModelMetadataRequest {
                    name: model.into(),
                    ..Default::default()
                },
                patient(),
            )
            .unwrap();
        let described: BTreeMap<&str, (&str, &[i64])> = metadata
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), (o.datatype.as_str(), &o.shape[..])))
            .collect();
        assert_eq!(described[probabilities], ("FP32", &[-1, 3][..]), "{model}");
        if let Some(label) = label {
            let datatype = recorded.outputs[label].0.as_str();
            assert_eq!(described[label], (datatype, &[-1][..]), "{model}: {label}");
        }
        // ModelConfig: batched, with the class labels in its parameters.
        let config = client
            .model_config_opt(
                &ModelConfigRequest {
                    name: model.into(),
                    ..Default::default()
                },
                patient(),
            )
            .unwrap()
            .config
            .unwrap();
        assert!(config.max_batch_size > 0, "{model} is not batched");
        let labels: Vec<String> = config
            .parameters
            .get(&format!("{probabilities}.labels"))
            .map(|labels| serde_json::from_str(&labels.string_value).unwrap())
            .unwrap_or_default();
        let recorded_labels = recorded
            .labels
            .get(probabilities)
            .cloned()
            .unwrap_or_default();
        assert_eq!(labels, recorded_labels, "{model}");

        // All rows at once: the outputs ONNX Runtime computed in process.
        let mut asked = vec![(probabilities, None)];
        if let Some(label) = label {
            asked.push((label, None));
        }
        let response = client
            .model_infer_opt(
                &recorded.request(model, 0, recorded.rows, &asked),
                patient(),
            )
            .unwrap();
        let (shape, values) = numbers(&response, probabilities);
        assert_eq!(shape, [recorded.rows as i64, 3], "{model}");
        for (got, want) in values
            .iter()
            .zip(recorded.probabilities(probabilities).concat())
        {
            assert!((got - want).abs() <= 1e-6, "{model}: {got} vs {want}");
        }
        if let Some(label) = label {
            let want = &recorded.outputs[label].2;
            if recorded.outputs[label].0 == "BYTES" {
                let (shape, values) = strings(&response, label);
                assert_eq!(shape, [recorded.rows as i64], "{model}: {label}");
                let want: Vec<&str> = want.iter().map(|v| v.as_str().unwrap()).collect();
                assert_eq!(values, want, "{model}: {label}");
            } else {
                let (shape, values) = numbers(&response, label);
                assert_eq!(shape, [recorded.rows as i64], "{model}: {label}");
                let want: Vec<f64> = want.iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(values, want, "{model}: {label}");
            }
        }

        // Triton's classification extension: the top 2 classes of each row.
        let response = client
            .model_infer_opt(
                &recorded.request(model, 0, recorded.rows, &[(probabilities, Some(2))]),
                patient(),
            )
            .unwrap();
        let (shape, top) = strings(&response, probabilities);
        assert_eq!(shape, [recorded.rows as i64, 2], "{model}");
        let reference: Vec<String> = recorded
            .probabilities(probabilities)
            .iter()
            .flat_map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                order
                    .into_iter()
                    .take(2)
                    .map(|c| match recorded_labels.get(c) {
                        Some(label) => format!("{:.6}:{c}:{label}", row[c]),
                        None => format!("{:.6}:{c}", row[c]),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(top, reference, "{model}");

        // 16 concurrent single-row clients are batched together.
        let target = sidecar.grpc_target();
        let (_, executions_before) = counts(&client, model);
        let per_client = 10;
        thread::scope(|scope| {
            for c in 0..16 {
                let (target, recorded) = (&target, &recorded);
                scope.spawn(move || {
                    let client = crate::inference::client(target);
                    for r in 0..per_client {
                        let row = (c + r) % recorded.rows;
                        let response = client
                            .model_infer_opt(
                                &recorded.request(model, row, row + 1, &[(probabilities, None)]),
                                patient(),
                            )
                            .unwrap();
                        let (_, values) = numbers(&response, probabilities);
                        let want = &recorded.probabilities(probabilities)[row];
                        for (got, want) in values.iter().zip(want) {
                            assert!((got - want).abs() <= 1e-6, "{model} row {row}");
                        }
                    }
                });
            }
        });
        let (_, executions_after) = counts(&client, model);
        let executions = executions_after - executions_before;
        assert!(
            executions < 16 * per_client as u64,
            "{model}: {executions} executions for {} single-row requests: not batched",
            16 * per_client
        );
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
}

#[test]
fn exported_classifiers_are_served_as_exported_over_the_unix_socket() {
    served_as_exported_over(false);
}

#[test]
fn exported_classifiers_are_served_as_exported_over_tcp() {
    served_as_exported_over(true);
}

#[test]
fn a_classification_the_output_cannot_give_is_refused_by_name() {
    let (_dir, mut sidecar) = serve("iris_logreg", false, "", &[]);
    let client = client(&sidecar.grpc_target());
    let recorded = recorded("iris_logreg");
    for (output, k, wanted) in [
        (
            "output_probability",
            0,
            "output \"output_probability\": parameter \"classification\" must be an int64_param of at least 1",
        ),
        (
            "output_label",
            1,
            "output \"output_label\" is INT64 [-1]: classification needs one vector of scores per row",
        ),
    ] {
        let result = client.model_infer_opt(
            &recorded.request("iris_logreg", 0, 1, &[(output, Some(k))]),
            patient(),
        );
        match result {
            Err(grpcio::Error::RpcFailure(status)) => {
                assert_eq!(status.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT);
                assert!(status.message().contains(wanted), "{}", status.message());
            }
            other => panic!("{output}: {other:?}"),
        }
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// Rows `from..to` of every recorded input, BYTES ones as the protocol's raw form.
fn all_inputs(recorded: &Recorded, model: &str, from: usize, to: usize) -> ModelInferRequest {
    let mut request = ModelInferRequest {
        model_name: model.to_string(),
        ..Default::default()
    };
    for (name, (datatype, shape, data)) in &recorded.inputs {
        let per_row = shape[1..].iter().product::<i64>() as usize;
        let rows = &data[from * per_row..to * per_row];
        let raw: Vec<u8> = match datatype.as_str() {
            "BYTES" => rows
                .iter()
                .flat_map(|v| {
                    let text = v.as_str().unwrap().as_bytes();
                    let mut element = (text.len() as u32).to_le_bytes().to_vec();
                    element.extend_from_slice(text);
                    element
                })
                .collect(),
            _ => rows
                .iter()
                .flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes())
                .collect(),
        };
        let mut row_shape = shape.clone();
        row_shape[0] = (to - from) as i64;
        request.inputs.push(InferInputTensor {
            name: name.clone(),
            datatype: datatype.clone(),
            shape: row_shape,
            ..Default::default()
        });
        request.raw_input_contents.push(raw);
    }
    request
}

/// A pipeline with a string column (a OneHotEncoder on the payment channel): its BYTES input is
/// served and batched with rows of every length, an unknown category included.
fn a_string_column_over(tcp: bool) {
    let (_dir, mut sidecar) = serve(
        "payments",
        tcp,
        "[sidecar.batching]\nmax-queue-delay = \"20 ms\"\n",
        &[],
    );
    let client = client(&sidecar.grpc_target());
    let recorded = recorded("payments");
    let metadata = client
        .model_metadata_opt(
            &ModelMetadataRequest {
                name: "payments".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    let channel = metadata
        .inputs
        .iter()
        .find(|i| i.name == "channel")
        .unwrap();
    assert_eq!(
        (channel.datatype.as_str(), &channel.shape[..]),
        ("BYTES", &[-1, 1][..])
    );
    let check = |response: &ModelInferResponse, from: usize| {
        let (_, labels) = numbers(response, "output_label");
        let (_, probabilities) = numbers(response, "output_probability");
        for (i, label) in labels.iter().enumerate() {
            let want = recorded.outputs["output_label"].2[from + i]
                .as_f64()
                .unwrap();
            assert_eq!(*label, want, "row {}", from + i);
            for c in 0..2 {
                let want = recorded.outputs["output_probability"].2[(from + i) * 2 + c]
                    .as_f64()
                    .unwrap();
                assert!(
                    (probabilities[i * 2 + c] - want).abs() <= 1e-6,
                    "row {}",
                    from + i
                );
            }
        }
    };
    let response = client
        .model_infer_opt(
            &all_inputs(&recorded, "payments", 0, recorded.rows),
            patient(),
        )
        .unwrap();
    check(&response, 0);
    let (_, before) = counts(&client, "payments");
    let per_client = 8;
    let target = sidecar.grpc_target();
    thread::scope(|scope| {
        for c in 0..16 {
            let (target, recorded, check) = (&target, &recorded, &check);
            scope.spawn(move || {
                let client = crate::inference::client(target);
                for r in 0..per_client {
                    let row = (c + r) % recorded.rows;
                    let response = client
                        .model_infer_opt(&all_inputs(recorded, "payments", row, row + 1), patient())
                        .unwrap();
                    check(&response, row);
                }
            });
        }
    });
    let (_, after) = counts(&client, "payments");
    assert!(
        after - before < 16 * per_client as u64,
        "{} executions for {} single-row requests: not batched",
        after - before,
        16 * per_client
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn a_string_column_is_served_and_batched_over_the_unix_socket() {
    a_string_column_over(false);
}

#[test]
fn a_string_column_is_served_and_batched_over_tcp() {
    a_string_column_over(true);
}

/// BYTES in and out of a model that returns its text unchanged: raw and typed contents,
/// elements of every length, and bad contents refused naming the input.
#[test]
fn bytes_go_in_and_out_and_bad_bytes_are_refused_by_name() {
    let (_dir, mut sidecar) = serve("strings", false, "", &[]);
    let client = client(&sidecar.grpc_target());
    let texts = ["", "pos", "mobile wallet", "Zürich 🚆", "web"];
    let raw: Vec<u8> = texts
        .iter()
        .flat_map(|t| {
            let mut element = (t.len() as u32).to_le_bytes().to_vec();
            element.extend_from_slice(t.as_bytes());
            element
        })
        .collect();
    let request = |contents: Option<Vec<u8>>, typed: Vec<&[u8]>, count: usize| {
        let mut request = ModelInferRequest {
            model_name: "strings".into(),
            inputs: vec![InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![count as i64],
                ..Default::default()
            }],
            ..Default::default()
        };
        match contents {
            Some(raw) => request.raw_input_contents.push(raw),
            None => {
                request.inputs[0].contents = Some(InferTensorContents {
                    bytes_contents: typed.iter().map(|b| b.to_vec()).collect(),
                    ..Default::default()
                })
                .into()
            }
        }
        request
    };
    for sent in [
        request(Some(raw.clone()), Vec::new(), texts.len()),
        request(
            None,
            texts.iter().map(|t| t.as_bytes()).collect(),
            texts.len(),
        ),
    ] {
        let response = client.model_infer_opt(&sent, patient()).unwrap();
        let (shape, got) = strings(&response, "same");
        assert_eq!(shape, [texts.len() as i64]);
        assert_eq!(got, texts);
    }
    for (sent, wanted) in [
        (
            request(Some(raw[..raw.len() - 1].to_vec()), Vec::new(), texts.len()),
            "input \"text\": element 4 is 3 bytes long, past the end of the contents",
        ),
        (
            request(Some(raw[..2].to_vec()), Vec::new(), 1),
            "input \"text\": element 0's 4-byte length prefix runs past the end",
        ),
        (
            request(Some(raw.clone()), Vec::new(), 4),
            "input \"text\": holds 5 elements but shape [4] has 4",
        ),
        (
            request(None, vec![&b"ok"[..], &[0xff, 0xfe][..]], 2),
            "input \"text\": element 1 is not valid UTF-8",
        ),
        (
            request(None, vec![&b"a\0b"[..]], 1),
            "input \"text\": element 0 holds a NUL byte",
        ),
    ] {
        match client.model_infer_opt(&sent, patient()) {
            Err(grpcio::Error::RpcFailure(status)) => {
                assert_eq!(status.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT);
                assert!(status.message().contains(wanted), "{}", status.message());
            }
            other => panic!("{wanted}: {other:?}"),
        }
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}
