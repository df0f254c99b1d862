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

//! Inference over `inference.GRPCInferenceService`, against the real binary and ONNX Runtime's
//! CPU library: outputs equal to what ONNX Runtime computed in process for the fixture models
//! (tests/fixtures/models/*.expected.json, written by tests/fixtures/make_models.py), over the
//! Unix socket and TCP, unary and streaming; every datatype; models without a batch
//! dimension; metadata, config and readiness. The request helpers here serve the other files.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use gpu_sidecar::proto::grpc_service::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode, WriteFlags};

use crate::util::{ConfigText, Sidecar, TestDir, PATIENCE};

/// A sidecar serving the fixture `model`, READY, with `extra` config appended.
pub(crate) fn serve(
    model: &str,
    tcp: bool,
    extra: &str,
    envs: &[(&str, &str)],
) -> (TestDir, Sidecar) {
    serve_with(model, envs, |config| {
        if tcp {
            config.endpoint = "127.0.0.1:0".to_string();
        }
        config.extra = extra.to_string();
    })
}

/// A sidecar serving the fixture `model`, READY, its config as `edit` leaves it.
pub(crate) fn serve_with(
    model: &str,
    envs: &[(&str, &str)],
    edit: impl FnOnce(&mut ConfigText),
) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.copy_fixture(model, &format!("{model}.onnx"));
    let mut config = ConfigText::new(&dir);
    config.model = format!("{model}.onnx");
    edit(&mut config);
    let path = dir.write_config(&config.render());
    let mut envs = envs.to_vec();
    envs.push(("CUDA_VISIBLE_DEVICES", ""));
    let mut sidecar = Sidecar::spawn(&path, &envs);
    sidecar.wait_ready();
    (dir, sidecar)
}

pub(crate) fn client(target: &str) -> GrpcInferenceServiceClient {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(env)
        .max_receive_message_len(-1)
        .connect(target);
    GrpcInferenceServiceClient::new(channel)
}

pub(crate) fn patient() -> CallOption {
    CallOption::default().timeout(PATIENCE)
}

/// A fixture's inputs and the outputs ONNX Runtime computed for them in process.
pub(crate) struct Expected {
    pub(crate) inputs: Vec<(String, Tensor)>,
    pub(crate) outputs: BTreeMap<String, Tensor>,
}

/// A tensor from the fixture's JSON: datatype, shape, values.
#[derive(Debug, Clone)]
pub(crate) struct Tensor {
    pub(crate) datatype: String,
    pub(crate) shape: Vec<i64>,
    pub(crate) values: Vec<f64>,
}

impl Tensor {
    /// Row-major little-endian bytes, as `raw_input_contents` carries them.
    fn raw(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &v in &self.values {
            match self.datatype.as_str() {
                "BOOL" => bytes.push(u8::from(v != 0.0)),
                "UINT8" => bytes.push(v as u8),
                "INT8" => bytes.extend((v as i8).to_le_bytes()),
                "INT32" => bytes.extend((v as i32).to_le_bytes()),
                "INT64" => bytes.extend((v as i64).to_le_bytes()),
                "FP16" => bytes.extend(half::f16::from_f64(v).to_le_bytes()),
                "FP32" => bytes.extend((v as f32).to_le_bytes()),
                "FP64" => bytes.extend(v.to_le_bytes()),
                other => panic!("fixture datatype {other}"),
            }
        }
        bytes
    }

    /// Values from raw bytes of `datatype`.
    fn decode(datatype: &str, shape: &[i64], bytes: &[u8]) -> Tensor {
        let values = match datatype {
            "BOOL" | "UINT8" => bytes.iter().map(|&b| f64::from(b)).collect(),
            "INT8" => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
            "INT32" => bytes
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "INT64" => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            "FP16" => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            "FP32" => bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "FP64" => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            other => panic!("datatype {other}"),
        };
        Tensor {
            datatype: datatype.to_string(),
            shape: shape.to_vec(),
            values,
        }
    }

    /// Rows `from..to` of this tensor.
    pub(crate) fn rows(&self, from: usize, to: usize) -> Tensor {
        let per_row = self.values.len() / self.shape[0] as usize;
        let mut shape = self.shape.clone();
        shape[0] = (to - from) as i64;
        Tensor {
            datatype: self.datatype.clone(),
            shape,
            values: self.values[from * per_row..to * per_row].to_vec(),
        }
    }

    /// Equal in datatype and shape, values equal up to float rounding of a different batch.
    fn assert_matches(&self, expected: &Tensor, what: &str) {
        assert_eq!(self.datatype, expected.datatype, "{what}");
        assert_eq!(self.shape, expected.shape, "{what}");
        assert_eq!(self.values.len(), expected.values.len(), "{what}");
        for (got, want) in self.values.iter().zip(&expected.values) {
            let tolerance = 1e-5 * want.abs().max(1.0);
            assert!((got - want).abs() <= tolerance, "{what}: {got} != {want}");
        }
    }
}

pub(crate) fn expected(model: &str) -> Expected {
    let path = crate::util::fixture_path(&format!("models/{model}.expected.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensor = |value: &serde_json::Value| Tensor {
        datatype: value["datatype"].as_str().unwrap().to_string(),
        shape: value["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect(),
        values: value["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().or_else(|| v.as_bool().map(f64::from)).unwrap())
            .collect(),
    };
    let map = |key: &str| {
        json[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| (name.clone(), tensor(value)))
            .collect::<Vec<_>>()
    };
    Expected {
        inputs: map("inputs"),
        outputs: map("outputs").into_iter().collect(),
    }
}

/// A request for `model` carrying `inputs` as raw bytes.
pub(crate) fn raw_request(model: &str, id: &str, inputs: &[(String, Tensor)]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_string(),
        id: id.to_string(),
        inputs: inputs
            .iter()
            .map(|(name, t)| InferInputTensor {
                name: name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|(_, t)| t.raw()).collect(),
        ..Default::default()
    }
}

/// The response's outputs by name.
pub(crate) fn outputs(response: &ModelInferResponse) -> BTreeMap<String, Tensor> {
    response
        .outputs
        .iter()
        .zip(&response.raw_output_contents)
        .map(|(o, raw)| (o.name.clone(), Tensor::decode(&o.datatype, &o.shape, raw)))
        .collect()
}

pub(crate) fn assert_outputs(response: &ModelInferResponse, expected: &BTreeMap<String, Tensor>) {
    let got = outputs(response);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (name, tensor) in &got {
        tensor.assert_matches(&expected[name], name);
    }
}

/// The model's statistics: (inference_count, execution_count).
pub(crate) fn counts(client: &GrpcInferenceServiceClient, model: &str) -> (u64, u64) {
    let stats = client
        .model_statistics_opt(
            &ModelStatisticsRequest {
                name: model.to_string(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    let stats = &stats.model_stats[0];
    (stats.inference_count, stats.execution_count)
}

pub(crate) fn status_of<T: std::fmt::Debug>(result: grpcio::Result<T>) -> (RpcStatusCode, String) {
    match result {
        Err(grpcio::Error::RpcFailure(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected a failure status, got {other:?}"),
    }
}

/// Whether a client's half-close of a stream went well. grpcio's client reports
/// `RpcFinished(None)` when the server ended the call (with OK) before the half-close's own
/// completion was seen: the server got the half-close and finished, which is success too.
pub(crate) fn closed_cleanly(closed: &grpcio::Result<()>) -> bool {
    matches!(closed, Ok(()) | Err(grpcio::Error::RpcFinished(None)))
}

fn outputs_match_over(tcp: bool) {
    let (_dir, mut sidecar) = serve("affine", tcp, "", &[]);
    let client = client(&sidecar.grpc_target());
    let expected = expected("affine");
    // Unary, raw contents, all rows at once.
    let response = client
        .model_infer_opt(&raw_request("affine", "all", &expected.inputs), patient())
        .unwrap();
    assert_eq!(response.id, "all");
    assert_eq!(response.model_name, "affine");
    assert_outputs(&response, &expected.outputs);
    // Unary, typed contents, one requested output.
    let (name, features) = &expected.inputs[0];
    let mut typed = raw_request("affine", "typed", &expected.inputs);
    typed.raw_input_contents.clear();
    typed.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: features.values.iter().map(|&v| v as f32).collect(),
        ..Default::default()
    })
    .into();
    typed.outputs.push(InferRequestedOutputTensor {
        name: "best".to_string(),
        ..Default::default()
    });
    let response = client.model_infer_opt(&typed, patient()).unwrap();
    assert_eq!(response.outputs.len(), 1);
    outputs(&response)["best"].assert_matches(&expected.outputs["best"], "best");
    // Streaming: one request per row, each answered with its own row and id.
    let rows = features.shape[0] as usize;
    let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
    let outcome = block_on(async {
        for row in 0..rows {
            let request = raw_request(
                "affine",
                &format!("row-{row}"),
                &[(name.clone(), features.rows(row, row + 1))],
            );
            sink.send((request, WriteFlags::default())).await.unwrap();
        }
        let mut seen = 0;
        while seen < rows {
            let message = receiver.next().await.unwrap().unwrap();
            assert_eq!(message.error_message, "");
            let response = message.infer_response.unwrap();
            let row: usize = response.id.strip_prefix("row-").unwrap().parse().unwrap();
            let want: BTreeMap<String, Tensor> = expected
                .outputs
                .iter()
                .map(|(k, t)| (k.clone(), t.rows(row, row + 1)))
                .collect();
            assert_outputs(&response, &want);
            seen += 1;
        }
        let closed = sink.close().await;
        let ended = receiver.next().await;
        (closed, ended)
    });
    let (closed, ended) = outcome;
    if !closed_cleanly(&closed) || ended.is_some() {
        panic!(
            "closing: {closed:?}, then {ended:?}; log:\n{}",
            sidecar.log()
        );
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn outputs_equal_the_runtime_in_process_over_the_unix_socket() {
    outputs_match_over(false);
}

#[test]
fn outputs_equal_the_runtime_in_process_over_tcp() {
    outputs_match_over(true);
}

#[test]
fn every_datatype_goes_in_and_out_as_the_runtime_computes_it() {
    let (_dir, _sidecar) = serve("dtypes", false, "", &[]);
    let client = client(&_sidecar.grpc_target());
    let expected = expected("dtypes");
    let response = client
        .model_infer_opt(&raw_request("dtypes", "", &expected.inputs), patient())
        .unwrap();
    assert_outputs(&response, &expected.outputs);
    // The pass-through outputs are the input bytes, exactly.
    for (name, tensor) in &expected.inputs {
        let output = name.replace("_in", "_out");
        let index = response
            .outputs
            .iter()
            .position(|o| o.name == output)
            .unwrap();
        assert_eq!(
            response.raw_output_contents[index],
            tensor.raw(),
            "{output}"
        );
    }
}

#[test]
fn a_model_without_a_batch_dimension_runs_one_request_at_a_time() {
    let (_dir, sidecar) = serve("fixed", false, "", &[]);
    let client = client(&sidecar.grpc_target());
    let expected = expected("fixed");
    let response = client
        .model_infer_opt(&raw_request("fixed", "", &expected.inputs), patient())
        .unwrap();
    assert_outputs(&response, &expected.outputs);
    let config = client
        .model_config_opt(
            &ModelConfigRequest {
                name: "fixed".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.max_batch_size, 0);
    assert_eq!(config.input[0].dims, [2, 3]);
    assert!(config.scheduling_choice.is_none(), "no dynamic batching");
    let (code, message) = status_of(client.model_infer_opt(
        &raw_request(
            "fixed",
            "",
            &[(
                "x".into(),
                Tensor {
                    datatype: "FP32".into(),
                    shape: vec![1, 3],
                    values: vec![0.0; 3],
                },
            )],
        ),
        patient(),
    ));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(
        message.contains(
            "unexpected shape for input 'x' for model 'fixed'. Expected [2,3], got [1,3]"
        ),
        "{message}"
    );
}

#[test]
fn metadata_config_and_readiness_agree_with_the_model() {
    let (_dir, sidecar) = serve("affine", true, "[sidecar.batching]\nmax-batch-size = 16\nmax-queue-delay = \"3 ms\"\nmax-queue-size = 100\ndefault-timeout = \"2 s\"\n", &[]);
    let client = client(&sidecar.grpc_target());
    assert!(
        client
            .server_live_opt(&Default::default(), patient())
            .unwrap()
            .live
    );
    assert!(
        client
            .server_ready_opt(&Default::default(), patient())
            .unwrap()
            .ready
    );
    let ready = |name: &str| {
        client.model_ready_opt(
            &ModelReadyRequest {
                name: name.into(),
                ..Default::default()
            },
            patient(),
        )
    };
    assert!(ready("affine").unwrap().ready);
    assert_eq!(status_of(ready("other")).0, RpcStatusCode::NOT_FOUND);
    let server = client
        .server_metadata_opt(&Default::default(), patient())
        .unwrap();
    assert_eq!(server.name, "gpu-sidecar");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    let metadata = client
        .model_metadata_opt(
            &ModelMetadataRequest {
                name: "affine".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    assert_eq!(metadata.platform, "onnxruntime_onnx");
    assert_eq!(metadata.versions, ["1"]);
    let shapes: Vec<_> = metadata
        .inputs
        .iter()
        .chain(&metadata.outputs)
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("features", "FP32", vec![-1, 4]),
            ("scores", "FP32", vec![-1, 3]),
            ("best", "INT64", vec![-1])
        ]
    );
    let config = client
        .model_config_opt(
            &ModelConfigRequest {
                name: "affine".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.name, "affine");
    assert_eq!(config.platform, "onnxruntime_onnx");
    assert_eq!(config.max_batch_size, 16);
    assert_eq!(config.input[0].dims, [4]);
    // `best`, one value per row ([-1]): as Triton's own configurations write it.
    assert_eq!(config.output[1].dims, [1]);
    assert_eq!(config.output[1].reshape.shape, Vec::<i64>::new());
    assert!(config.output[1].reshape.is_some());
    assert!(config.output[0].reshape.is_none());
    use gpu_sidecar::proto::model_config::model_config::Scheduling_choice;
    let Some(Scheduling_choice::DynamicBatching(batching)) = config.scheduling_choice else {
        panic!("no dynamic batching in {config:?}");
    };
    assert_eq!(batching.max_queue_delay_microseconds, 3000);
    let policy = batching.default_queue_policy.unwrap();
    assert_eq!(policy.max_queue_size, 100);
    assert_eq!(policy.default_timeout_microseconds, 2_000_000);
    // The one model, in the repository's index.
    let index = client
        .repository_index_opt(&Default::default(), patient())
        .unwrap();
    let listed: Vec<_> = index
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.version.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(listed, [("affine", "1", "READY")]);
    let (code, message) = status_of(client.model_metadata_opt(
        &ModelMetadataRequest {
            name: "affine".into(),
            version: "7".into(),
            ..Default::default()
        },
        patient(),
    ));
    assert_eq!(code, RpcStatusCode::NOT_FOUND);
    assert!(message.contains("no version \"7\""), "{message}");
}

/// The slow model runs `index` iterations: about 2 µs each.
pub(crate) fn slow_request(id: &str, iterations: i64) -> ModelInferRequest {
    raw_request(
        "slow",
        id,
        &[(
            "index".into(),
            Tensor {
                datatype: "INT64".into(),
                shape: vec![1, 1],
                values: vec![iterations as f64],
            },
        )],
    )
}

/// A request of `rows` rows of the sample model's `features`, all zeros, as raw bytes.
pub(crate) fn zero_features(id: &str, rows: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "affine".to_string(),
        id: id.to_string(),
        inputs: vec![InferInputTensor {
            name: "features".to_string(),
            datatype: "FP32".to_string(),
            shape: vec![rows as i64, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0; rows * 16]],
        ..Default::default()
    }
}
