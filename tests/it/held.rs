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

//! Tests that hold the GPU-owner thread in each execution (fail point `gpu::execute`):
//! back-pressure, deadlines, cancellation and SIGTERM while executions are in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use grpcio::{CallOption, RpcStatusCode, WriteFlags};

use crate::gate::Gate;
use crate::inference::*;
use crate::requests::{expected_rows, lookup_request, lookup_rows};
use crate::scrape::Scrape;
use crate::util::{Sidecar, TestDir, PATIENCE};

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

/// A lookup sidecar like [`held`], batching off, whose unary `ModelInfer` calls are not
/// watched for their callers going (`watch-unary-cancellation = false`).
fn held_unwatched(gate: &Gate) -> (TestDir, Sidecar) {
    serve_with(
        "lookup",
        &[("FAILPOINTS", &gate.at("gpu::execute"))],
        |config| {
            config.rpc_extra = "watch-unary-cancellation = false".to_string();
            config.extra = "[sidecar.batching]\nmax-batch-size = 0\n".to_string();
        },
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
    let (code, message) = status_of(client.model_infer_opt(&lookup_request("x", &[2]), patient()));
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
fn unwatched_unary_calls_whose_deadline_passes_in_the_queue_are_never_run() {
    let gate = Gate::new();
    let (_dir, sidecar) = held_unwatched(&gate);
    let client = client(&sidecar.grpc_target());
    let running = send_async(&client, &lookup_request("a", &[0]), patient());
    wait_held(&sidecar);
    let late = send_async(
        &client,
        &lookup_request("late", &[1]),
        CallOption::default().timeout(Duration::from_millis(200)),
    );
    wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 1.0);
    assert_eq!(
        status_of(block_on(late)).0,
        RpcStatusCode::DEADLINE_EXCEEDED
    );
    // Nothing tells the sidecar that the caller went; the batcher compares the call's
    // deadline with the clock before it runs the request, and refuses it.
    gate.release();
    assert_eq!(
        lookup_rows(&block_on(running).unwrap()),
        expected_rows(&[0])
    );
    wait_metric(
        &sidecar,
        "gpu_sidecar_inference_requests_total{outcome=\"deadline\"}",
        1.0,
    );
    assert_eq!(counts(&client, "lookup"), (1, 1), "the late call ran");
    wait_metric(&sidecar, "gpu_sidecar_grpc_calls_in_flight", 0.0);
}

#[test]
fn unwatched_unary_calls_cancelled_in_the_queue_still_run_and_end() {
    let gate = Gate::new();
    let (_dir, sidecar) = held_unwatched(&gate);
    let client = client(&sidecar.grpc_target());
    let running = send_async(&client, &lookup_request("a", &[0]), patient());
    wait_held(&sidecar);
    let mut cancelled = send_async(&client, &lookup_request("gone", &[1]), patient());
    wait_metric(&sidecar, "gpu_sidecar_inference_queue_depth", 1.0);
    cancelled.cancel();
    gate.release();
    block_on(running).unwrap();
    // The trade this setting makes: the cancelled request runs (no one tells the sidecar
    // that its caller went), its answer goes nowhere, and its call ends.
    wait_metric(
        &sidecar,
        "gpu_sidecar_inference_requests_total{outcome=\"ok\"}",
        2.0,
    );
    wait_metric(&sidecar, "gpu_sidecar_grpc_calls_in_flight", 0.0);
    assert_eq!(counts(&client, "lookup"), (2, 2));
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
