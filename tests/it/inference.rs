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
//! Unix socket and TCP, unary and streaming; metadata; batching; back-pressure, deadlines,
//! cancellation, bad requests, runtime failures and SIGTERM under load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use gpu_sidecar::proto::grpc_service::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode, WriteFlags};

use crate::util::{ConfigText, Scrape, Sidecar, TestDir, PATIENCE};

/// A sidecar serving the fixture `model`, READY, with `extra` config appended.
pub(crate) fn serve(
    model: &str,
    tcp: bool,
    extra: &str,
    envs: &[(&str, &str)],
) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.copy_fixture(model, &format!("{model}.onnx"));
    let mut config = ConfigText::new(&dir);
    config.model = format!("{model}.onnx");
    if tcp {
        config.endpoint = "127.0.0.1:0".to_string();
    }
    config.extra = extra.to_string();
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
fn a_stream_half_closed_at_once_still_gets_every_answer() {
    let (_dir, sidecar) = serve(
        "lookup",
        false,
        "[sidecar.batching]\nmax-queue-delay = \"20 ms\"\n",
        &[],
    );
    let client = client(&sidecar.grpc_target());
    for _ in 0..5 {
        let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
        block_on(async {
            for i in 0..4i64 {
                let request = lookup_request(&i.to_string(), &[i]);
                sink.send((request, WriteFlags::default())).await.unwrap();
            }
            let closed = sink.close().await;
            assert!(closed_cleanly(&closed), "{closed:?}");
            let mut answered = Vec::new();
            while let Some(message) = receiver.next().await {
                let response = message.unwrap().infer_response.unwrap();
                let i: i64 = response.id.parse().unwrap();
                assert_eq!(lookup_rows(&response), expected_rows(&[i]));
                answered.push(i);
            }
            answered.sort_unstable();
            assert_eq!(answered, [0, 1, 2, 3]);
        });
    }
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
        message.contains("shape [1, 3] does not match the model's [2, 3]"),
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

/// The lookup model answers row i of the table for index i: [2i, 2i+1].
fn lookup_request(id: &str, indices: &[i64]) -> ModelInferRequest {
    raw_request(
        "lookup",
        id,
        &[(
            "index".into(),
            Tensor {
                datatype: "INT64".into(),
                shape: vec![indices.len() as i64, 1],
                values: indices.iter().map(|&i| i as f64).collect(),
            },
        )],
    )
}

fn lookup_rows(response: &ModelInferResponse) -> Vec<f64> {
    outputs(response)["rows"].values.clone()
}

fn expected_rows(indices: &[i64]) -> Vec<f64> {
    indices
        .iter()
        .flat_map(|&i| [2.0 * i as f64, 2.0 * i as f64 + 1.0])
        .collect()
}

#[test]
fn concurrent_clients_are_batched_and_each_gets_its_own_rows() {
    let (_dir, sidecar) = serve(
        "lookup",
        false,
        "[sidecar.batching]\nmax-queue-delay = \"20 ms\"\n",
        &[],
    );
    let target = sidecar.grpc_target();
    let requests_per_client = 20;
    let clients = 8;
    thread::scope(|scope| {
        for c in 0..clients {
            let target = target.clone();
            scope.spawn(move || {
                let client = client(&target);
                for r in 0..requests_per_client {
                    let indices = [((c + r) % 4) as i64, (r % 4) as i64];
                    let response = client
                        .model_infer_opt(&lookup_request(&format!("{c}-{r}"), &indices), patient())
                        .unwrap();
                    assert_eq!(response.id, format!("{c}-{r}"));
                    assert_eq!(lookup_rows(&response), expected_rows(&indices));
                }
            });
        }
    });
    let (rows, executions) = counts(&client(&target), "lookup");
    let requests = (clients * requests_per_client) as u64;
    assert_eq!(rows, 2 * requests);
    assert!(
        executions < requests,
        "{executions} executions for {requests} requests: not batched"
    );
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_inference_requests_total{outcome=\"ok\"}"),
        requests as f64
    );
    assert_eq!(
        scrape.get("gpu_sidecar_inference_executions_total"),
        executions as f64
    );
}

#[test]
fn a_runtime_failure_fails_only_its_request_and_the_sidecar_keeps_serving() {
    let (_dir, mut sidecar) = serve("lookup", false, "", &[]);
    let client = client(&sidecar.grpc_target());
    let (code, message) =
        status_of(client.model_infer_opt(&lookup_request("bad", &[9]), patient()));
    assert_eq!(code, RpcStatusCode::INTERNAL);
    assert!(
        message.starts_with("ONNX Runtime failed to run the batch: "),
        "{message}"
    );
    assert!(
        message.contains("Gather"),
        "the runtime's own message: {message}"
    );
    let response = client
        .model_infer_opt(&lookup_request("good", &[3, 1]), patient())
        .unwrap();
    assert_eq!(lookup_rows(&response), expected_rows(&[3, 1]));
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_inference_requests_total{outcome=\"internal\"}"),
        1.0
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn bad_requests_never_reach_the_runtime_and_streams_stay_open() {
    let (_dir, sidecar) = serve(
        "affine",
        false,
        "[sidecar.batching]\nmax-batch-size = 4\n",
        &[],
    );
    let client = client(&sidecar.grpc_target());
    let expected = expected("affine");
    let features = &expected.inputs[0].1;
    let two_rows = [("features".to_string(), features.rows(0, 2))];
    let cases: Vec<(ModelInferRequest, RpcStatusCode, &str)> = vec![
        (
            {
                let mut r = raw_request("affine", "", &two_rows);
                r.model_name = "resnet".into();
                r
            },
            RpcStatusCode::NOT_FOUND,
            "unknown model \"resnet\"",
        ),
        (
            {
                let mut r = raw_request("affine", "", &two_rows);
                r.inputs[0].datatype = "FP64".into();
                r
            },
            RpcStatusCode::INVALID_ARGUMENT,
            "input \"features\": datatype FP64 does not match the model's FP32",
        ),
        (
            {
                let mut r = raw_request("affine", "", &two_rows);
                r.raw_input_contents[0].truncate(7);
                r
            },
            RpcStatusCode::INVALID_ARGUMENT,
            "input \"features\": raw contents are 7 bytes",
        ),
        (
            raw_request("affine", "", &[("features".into(), features.rows(0, 5))]),
            RpcStatusCode::INVALID_ARGUMENT,
            "has 5 rows, more than max-batch-size 4",
        ),
        (
            raw_request("affine", "", &[]),
            RpcStatusCode::INVALID_ARGUMENT,
            "missing input \"features\"",
        ),
    ];
    for (request, code, needle) in &cases {
        let (got, message) = status_of(client.model_infer_opt(request, patient()));
        assert_eq!(got, *code, "{message}");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    // On a stream: an error answer per bad request, with its id, and the stream goes on.
    let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
    block_on(async {
        let mut bad = cases[1].0.clone();
        bad.id = "bad".into();
        sink.send((bad, WriteFlags::default())).await.unwrap();
        let answer = receiver.next().await.unwrap().unwrap();
        assert!(
            answer
                .error_message
                .starts_with("INVALID_ARGUMENT: input \"features\""),
            "{answer:?}"
        );
        assert_eq!(answer.infer_response.id, "bad");
        let good = raw_request(
            "affine",
            "good",
            &[("features".into(), features.rows(0, 1))],
        );
        sink.send((good, WriteFlags::default())).await.unwrap();
        let answer = receiver.next().await.unwrap().unwrap();
        assert_eq!(answer.error_message, "");
        assert_eq!(answer.infer_response.id, "good");
        let closed = sink.close().await;
        assert!(closed_cleanly(&closed), "{closed:?}");
    });
    let (rows, _) = counts(&client, "affine");
    // Only the warm-up ran besides the one good row; bad requests never did.
    assert_eq!(rows, 1, "rows run");
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_inference_requests_total{outcome=\"invalid\"}"),
        (cases.len() + 1) as f64
    );
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

#[test]
fn after_the_grace_period_the_execution_is_ended_and_the_queue_answered() {
    let dir = TestDir::new();
    dir.copy_fixture("slow", "slow.onnx");
    let mut config = ConfigText::new(&dir);
    config.model = "slow.onnx".to_string();
    config.grace_period = "1 s".to_string();
    config.extra = "[sidecar.batching]\nmax-batch-size = 0\n".to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_ready();
    let client = client(&sidecar.grpc_target());
    let expected = expected("slow");
    let quick = client
        .model_infer_opt(&raw_request("slow", "", &expected.inputs), patient())
        .unwrap();
    assert_outputs(&quick, &expected.outputs);
    // Minutes of work, then requests queued behind it.
    let running = client
        .model_infer_async_opt(&slow_request("long", 100_000_000), patient())
        .unwrap();
    let queued: Vec<_> = (0..3)
        .map(|i| {
            client
                .model_infer_async_opt(&slow_request(&format!("q{i}"), 1), patient())
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    while Scrape::fetch(sidecar.health_addr()).get("gpu_sidecar_inference_queue_depth") < 3.0 {
        assert!(std::time::Instant::now() < deadline, "requests not queued");
        thread::sleep(std::time::Duration::from_millis(20));
    }
    let signalled = std::time::Instant::now();
    sidecar.signal(libc::SIGTERM);
    for answer in std::iter::once(running).chain(queued) {
        let (code, _) = status_of(block_on(answer));
        assert!(
            matches!(code, RpcStatusCode::CANCELLED | RpcStatusCode::UNAVAILABLE),
            "{code:?}"
        );
    }
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    let took = signalled.elapsed();
    assert!(
        took < std::time::Duration::from_secs(8),
        "shutdown took {took:?}"
    );
    let log = sidecar.log();
    assert!(log.contains("was ended by the shutdown"), "{log}");
    assert!(
        log.contains("3 queued request(s) answered UNAVAILABLE without running"),
        "{log}"
    );
}

/// Tests that hold the GPU-owner thread in each execution (fail point `gpu::execute`).
#[cfg(feature = "failpoints")]
mod held {
    use super::*;
    use crate::util::Gate;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// A lookup sidecar whose executions each take `hold_ms`.
    fn slow(hold_ms: u64, extra: &str) -> (TestDir, Sidecar) {
        serve(
            "lookup",
            false,
            extra,
            &[("FAILPOINTS", &format!("gpu::execute=sleep({hold_ms})"))],
        )
    }

    /// A lookup sidecar whose executions are held at `gate` until it is released.
    fn held(gate: &Gate, extra: &str) -> (TestDir, Sidecar) {
        serve(
            "lookup",
            false,
            extra,
            &[("FAILPOINTS", &gate.at("gpu::execute"))],
        )
    }

    /// Sends a request in the background; its result arrives on the returned receiver.
    fn send_async(
        client: &GrpcInferenceServiceClient,
        request: &ModelInferRequest,
        option: CallOption,
    ) -> grpcio::ClientUnaryReceiver<ModelInferResponse> {
        client.model_infer_async_opt(request, option).unwrap()
    }

    /// Waits until the metric `series` reaches `value`.
    fn wait_metric(sidecar: &Sidecar, series: &str, value: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let scrape = Scrape::fetch(sidecar.health_addr());
            let got = scrape.get(series);
            if got == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {got}, not {value}: {scrape:#?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the first request has left the queue and its execution is held.
    fn wait_held(sidecar: &Sidecar) {
        wait_metric(sidecar, "gpu_sidecar_inference_queue_seconds_count", 1.0);
    }

    #[test]
    fn a_full_queue_answers_resource_exhausted_at_once() {
        let gate = Gate::new();
        let (_dir, sidecar) = held(
            &gate,
            "[sidecar.batching]\nmax-batch-size = 0\nmax-queue-size = 2\n",
        );
        let client = client(&sidecar.grpc_target());
        let running = send_async(&client, &lookup_request("a", &[0]), patient());
        // The first is running (held); two wait; the fourth is refused.
        wait_held(&sidecar);
        let queued: Vec<_> = (0..2)
            .map(|i| send_async(&client, &lookup_request(&format!("q{i}"), &[1]), patient()))
            .collect();
        wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 2.0);
        let asked = Instant::now();
        let (code, message) =
            status_of(client.model_infer_opt(&lookup_request("x", &[2]), patient()));
        assert_eq!(code, RpcStatusCode::RESOURCE_EXHAUSTED);
        assert!(message.contains("queue is full"), "{message}");
        assert!(
            asked.elapsed() < Duration::from_millis(1000),
            "refused at once"
        );
        gate.release();
        assert_eq!(
            lookup_rows(&block_on(running).unwrap()),
            expected_rows(&[0])
        );
        for answer in queued {
            assert_eq!(lookup_rows(&block_on(answer).unwrap()), expected_rows(&[1]));
        }
    }

    #[test]
    fn a_request_whose_deadline_passes_in_the_queue_is_never_run() {
        let gate = Gate::new();
        let (_dir, sidecar) = held(&gate, "[sidecar.batching]\nmax-batch-size = 0\n");
        let client = client(&sidecar.grpc_target());
        let running = send_async(&client, &lookup_request("a", &[0]), patient());
        wait_held(&sidecar);
        // A gRPC deadline, and a `timeout` parameter (µs), both shorter than the hold.
        let late = send_async(
            &client,
            &lookup_request("late", &[1]),
            CallOption::default().timeout(Duration::from_millis(200)),
        );
        let mut with_timeout = lookup_request("timeout", &[2]);
        with_timeout.parameters.insert(
            "timeout".into(),
            InferParameter {
                parameter_choice: Some(
                    gpu_sidecar::proto::grpc_service::infer_parameter::Parameter_choice::Int64Param(
                        200_000,
                    ),
                ),
                ..Default::default()
            },
        );
        let timed = send_async(&client, &with_timeout, patient());
        let timed_sent = Instant::now();
        assert_eq!(
            status_of(block_on(late)).0,
            RpcStatusCode::DEADLINE_EXCEEDED
        );
        // The queued `timeout` request's 200 ms pass while the execution is held.
        wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 2.0);
        thread::sleep(Duration::from_millis(300).saturating_sub(timed_sent.elapsed()));
        gate.release();
        let (code, message) = status_of(block_on(timed));
        assert_eq!(code, RpcStatusCode::DEADLINE_EXCEEDED);
        assert!(message.contains("was not run"), "{message}");
        block_on(running).unwrap();
        // The `timeout` one is refused by the batcher (deadline); the client whose gRPC
        // deadline passed cancels the call itself, a moment before the server's copy of the
        // deadline passes (cancelled or deadline, by a hair).
        let deadline = Instant::now() + PATIENCE;
        loop {
            let scrape = Scrape::fetch(sidecar.health_addr());
            let expired = scrape.get("gpu_sidecar_inference_requests_total{outcome=\"deadline\"}")
                + scrape.get("gpu_sidecar_inference_requests_total{outcome=\"cancelled\"}");
            if expired == 2.0 {
                assert!(
                    scrape.get("gpu_sidecar_inference_requests_total{outcome=\"deadline\"}") >= 1.0
                );
                break;
            }
            assert!(Instant::now() < deadline, "expired requests: {expired}");
            thread::sleep(Duration::from_millis(20));
        }
        // Only the warm-up and the first request ran.
        assert_eq!(counts(&client, "lookup"), (1, 1));
    }

    #[test]
    fn a_cancelled_call_is_dropped_before_it_runs() {
        let gate = Gate::new();
        let (_dir, sidecar) = held(&gate, "[sidecar.batching]\nmax-batch-size = 0\n");
        let client = client(&sidecar.grpc_target());
        let running = send_async(&client, &lookup_request("a", &[0]), patient());
        wait_held(&sidecar);
        let mut cancelled = send_async(&client, &lookup_request("gone", &[1]), patient());
        wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 1.0);
        cancelled.cancel();
        wait_metric(
            &sidecar,
            "gpu_sidecar_inference_requests_total{outcome=\"cancelled\"}",
            1.0,
        );
        gate.release();
        block_on(running).unwrap();
        wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 0.0);
        assert_eq!(counts(&client, "lookup"), (1, 1), "the cancelled call ran");
        wait_metric(&sidecar, "gpu_sidecar_grpc_calls_in_flight", 0.0);
    }

    #[test]
    fn a_vanished_stream_client_abandons_its_queued_requests() {
        let gate = Gate::new();
        let (_dir, sidecar) = held(&gate, "[sidecar.batching]\nmax-batch-size = 0\n");
        let client = client(&sidecar.grpc_target());
        let running = send_async(&client, &lookup_request("a", &[0]), patient());
        wait_held(&sidecar);
        let (mut sink, receiver) = client.model_stream_infer_opt(patient()).unwrap();
        block_on(async {
            for i in 0..2 {
                let request = lookup_request(&format!("s{i}"), &[1]);
                sink.send((request, WriteFlags::default())).await.unwrap();
            }
        });
        wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 2.0);
        wait_metric(&sidecar, "gpu_sidecar_inference_streams_open", 1.0);
        // The client goes away: dropping both halves cancels the call.
        drop(sink);
        drop(receiver);
        wait_metric(&sidecar, "gpu_sidecar_inference_streams_open", 0.0);
        gate.release();
        block_on(running).unwrap();
        wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 0.0);
        wait_metric(
            &sidecar,
            "gpu_sidecar_inference_requests_total{outcome=\"cancelled\"}",
            2.0,
        );
        assert_eq!(
            counts(&client, "lookup"),
            (1, 1),
            "the abandoned requests ran"
        );
        wait_metric(&sidecar, "gpu_sidecar_grpc_calls_in_flight", 0.0);
    }

    #[test]
    fn sigterm_under_inference_load_answers_every_request_and_exits_0() {
        let (_dir, mut sidecar) = slow(30, "[sidecar.batching]\nmax-queue-delay = \"2 ms\"\n");
        let target = sidecar.grpc_target();
        let sent = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let stream_answers = Arc::new(AtomicU64::new(0));
        thread::scope(|scope| {
            for c in 0..6 {
                let (target, sent, ok, refused) =
                    (target.clone(), sent.clone(), ok.clone(), refused.clone());
                scope.spawn(move || {
                    let client = client(&target);
                    loop {
                        sent.fetch_add(1, Ordering::Relaxed);
                        match client
                            .model_infer_opt(&lookup_request(&c.to_string(), &[c % 4]), patient())
                        {
                            Ok(response) => {
                                assert_eq!(lookup_rows(&response), expected_rows(&[c % 4]));
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(grpcio::Error::RpcFailure(status))
                                if matches!(
                                    status.code(),
                                    RpcStatusCode::UNAVAILABLE | RpcStatusCode::CANCELLED
                                ) =>
                            {
                                refused.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => panic!("unexpected failure: {e}"),
                        }
                    }
                });
            }
            // A stream that keeps a request in flight: it is answered, then the stream ends.
            let answers = stream_answers.clone();
            let target = target.clone();
            scope.spawn(move || {
                let client = client(&target);
                let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
                block_on(async {
                    let mut id = 0;
                    loop {
                        id += 1;
                        if sink
                            .send((lookup_request(&id.to_string(), &[1]), WriteFlags::default()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        match receiver.next().await {
                            Some(Ok(answer)) => {
                                if answer.error_message.is_empty() {
                                    answers.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    assert!(
                                        answer.error_message.starts_with("UNAVAILABLE"),
                                        "{answer:?}"
                                    );
                                }
                            }
                            Some(Err(e)) => panic!("the stream failed: {e}"),
                            None => break,
                        }
                    }
                });
            });
            let deadline = Instant::now() + PATIENCE;
            while ok.load(Ordering::Relaxed) < 30 {
                assert!(Instant::now() < deadline, "no load");
                thread::sleep(Duration::from_millis(10));
            }
            sidecar.signal(libc::SIGTERM);
        });
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
        let sent = sent.load(Ordering::Relaxed);
        assert_eq!(
            sent,
            ok.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed),
            "every request answered"
        );
        assert!(stream_answers.load(Ordering::Relaxed) > 0);
    }
}

/// Triton's own Python client (`tritonclient[grpc]`, from PyPI, in .clients/ made by
/// `bin/dev.sh clients`) against the sidecar, over the Unix socket and TCP.
#[test]
fn tritons_python_client_works_unmodified() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".clients/bin/python");
    assert!(
        python.exists(),
        "this test needs Triton's Python client: run `bin/dev.sh clients` (makes .clients/)"
    );
    let script = crate::util::fixture_path("../clients/tritonclient_check.py");
    for tcp in [false, true] {
        let (_dir, mut sidecar) = serve("affine", tcp, "", &[]);
        let output = std::process::Command::new(&python)
            .arg(&script)
            .arg(sidecar.grpc_target())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "over {}: {}{}",
            sidecar.grpc_target(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("tritonclient check passed over"), "{said}");
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
    // BYTES in and out, through the client's own encoding of them.
    let (_dir, mut sidecar) = serve("strings", false, "", &[]);
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(sidecar.grpc_target())
        .arg("strings")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "strings: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
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

/// Requests and answers over `sidecar.rpc.max-message-size` are refused with
/// INVALID_ARGUMENT naming the size, the limit and the key (never RESOURCE_EXHAUSTED, which
/// tells a client to back off and retry), unary and streaming; a stream stays open after one;
/// a 10 MB request under the default 64 MiB is served.
fn message_sizes_over(tcp: bool) {
    // Batching off: one request's rows are not bounded by max-batch-size.
    let dir = TestDir::new();
    dir.copy_fixture("affine", "affine.onnx");
    let mut config = ConfigText::new(&dir);
    config.model = "affine.onnx".to_string();
    if tcp {
        config.endpoint = "127.0.0.1:0".to_string();
    }
    config.extra = "[sidecar.batching]\nmax-batch-size = 0\n".to_string();
    let default_limit = config.render();
    config.rpc_extra = "max-message-size = \"8 MiB\"".to_string();
    let eight_mib = config.render();
    let ten_mb_rows = 10_000_000 / 16;

    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&default_limit),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_ready();
    let default_limited = client(&sidecar.grpc_target());
    let response = default_limited
        .model_infer_opt(&zero_features("big", ten_mb_rows), patient())
        .unwrap_or_else(|e| panic!("a 10 MB request under 64 MiB: {e}"));
    assert_eq!(response.outputs[0].shape, [ten_mb_rows as i64, 3]);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());

    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&eight_mib),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_ready();
    let limited = client(&sidecar.grpc_target());
    let too_large = |message: &str, what: &str| {
        assert!(
            message.contains(&format!("the {what} is "))
                && message.contains("bytes, over sidecar.rpc.max-message-size (8388608 bytes)"),
            "{message}"
        );
    };
    let (code, message) =
        status_of(limited.model_infer_opt(&zero_features("big", ten_mb_rows), patient()));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
    too_large(&message, "request");
    // 7 MB in, 5.25 MB of scores and 3.5 MB of labels out: the answer is what is too large.
    let (code, message) =
        status_of(limited.model_infer_opt(&zero_features("wide", 7_000_000 / 16), patient()));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
    too_large(&message, "answer");

    let (mut sink, mut receiver) = limited.model_stream_infer_opt(patient()).unwrap();
    block_on(async {
        for (id, rows) in [("big", ten_mb_rows), ("wide", 7_000_000 / 16), ("small", 2)] {
            if let Err(e) = sink
                .send((zero_features(id, rows), WriteFlags::default()))
                .await
            {
                panic!("sending {id:?}: {e}; log:\n{}", sidecar.log());
            }
            let answer = match receiver.next().await {
                Some(Ok(answer)) => answer,
                other => panic!("answer to {id:?}: {other:?}; log:\n{}", sidecar.log()),
            };
            assert_eq!(answer.infer_response.id, id);
            match id {
                "big" => too_large(&answer.error_message, "request"),
                "wide" => too_large(&answer.error_message, "answer"),
                _ => assert_eq!(answer.error_message, "", "the stream still serves"),
            }
            if id != "small" {
                assert!(answer.error_message.starts_with("INVALID_ARGUMENT: "));
            }
        }
        sink.close().await.unwrap();
    });
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn message_size_limits_over_the_unix_socket() {
    message_sizes_over(false);
}

#[test]
fn message_size_limits_over_tcp() {
    message_sizes_over(true);
}
