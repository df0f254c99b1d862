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

//! Faults injected through fail points, compiled in only with the `failpoints` feature (the
//! README's test command enables it): a component thread that dies triggers the orderly
//! shutdown and exit code 1; a call held in flight at SIGTERM finishes within the grace
//! period, or is cancelled when the grace period ends.

#![cfg(feature = "failpoints")]

use std::thread;

use grpcio::RpcStatusCode;

use crate::gate::Gate;
use crate::util::{http, Clients, ConfigText, Sidecar, TestDir, PATIENCE};

/// Spawns a sidecar with `failpoints` set and the given grace period.
fn sidecar_with(failpoints: &str, grace_period: &str) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let config = ConfigText {
        grace_period: grace_period.to_string(),
        ..ConfigText::new(&dir)
    };
    let path = dir.write_config(&config.render());
    let sidecar = Sidecar::spawn(&path, &[("FAILPOINTS", failpoints)]);
    (dir, sidecar)
}

fn assert_orderly_failure(dir: &TestDir, sidecar: &mut Sidecar, thread: &str) {
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    let log = sidecar.log();
    assert!(log.contains(&format!("the {thread} thread died")), "{log}");
    for step in ["-> DRAINING", "gRPC server stopped", "DRAINING -> STOPPED"] {
        assert!(log.contains(step), "shutdown step {step:?} missing:\n{log}");
    }
    assert_eq!(dir.entries(), ["model.bin", "sidecar.toml"], "left behind");
}

#[test]
fn a_health_thread_panic_shuts_down_with_exit_1() {
    let (dir, mut sidecar) = sidecar_with("health::respond=panic", "10 s");
    sidecar.wait_for_log("READY in");
    // The first request makes the health thread panic; the connection just drops.
    let _ = http(sidecar.health_addr(), "GET", "/health");
    assert_orderly_failure(&dir, &mut sidecar, "health");
}

#[test]
fn a_gpu_thread_panic_shuts_down_with_exit_1() {
    // The first heartbeat comes once the sidecar is READY.
    let (dir, mut sidecar) = sidecar_with("gpu::heartbeat=panic", "10 s");
    assert_orderly_failure(&dir, &mut sidecar, "gpu-owner");
}

/// Starts a Ping on its own thread and waits until the sidecar has it in hand.
fn ping_in_flight(sidecar: &Sidecar) -> thread::JoinHandle<grpcio::Result<Vec<u8>>> {
    let target = sidecar.grpc_target();
    let call = thread::spawn(move || {
        Clients::connect(&target)
            .ping(b"in flight")
            .map(|response| response.payload)
    });
    sidecar.wait_for_log("failpoint rpc::ping: held");
    call
}

#[test]
fn a_call_in_flight_at_sigterm_finishes_within_the_grace_period() {
    let gate = Gate::new();
    let (_dir, mut sidecar) = sidecar_with(&gate.at("rpc::ping"), "10 s");
    sidecar.wait_ready();
    let call = ping_in_flight(&sidecar);
    sidecar.signal(libc::SIGTERM);
    // The shutdown waits for the call held in its handler; released, it is answered.
    sidecar.wait_for_log("for 1 in-flight call(s)");
    gate.release();
    assert_eq!(call.join().unwrap().unwrap(), b"in flight");
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    assert!(
        sidecar.log().contains("for 1 in-flight call(s)"),
        "{}",
        sidecar.log()
    );
    assert!(!sidecar.log().contains("cancelling"), "{}", sidecar.log());
}

#[test]
fn a_call_still_in_flight_when_the_grace_period_ends_is_cancelled() {
    let gate = Gate::new();
    let (_dir, mut sidecar) = sidecar_with(&gate.at("rpc::ping"), "300 ms");
    sidecar.wait_ready();
    let call = ping_in_flight(&sidecar);
    sidecar.signal(libc::SIGTERM);
    // Held past the grace period: the call is cancelled, then its handler let go.
    sidecar.wait_for_log("grace period over; cancelling 1 call(s)");
    gate.release();
    match call.join().unwrap() {
        Err(grpcio::Error::RpcFailure(status)) => assert!(
            matches!(
                status.code(),
                RpcStatusCode::CANCELLED | RpcStatusCode::UNAVAILABLE
            ),
            "{status:?}"
        ),
        other => panic!("the call should have been cancelled, got {other:?}"),
    }
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    assert!(
        sidecar
            .log()
            .contains("grace period over; cancelling 1 call(s)"),
        "{}",
        sidecar.log()
    );
}
