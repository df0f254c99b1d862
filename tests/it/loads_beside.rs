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

//! Loads beside serving and liveness during long executions, with executions held at a fail
//! point: a load never stops another model's requests, loads are made one at a time, a long
//! execution keeps the sidecar live until `execution-timeout`, no load starts while draining.

use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use grpcio::RpcStatusCode;

use crate::gate::Gate;
use crate::inference::{client, patient, status_of, zero_features};
use crate::util::{http, ConfigText, Sidecar, TestDir, PATIENCE};

/// Repository lines: explicit control, `affine` loaded at start.
const EXPLICIT_AFFINE_AT_START: &str =
    "repository-control = \"explicit\"\nstartup-models = [\"affine\"]";
/// A sidecar serving `affine` whose executions are held at `gate`, with `health` lines added
/// to `[sidecar.health]`.
fn held_executions(gate: &Gate, health: &str) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.copy_fixture("affine", "affine.onnx");
    let mut config = ConfigText::new(&dir);
    config.model = "affine.onnx".to_string();
    config.health_extra = health.to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[
            ("CUDA_VISIBLE_DEVICES", ""),
            ("FAILPOINTS", &gate.at("gpu::execute")),
        ],
    );
    sidecar.wait_ready();
    (dir, sidecar)
}

/// `/health/live`'s status code now.
fn live_status(sidecar: &Sidecar) -> u16 {
    http(sidecar.health_addr(), "GET", "/health/live")
        .unwrap()
        .0
}

/// An execution in progress is work, not a stall: held for longer than the liveness check's
/// stall limit (2 s), the sidecar stays live throughout, and the request is answered.
#[test]
fn a_long_execution_keeps_the_sidecar_live() {
    let gate = Gate::new();
    let (_dir, mut sidecar) = held_executions(&gate, "");
    let client = client(&sidecar.grpc_target());
    let answer = client
        .model_infer_async_opt(&zero_features("long", 2), patient())
        .unwrap();
    sidecar.wait_for_log("failpoint gpu::execute: held");
    let held = Instant::now();
    let mut checks = 0;
    while held.elapsed() < Duration::from_millis(3000) {
        assert_eq!(live_status(&sidecar), 200, "{}", sidecar.log());
        checks += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(checks > 10);
    gate.release();
    assert_eq!(block_on(answer).unwrap().outputs[0].shape, [2, 3]);
    assert!(!sidecar.log().contains("NOT_LIVE"), "{}", sidecar.log());
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// An execution past `sidecar.health.execution-timeout` counts as hung: NOT_LIVE (and the
/// watchdog starved, as for any stall) until it ends; then live again.
#[test]
fn an_execution_past_its_timeout_turns_the_sidecar_not_live() {
    let gate = Gate::new();
    let (_dir, mut sidecar) = held_executions(&gate, "execution-timeout = \"1 s\"");
    let client = client(&sidecar.grpc_target());
    let answer = client
        .model_infer_async_opt(&zero_features("hung", 1), patient())
        .unwrap();
    sidecar.wait_for_log(
        "over sidecar.health.execution-timeout (1s): the gpu-owner thread counts as hung",
    );
    sidecar.wait_for_log("/health/live reports NOT_LIVE");
    assert_eq!(live_status(&sidecar), 503);
    gate.release();
    block_on(answer).unwrap();
    sidecar.wait_for_log("the gpu-owner thread answers again: live");
    assert_eq!(live_status(&sidecar), 200);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// Once the sidecar drains, the repository thread takes no more work: a version published
/// while a call holds the drain open, and a SIGHUP asking for a rescan, start no load.
#[test]
fn a_version_published_while_draining_is_not_loaded() {
    use crate::repository::{publish, repository_sidecar};
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    let gate = Gate::new();
    let mut sidecar = repository_sidecar(
        &dir,
        "repository-control = \"poll\"\nrepository-poll-interval = \"100 ms\"",
        &gate.at("rpc::ping"),
    );
    let clients = crate::util::Clients::connect(&sidecar.grpc_target());
    let target = sidecar.grpc_target();
    let ping = thread::spawn(move || crate::util::Clients::connect(&target).ping(b"held"));
    sidecar.wait_for_log("failpoint rpc::ping: held");
    sidecar.signal(libc::SIGTERM);
    sidecar.wait_for_log("repository: stopped; no model is loaded or unloaded from now on");
    sidecar.wait_for_log("for 1 in-flight call(s)");
    publish(&repository, "affine", 2, "affine_v2");
    sidecar.signal(libc::SIGHUP);
    gate.release();
    assert_eq!(ping.join().unwrap().unwrap().payload, b"held");
    drop(clients);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    assert!(
        !sidecar.log().contains("version 2"),
        "a load started while draining:\n{}",
        sidecar.log()
    );
}

/// ONNX's protobuf, written by hand for [`write_big_model`]: a length-delimited field.
fn field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = varint(u64::from(number) << 3 | 2);
    out.extend(varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

/// A varint field.
fn number(number: u32, value: u64) -> Vec<u8> {
    let mut out = varint(u64::from(number) << 3);
    out.extend(varint(value));
    out
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A FLOAT tensor value-info `name` of shape `["batch", columns]`.
fn value_info(name: &str, columns: u64) -> Vec<u8> {
    let mut shape = field(1, &field(2, b"batch"));
    shape.extend(field(1, &number(1, columns)));
    let mut tensor = number(1, 1);
    tensor.extend(field(2, &shape));
    let mut info = field(1, name.as_bytes());
    info.extend(field(2, &field(1, &tensor)));
    info
}

/// An initializer `name`: FLOAT, `dims`, every value `value`.
fn initializer(name: &str, dims: &[u64], value: f32) -> Vec<u8> {
    let count: u64 = dims.iter().product();
    let mut tensor = Vec::new();
    for &dim in dims {
        tensor.extend(number(1, dim));
    }
    tensor.extend(number(2, 1));
    tensor.extend(field(8, name.as_bytes()));
    let raw: Vec<u8> = std::iter::repeat_n(value.to_le_bytes(), count as usize)
        .flatten()
        .collect();
    tensor.extend(field(9, &raw));
    tensor
}

/// Writes a model of about `columns` × 64 × 4 bytes of weights at `path`:
/// y = (x · W) · V, x `[batch, 64]`, W `[64, columns]`, V `[columns, 1]`, y `[batch, 1]`.
fn write_big_model(path: &std::path::Path, columns: u64) {
    write_big_model_with(path, columns, b"MatMul");
}

/// As [`write_big_model`], its nodes of operator `op` (one ONNX Runtime does not know makes a
/// model it refuses once it has read all of it).
fn write_big_model_with(path: &std::path::Path, columns: u64, op: &[u8]) {
    let node = |a: &str, b: &str, out: &str| {
        let mut node = field(1, a.as_bytes());
        node.extend(field(1, b.as_bytes()));
        node.extend(field(2, out.as_bytes()));
        node.extend(field(4, op));
        node
    };
    let mut graph = field(1, &node("x", "W", "h"));
    graph.extend(field(1, &node("h", "V", "y")));
    graph.extend(field(2, b"big"));
    graph.extend(field(5, &initializer("W", &[64, columns], 0.001)));
    graph.extend(field(5, &initializer("V", &[columns, 1], 0.001)));
    graph.extend(field(11, &value_info("x", 64)));
    graph.extend(field(12, &value_info("y", 1)));
    let mut model = number(1, 8);
    model.extend(field(8, &number(2, 17)));
    model.extend(field(7, &graph));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, model).unwrap();
}

/// A load never stops another model's requests: while a version of a big model (64 MiB of
/// weights) is read, built, warmed up and held before adoption (at a failpoint's gate), four
/// clients of another model keep being answered, none fails, and the sidecar stays live;
/// released, the big model serves. (The latency of those requests during a load of several
/// hundred MB is the bench's figure, `--load-beside`.)
#[test]
fn a_load_never_stops_another_models_requests() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use crate::repository::{publish, repository_sidecar};
    use gpu_sidecar::proto::grpc_service::{ModelInferRequest, RepositoryModelLoadRequest};

    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    write_big_model(&repository.join("big/1/model.onnx"), 256 * 1024);
    let gate = Gate::new();
    // The start-up load passes; the next is held once built, before the GPU thread adopts it.
    let mut sidecar = repository_sidecar(
        &dir,
        EXPLICIT_AFFINE_AT_START,
        &format!("gpu::after_load=1*off->{}", gate.action()),
    );
    let target = sidecar.grpc_target();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (target, stop, answered) = (target.clone(), stop.clone(), answered.clone());
            thread::spawn(move || {
                let client = client(&target);
                let mut slowest = Duration::ZERO;
                let request: ModelInferRequest = zero_features(&format!("c{i}"), 2);
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    client
                        .model_infer_opt(&request, patient())
                        .unwrap_or_else(|e| panic!("client {i}: {e}"));
                    slowest = slowest.max(asked.elapsed());
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                slowest
            })
        })
        .collect();
    let loader = client(&target);
    let load = loader
        .repository_model_load_async_opt(
            &RepositoryModelLoadRequest {
                model_name: "big".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    sidecar.wait_for_log("failpoint gpu::after_load: held");
    // Built and warmed up; requests of the other model are still answered meanwhile.
    let before = answered.load(Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while answered.load(Ordering::Relaxed) < before + 40 {
        assert!(
            Instant::now() < deadline,
            "no answers while the load was held"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(live_status(&sidecar), 200);
    gate.release();
    block_on(load).unwrap();
    stop.store(true, Ordering::Relaxed);
    let slowest = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .max()
        .unwrap();
    eprintln!("slowest request of the other model during the load: {slowest:?}");
    let mut big = zero_features("big", 1);
    big.model_name = "big".into();
    big.inputs[0].name = "x".into();
    big.inputs[0].shape = vec![1, 64];
    big.raw_input_contents = vec![vec![0; 64 * 4]];
    let answer = loader.model_infer_opt(&big, patient()).unwrap();
    assert_eq!(answer.outputs[0].shape, [1, 1]);
    assert!(!sidecar.log().contains("NOT_LIVE"), "{}", sidecar.log());
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// The resident memory of process `pid` now (VmRSS), in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Loads are made one at a time: a second load ordered while the first is held waits for it
/// (it has not begun when the first is released); and a load that fails frees all it took:
/// three failed loads of a 64 MiB model ONNX Runtime refuses leave the resident memory where
/// it was.
#[test]
fn loads_are_made_one_at_a_time_and_a_failed_one_frees_what_it_took() {
    use crate::repository::{publish, repository_sidecar};
    use gpu_sidecar::proto::grpc_service::RepositoryModelLoadRequest;

    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    publish(&repository, "first", 1, "affine");
    publish(&repository, "second", 1, "affine_v2");
    write_big_model_with(
        &repository.join("refused/1/model.onnx"),
        256 * 1024,
        b"NoSuchOp",
    );
    let gate = Gate::new();
    let mut sidecar = repository_sidecar(
        &dir,
        EXPLICIT_AFFINE_AT_START,
        &format!("gpu::after_load=1*off->1*{}->off", gate.action()),
    );
    let client = client(&sidecar.grpc_target());
    let load = |name: &str| {
        client
            .repository_model_load_async_opt(
                &RepositoryModelLoadRequest {
                    model_name: name.into(),
                    ..Default::default()
                },
                patient(),
            )
            .unwrap()
    };
    let first = load("first");
    sidecar.wait_for_log("failpoint gpu::after_load: held");
    let second = load("second");
    // Ordered, not begun: the first is still in hand.
    sidecar.wait_for_log("RepositoryModelLoad \"second\": ordered");
    assert!(
        !sidecar.log().contains("loading model \"second\""),
        "a second load began beside the first:\n{}",
        sidecar.log()
    );
    gate.release();
    block_on(first).unwrap();
    block_on(second).unwrap();
    let log = sidecar.log();
    let first_ready = log
        .find("model \"first\" version 1 takes requests")
        .unwrap();
    let second_began = log.find("loading model \"second\"").unwrap();
    assert!(first_ready < second_began, "{log}");

    let before = rss(sidecar.pid());
    for _ in 0..3 {
        let (code, message) = status_of(block_on(load("refused")));
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
    }
    let after = rss(sidecar.pid());
    assert!(
        after < before + (32 << 20),
        "three failed loads of a 64 MiB model kept {} bytes",
        after.saturating_sub(before)
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}
