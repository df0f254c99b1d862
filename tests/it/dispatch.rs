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

//! A version's queue feeds whichever of its instances is free (fail points hold executions):
//! one device held, the other keeps serving; on the CPU, `instances = 2` runs two executions
//! at once where `instances = 1` runs one.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::model_config::model_instance_group::Kind;

use crate::devices::{instance_groups, lookup_config};
use crate::gate::Gate;
use crate::gpu::fake_driver;
use crate::inference::{client, counts, patient};
use crate::requests::{expected_rows, lookup_request, lookup_rows};
use crate::scrape::Scrape;
use crate::util::{Sidecar, TestDir, PATIENCE};

/// Waits until `condition` holds of a fresh scrape, failing after PATIENCE.
fn wait_scrape(sidecar: &Sidecar, what: &str, condition: impl Fn(&Scrape) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let scrape = Scrape::fetch(sidecar.health_addr());
        if condition(&scrape) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {scrape:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many times the log says a thread was held at `point`.
fn holds(sidecar: &Sidecar, point: &str) -> usize {
    sidecar
        .log()
        .matches(&format!("failpoint {point}: held"))
        .count()
}

#[test]
fn a_held_device_leaves_the_other_serving_the_same_model() {
    let gate = Gate::new();
    let point = "gpu::execute@gpu-owner-0";
    let dir = TestDir::new();
    let path = dir.write_config(&lookup_config(&dir, "devices = [0, 1]", ""));
    let (lib_dir, _) = fake_driver(&dir);
    let failpoints = gate.at(point);
    let mut sidecar = Sidecar::spawn(
        &path,
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_DEVICES", "2"),
            ("FAILPOINTS", failpoints.as_str()),
        ],
    );
    sidecar.wait_ready();
    let client = client(&sidecar.grpc_target());
    // Requests one at a time until device 0 takes one and is held there; until then device
    // 1 answers them.
    let deadline = Instant::now() + PATIENCE;
    let held = loop {
        let call = client
            .model_infer_async_opt(&lookup_request("probe", &[1]), patient())
            .unwrap();
        let (sender, answer) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(block_on(call));
        });
        let outcome = loop {
            if holds(&sidecar, point) == 1 {
                break None;
            }
            // A short wait for the answer, then look at the log again.
            if let Ok(response) = answer.recv_timeout(Duration::from_millis(20)) {
                break Some(response.unwrap());
            }
            assert!(Instant::now() < deadline, "{}", sidecar.log());
        };
        match outcome {
            None => break answer,
            Some(response) => assert_eq!(lookup_rows(&response), expected_rows(&[1])),
        }
        assert!(Instant::now() < deadline, "device 0 never took a request");
    };
    // Device 0 is held in an execution: device 1 answers everything meanwhile.
    for i in 0..8 {
        let response = client
            .model_infer_opt(&lookup_request(&format!("r{i}"), &[i % 4]), patient())
            .unwrap();
        assert_eq!(lookup_rows(&response), expected_rows(&[i % 4]));
    }
    assert_eq!(holds(&sidecar, point), 1, "{}", sidecar.log());
    gate.release();
    let response = held.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(lookup_rows(&response), expected_rows(&[1]));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// A CPU sidecar serving lookup with `instances` instances of one intra-op thread each,
/// every execution held at `gate`; two requests sent. Returns the sidecar, once as many
/// executions as run at once are held, and the requests' answers to come.
fn two_requests_held(
    gate: &Gate,
    dir: &TestDir,
    instances: u32,
) -> (
    Sidecar,
    Vec<grpcio::ClientUnaryReceiver<ModelInferResponse>>,
) {
    let mut text = lookup_config(
        dir,
        "",
        &format!("instances = {instances}\nintra-op-threads = 1"),
    );
    // One request per execution: two requests need two executions.
    text.push_str("\n[sidecar.batching]\nmax-batch-size = 0\n");
    let failpoints = gate.at("gpu::execute");
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&text),
        &[
            ("CUDA_VISIBLE_DEVICES", ""),
            ("FAILPOINTS", failpoints.as_str()),
        ],
    );
    sidecar.wait_ready();
    let client = client(&sidecar.grpc_target());
    let answers = (0..2)
        .map(|i| {
            client
                .model_infer_async_opt(&lookup_request(&format!("r{i}"), &[i]), patient())
                .unwrap()
        })
        .collect();
    // Both have arrived; as many as there are instances have left the queue and are held.
    let running = f64::from(instances.min(2));
    wait_scrape(&sidecar, "both requests arrive", |scrape| {
        scrape.get("gpu_sidecar_inference_queue_seconds_count") == running
            && scrape.get("gpu_sidecar_inference_queue_depth") == 2.0 - running
    });
    (sidecar, answers)
}

#[test]
fn two_cpu_instances_run_two_executions_at_once() {
    let gate = Gate::new();
    let dir = TestDir::new();
    let (mut sidecar, answers) = two_requests_held(&gate, &dir, 2);
    let log = sidecar.log();
    for thread in ["(gpu-owner)", "(cpu-instance-1)"] {
        assert!(
            log.lines()
                .any(|line| line.contains(thread) && line.contains("failpoint gpu::execute: held")),
            "{thread} holds an execution: {log}"
        );
    }
    assert_eq!(instance_groups(&sidecar)[0].count, 2);
    assert_eq!(
        instance_groups(&sidecar)[0].kind.enum_value(),
        Ok(Kind::KIND_CPU)
    );
    gate.release();
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            lookup_rows(&block_on(answer).unwrap()),
            expected_rows(&[i as i64])
        );
    }
    assert_eq!(counts(&client(&sidecar.grpc_target()), "lookup"), (2, 2));
    // One execution on each instance's thread.
    let scrape = Scrape::fetch(sidecar.health_addr());
    for thread in ["gpu-owner", "cpu-instance-1"] {
        assert_eq!(
            scrape.get(&format!(
                "gpu_sidecar_thread_executions_total{{thread=\"{thread}\",device=\"cpu\"}}"
            )),
            1.0,
            "{scrape:#?}"
        );
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    assert!(
        sidecar
            .log()
            .contains("(cpu-instance-1) freed 1 model session(s)"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn one_cpu_instance_runs_one_execution_while_the_other_request_waits() {
    let gate = Gate::new();
    let dir = TestDir::new();
    // The waiting condition of two_requests_held is the check: one running, one queued.
    let (mut sidecar, answers) = two_requests_held(&gate, &dir, 1);
    assert!(!sidecar.log().contains("cpu-instance"), "{}", sidecar.log());
    gate.release();
    for answer in answers {
        block_on(answer).unwrap();
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// Sends `request` in the background; its answer arrives on the returned receiver.
fn send(
    client: &gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient,
    request: &ModelInferRequest,
) -> mpsc::Receiver<grpcio::Result<ModelInferResponse>> {
    let call = client.model_infer_async_opt(request, patient()).unwrap();
    let (sender, answer) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(block_on(call));
    });
    answer
}

/// A sidecar on two fake devices serving lookup, with `failpoints` and `model` lines.
fn on_two_devices(dir: &TestDir, model: &str, failpoints: &str) -> Sidecar {
    let path = dir.write_config(&lookup_config(dir, "devices = [0, 1]", model));
    let (lib_dir, _) = fake_driver(dir);
    let mut sidecar = Sidecar::spawn(
        &path,
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_DEVICES", "2"),
            ("FAILPOINTS", failpoints),
        ],
    );
    sidecar.wait_ready();
    sidecar
}

/// Asserts that `answer` is UNAVAILABLE because GPU 1 failed under it.
fn assert_device_1_failed(answer: grpcio::Result<ModelInferResponse>) {
    let (code, message) = crate::inference::status_of(answer);
    assert_eq!(code, grpcio::RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains("GPU 1 failed while running the request's batch")
            && message.contains("the request may be sent again"),
        "{message}"
    );
}

#[test]
fn a_failed_device_is_taken_out_and_its_models_other_instance_serves_what_waits() {
    let gate = Gate::new();
    let dir = TestDir::new();
    let failpoints = format!(
        "gpu::device_fails@gpu-owner-1=return;{}",
        gate.at("gpu::execute@gpu-owner-0")
    );
    let mut sidecar = on_two_devices(&dir, "", &failpoints);
    let client = client(&sidecar.grpc_target());
    // One request at a time until device 0 holds one and device 1 has failed under one.
    let deadline = Instant::now() + PATIENCE;
    let mut held = None;
    let mut failed = 0;
    while held.is_none() || failed == 0 {
        let answer = send(&client, &lookup_request("probe", &[2]));
        loop {
            if held.is_none() && holds(&sidecar, "gpu::execute@gpu-owner-0") == 1 {
                held = Some(answer);
                break;
            }
            if let Ok(outcome) = answer.recv_timeout(Duration::from_millis(20)) {
                assert_device_1_failed(outcome);
                failed += 1;
                break;
            }
            assert!(Instant::now() < deadline, "{}", sidecar.log());
        }
    }
    // Its thread says so once it has answered the request it failed under: wait for the line.
    sidecar.wait_for_log("GPU 1 failed (CUDA failure 999");
    // Device 1 takes nothing more: what arrives waits for device 0, and is not lost.
    let waiting: Vec<_> = (0..3)
        .map(|i| send(&client, &lookup_request(&format!("w{i}"), &[i])))
        .collect();
    wait_scrape(&sidecar, "three requests wait for device 0", |scrape| {
        scrape.get("gpu_sidecar_inference_queue_depth") == 3.0
            && scrape.get("gpu_sidecar_gpu_failed{ordinal=\"1\"}") == 1.0
    });
    let (status, body) = crate::util::http(sidecar.health_addr(), "GET", "/health/ready").unwrap();
    assert_eq!(status, 200, "the model still has an instance: {body}");
    assert!(
        body.starts_with("READY\nGPU 1 out of service: CUDA failure 999"),
        "{body}"
    );
    gate.release();
    let response = held.unwrap().recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(lookup_rows(&response), expected_rows(&[2]));
    for (i, answer) in waiting.into_iter().enumerate() {
        let response = answer.recv_timeout(PATIENCE).unwrap().unwrap();
        assert_eq!(lookup_rows(&response), expected_rows(&[i as i64]));
    }
    assert_eq!(failed, 1, "one request ran on the device that failed");
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn a_model_whose_every_device_failed_is_unavailable_and_the_sidecar_not_ready() {
    let dir = TestDir::new();
    let mut sidecar = on_two_devices(
        &dir,
        "devices = [1]",
        "gpu::device_fails@gpu-owner-1=return",
    );
    let client = client(&sidecar.grpc_target());
    assert_device_1_failed(client.model_infer_opt(&lookup_request("first", &[1]), patient()));
    // The version has no instance left: the repository takes it out, and says so.
    let deadline = Instant::now() + PATIENCE;
    let body = loop {
        let (status, body) =
            crate::util::http(sidecar.health_addr(), "GET", "/health/ready").unwrap();
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        body.starts_with("NOT_READY\nGPU 1 out of service"),
        "{body}"
    );
    let (code, message) = crate::inference::status_of(
        client.model_infer_opt(&lookup_request("later", &[1]), patient()),
    );
    assert_eq!(code, grpcio::RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains("model \"lookup\" is out of service: version 1 had every instance on GPUs that failed (the last: GPU 1)"),
        "{message}"
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}
