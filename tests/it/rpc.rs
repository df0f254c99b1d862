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

//! The RPC contract through the generated client stubs: Ping over a Unix socket and over
//! TCP, and the standard gRPC health service (Check and Watch).

use futures_executor::block_on;
use futures_util::StreamExt;
use grpcio::RpcStatusCode;

use gpu_sidecar::proto::health::health_check_response::ServingStatus;
use gpu_sidecar::proto::health::HealthCheckResponse;
use gpu_sidecar::proto::sidecar::{ModelLocation, ServingState};

use crate::util::{call_option, health_request, ready_sidecar, sha256_of, Clients, PATIENCE};

/// Payloads from the issue: empty, small, 1 MiB, with every byte value.
fn payloads() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"hello, sidecar".to_vec(),
        (0..(1usize << 20)).map(|i| (i % 256) as u8).collect(),
    ]
}

fn ping_round_trips(target: &str, model_path: &std::path::Path) {
    let clients = Clients::connect(target);
    for payload in payloads() {
        let response = clients.ping(&payload).unwrap();
        assert_eq!(response.payload.len(), payload.len());
        assert!(
            response.payload == payload,
            "payload of {} bytes changed",
            payload.len()
        );
        assert_eq!(
            response.state.enum_value(),
            Ok(ServingState::SERVING_STATE_READY)
        );
        assert_eq!(response.server_version, env!("CARGO_PKG_VERSION"));
        assert!(response.model_loaded);
        assert!(!response.gpu_in_use, "GPUs are hidden from this sidecar");
        assert!(response.gpu.is_none());
        assert_eq!(response.model.size_bytes, 4096);
        assert_eq!(response.model.sha256, sha256_of(model_path));
        assert_eq!(
            response.model.location.enum_value(),
            Ok(ModelLocation::MODEL_LOCATION_HOST_MEMORY)
        );
    }
}

#[test]
fn ping_over_a_unix_socket_echoes_payloads() {
    let (dir, mut sidecar) = ready_sidecar(|_| {});
    let target = sidecar.grpc_target();
    assert_eq!(target, format!("unix:{}", dir.socket().display()));
    ping_round_trips(&target, &dir.path().join("model.bin"));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

#[test]
fn ping_over_tcp_echoes_payloads() {
    let (dir, mut sidecar) = ready_sidecar(|c| c.endpoint = "127.0.0.1:0".to_string());
    let target = sidecar.grpc_target();
    assert!(
        target.starts_with("127.0.0.1:") && !target.ends_with(":0"),
        "{target}"
    );
    ping_round_trips(&target, &dir.path().join("model.bin"));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

#[test]
fn health_check_reports_known_services_and_refuses_unknown_ones() {
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    let clients = Clients::connect(&sidecar.grpc_target());
    for service in ["", "flink.sidecar.v1.Sidecar"] {
        let status = clients.health_check(service).unwrap().status.enum_value();
        assert_eq!(status, Ok(ServingStatus::SERVING), "service {service:?}");
    }
    match clients.health_check("no.such.Service") {
        Err(grpcio::Error::RpcFailure(status)) => {
            assert_eq!(status.code(), RpcStatusCode::NOT_FOUND)
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

fn next_status(
    stream: &mut grpcio::ClientSStreamReceiver<HealthCheckResponse>,
) -> Option<grpcio::Result<ServingStatus>> {
    block_on(stream.next()).map(|item| item.map(|r| r.status.enum_value().unwrap()))
}

#[test]
fn health_watch_reports_serving_then_not_serving_on_sigterm() {
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    let clients = Clients::connect(&sidecar.grpc_target());
    let mut watch = clients
        .health
        .watch_opt(&health_request(""), call_option())
        .unwrap();
    let mut unknown = clients
        .health
        .watch_opt(&health_request("no.such.Service"), call_option())
        .unwrap();
    assert_eq!(
        next_status(&mut watch).unwrap().unwrap(),
        ServingStatus::SERVING
    );
    assert_eq!(
        next_status(&mut unknown).unwrap().unwrap(),
        ServingStatus::SERVICE_UNKNOWN
    );

    sidecar.signal(libc::SIGTERM);
    assert_eq!(
        next_status(&mut watch).unwrap().unwrap(),
        ServingStatus::NOT_SERVING
    );
    // Then the server ends the stream (OK) and, shutting down, closes the connection once no
    // call is left on it. A client that writes to the connection after that close (an HTTP/2
    // window update, say) before it has read the stream's end gets EPIPE, and its gRPC core
    // fails the stream UNAVAILABLE ("Broken pipe"): that, or the clean end, is what a client
    // sees, and nothing else (not another status, not CANCELLED).
    match next_status(&mut watch) {
        None => {}
        Some(Err(grpcio::Error::RpcFailure(status)))
            if status.code() == grpcio::RpcStatusCode::UNAVAILABLE => {}
        other => panic!(
            "the stream should end, got {other:?}; log:\n{}",
            sidecar.log()
        ),
    }
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}
