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

//! Inference requests under stress, against the real binary: concurrent clients batched
//! together, runtime failures, bad requests, the shutdown grace period, message-size limits,
//! and Triton's own Python client.

use std::thread;

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use gpu_sidecar::proto::grpc_service::*;
use grpcio::{CallOption, RpcStatusCode, WriteFlags};

use crate::examples::python_check;
use crate::inference::*;
use crate::scrape::Scrape;
use crate::util::{fixture_sidecar, ConfigText, Sidecar, TestDir, PATIENCE};

/// The lookup model answers row i of the table for index i: [2i, 2i+1].
pub(crate) fn lookup_request(id: &str, indices: &[i64]) -> ModelInferRequest {
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

pub(crate) fn lookup_rows(response: &ModelInferResponse) -> Vec<f64> {
    outputs(response)["rows"].values.clone()
}

pub(crate) fn expected_rows(indices: &[i64]) -> Vec<f64> {
    indices
        .iter()
        .flat_map(|&i| [2.0 * i as f64, 2.0 * i as f64 + 1.0])
        .collect()
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
            "Request for unknown model: 'resnet' is not found: this sidecar serves",
        ),
        (
            {
                let mut r = raw_request("affine", "", &two_rows);
                r.inputs[0].datatype = "FP64".into();
                r
            },
            RpcStatusCode::INVALID_ARGUMENT,
            "inference input 'features' data-type is 'FP64', but model 'affine' expects 'FP32': send it as FP32",
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
            "expected 1 inputs for model 'affine': missing input \"features\"",
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
                .starts_with("INVALID_ARGUMENT: inference input 'features' data-type is 'FP64'"),
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

#[test]
fn after_the_grace_period_the_execution_is_ended_and_the_queue_answered() {
    let (_dir, mut sidecar) = fixture_sidecar("slow", |config| {
        config.grace_period = "1 s".to_string();
        config.extra = "[sidecar.batching]\nmax-batch-size = 0\n".to_string();
    });
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
/// Triton's own Python client (`tritonclient[grpc]`, from PyPI, in .clients/ made by
/// `bin/dev.sh clients`) against the sidecar, over the Unix socket and TCP.
#[test]
fn tritons_python_client_works_unmodified() {
    for tcp in [false, true] {
        let (_dir, mut sidecar) = serve("affine", tcp, "", &[]);
        python_check(
            "tritonclient_check.py",
            &sidecar,
            &[],
            "tritonclient check passed over",
        );
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
    // BYTES in and out, through the client's own encoding of them; numbers as strings, which
    // the model parses (it starts: its warm-up sends "0").
    for (model, passed) in [
        ("strings", "tritonclient strings check passed"),
        ("simple_string", "tritonclient simple_string check passed"),
    ] {
        let (_dir, mut sidecar) = serve(model, false, "", &[]);
        python_check("tritonclient_check.py", &sidecar, &[model], passed);
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
    // Unary calls answered in one batch, on one completion queue: the same answers.
    let (_dir, mut sidecar) = serve_with("affine", &[], |config| {
        config.rpc_extra = "watch-unary-cancellation = false\ncompletion-queues = 1".to_string();
    });
    python_check(
        "tritonclient_check.py",
        &sidecar,
        &[],
        "tritonclient check passed over",
    );
    let log = sidecar.log();
    assert!(
        log.contains("sidecar.rpc.watch-unary-cancellation = false")
            && log.contains("sidecar.rpc.completion-queues = 1"),
        "{log}"
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
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

    // A deadline for the whole stream, which carries 17 MB both ways through debug builds: a
    // loaded machine (the whole suite at once) takes a good part of PATIENCE for it.
    let stream_deadline = CallOption::default().timeout(3 * PATIENCE);
    let (mut sink, mut receiver) = limited.model_stream_infer_opt(stream_deadline).unwrap();
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
