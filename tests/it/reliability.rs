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

//! Load and faults lose nothing: SIGTERM under concurrent load, idle and abusive clients on
//! the health port, garbage on either port, a second instance, clients that vanish or whose
//! deadline passes. Bounded in time and count, loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gpu_sidecar::proto::sidecar::PingRequest;
use grpcio::{CallOption, Error as GrpcError, RpcStatusCode};

use crate::scrape::Scrape;
use crate::util::{expect_exit_1, http, ready_sidecar, Clients, ConfigText, TestDir, PATIENCE};

/// The longest any single call may take in these tests before it counts as hung.
const HUNG: Duration = Duration::from_secs(5);

/// What the load threads saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    /// Failures by status code.
    failed: Vec<RpcStatusCode>,
    slowest: Duration,
}

#[test]
fn sigterm_under_concurrent_load_completes_or_refuses_every_call() {
    const THREADS: usize = 8;
    const OK_BEFORE_SIGTERM: u64 = 400;
    let (_dir, mut sidecar) = ready_sidecar(|config| config.grace_period = "5 s".to_string());
    let target = sidecar.grpc_target();
    let total_ok = Arc::new(AtomicU64::new(0));
    let terminated = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|worker| {
            let target = target.clone();
            let total_ok = Arc::clone(&total_ok);
            let terminated = Arc::clone(&terminated);
            thread::spawn(move || {
                // Each thread its own environment and channel: its own connection.
                let clients = Clients::connect(&target);
                let payload = vec![worker as u8; 1024];
                let mut tally = Tally::default();
                // Until a call fails after SIGTERM, or 30 s pass (a bound, never reached).
                let give_up = Instant::now() + Duration::from_secs(30);
                while Instant::now() < give_up {
                    let began = Instant::now();
                    tally.sent += 1;
                    let outcome = clients.sidecar.ping_opt(
                        &PingRequest {
                            payload: payload.clone(),
                            ..PingRequest::default()
                        },
                        CallOption::default().timeout(HUNG * 2),
                    );
                    tally.slowest = tally.slowest.max(began.elapsed());
                    match outcome {
                        Ok(response) => {
                            assert_eq!(response.payload, payload, "a reply mixed up payloads");
                            tally.ok += 1;
                            total_ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(GrpcError::RpcFailure(status)) => {
                            tally.failed.push(status.code());
                            if terminated.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                        Err(other) => panic!("not an RPC status: {other}"),
                    }
                }
                tally
            })
        })
        .collect();

    let deadline = Instant::now() + PATIENCE;
    while total_ok.load(Ordering::SeqCst) < OK_BEFORE_SIGTERM {
        assert!(Instant::now() < deadline, "load never got going");
        thread::sleep(Duration::from_millis(5));
    }
    terminated.store(true, Ordering::SeqCst);
    let signalled = Instant::now();
    sidecar.signal(libc::SIGTERM);
    let code = sidecar.exit_code(PATIENCE);
    let exit_took = signalled.elapsed();

    let tallies: Vec<Tally> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let sent: u64 = tallies.iter().map(|t| t.sent).sum();
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let failed: Vec<RpcStatusCode> = tallies.iter().flat_map(|t| t.failed.clone()).collect();
    let slowest = tallies.iter().map(|t| t.slowest).max().unwrap();
    println!(
        "sent {sent}, ok {ok}, failed {} ({failed:?}), slowest call {slowest:?}, exit after {exit_took:?}",
        failed.len()
    );
    assert_eq!(code, 0, "{}", sidecar.log());
    assert!(
        exit_took < Duration::from_secs(5),
        "exit took {exit_took:?}, longer than the 5 s grace period"
    );
    assert_eq!(sent, ok + failed.len() as u64, "calls unaccounted for");
    assert!(ok >= OK_BEFORE_SIGTERM);
    assert!(
        failed
            .iter()
            .all(|code| matches!(*code, RpcStatusCode::UNAVAILABLE | RpcStatusCode::CANCELLED)),
        "failures other than UNAVAILABLE/CANCELLED: {failed:?}"
    );
    assert_eq!(
        failed.len(),
        THREADS,
        "each thread stops at its first failure after SIGTERM, and none failed before"
    );
    assert!(slowest < HUNG, "a call took {slowest:?}");
}

/// Raises this process's open-file limit to its hard limit, for tests that hold many sockets.
fn allow_many_open_files() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .expect("raise RLIMIT_NOFILE");
}

/// A GET that must be answered within `within`.
fn timed_get(addr: SocketAddr, path: &str, within: Duration) -> (u16, String) {
    let began = Instant::now();
    let answer = http(addr, "GET", path).expect("GET");
    let took = began.elapsed();
    assert!(took < within, "GET {path} took {took:?}");
    answer
}

/// Sends `request` (ignoring a write cut short by the server) and returns what came back.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn idle_and_abusive_health_clients_do_not_hurt_the_others() {
    allow_many_open_files();
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    let addr = sidecar.health_addr();
    // 500 connections that never send a byte.
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    assert_eq!(
        timed_get(addr, "/health", Duration::from_secs(2)),
        (200, "READY".to_string())
    );

    // A huge header is cut off at the guard's limit; others are served meanwhile.
    let mut huge = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    let huge_client = thread::spawn(move || raw_exchange(addr, &huge));
    // A body that never ends is refused without being read.
    let endless = b"POST /health HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\nxxxx".to_vec();
    let endless_client = thread::spawn(move || raw_exchange(addr, &endless));
    // A client that sends half a request line and then nothing.
    let slow_client = thread::spawn(move || {
        let began = Instant::now();
        let answer = raw_exchange_keep_open(addr, b"GET /hea");
        (answer, began.elapsed())
    });
    assert_eq!(
        timed_get(addr, "/health", Duration::from_secs(2)),
        (200, "READY".to_string())
    );
    let huge_answer = huge_client.join().unwrap();
    assert!(
        huge_answer.starts_with("HTTP/1.1 431 ") || huge_answer.is_empty(),
        "{huge_answer:.200}"
    );
    let endless_answer = endless_client.join().unwrap();
    assert!(
        endless_answer.starts_with("HTTP/1.1 413 "),
        "{endless_answer:.200}"
    );
    let (slow_answer, slow_took) = slow_client.join().unwrap();
    assert!(
        slow_answer.starts_with("HTTP/1.1 408 "),
        "{slow_answer:.200}"
    );
    assert!(
        slow_took < Duration::from_secs(10),
        "a stalled request was held {slow_took:?}"
    );
    let (status, metrics) = timed_get(addr, "/metrics", Duration::from_secs(2));
    assert_eq!(status, 200);
    assert!(metrics.contains("gpu_sidecar_state{state=\"ready\"} 1"));
    drop(idle);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// Writes `request` and waits for the answer without closing the write side.
fn raw_exchange_keep_open(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Deterministic junk: every byte value, shuffled by a fixed step.
fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 167 + 13) as u8).collect()
}

#[test]
fn garbage_on_either_port_leaves_the_sidecar_serving() {
    for endpoint in ["unix", "tcp"] {
        let (dir, mut sidecar) = ready_sidecar(|config| {
            if endpoint == "tcp" {
                config.endpoint = "127.0.0.1:0".to_string();
            }
        });
        let target = sidecar.grpc_target();
        let health = sidecar.health_addr();
        let http1 = b"GET / HTTP/1.1\r\nHost: sidecar\r\n\r\n".to_vec();
        for junk in [garbage(64 << 10), http1] {
            // Onto the gRPC endpoint: the HTTP/2 server must drop the connection.
            let answer = if endpoint == "tcp" {
                let mut stream = TcpStream::connect(&target).unwrap();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let _ = stream.write_all(&junk);
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                answer
            } else {
                let mut stream = UnixStream::connect(dir.socket()).unwrap();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let _ = stream.write_all(&junk);
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                answer
            };
            assert!(answer.len() < 4096, "a long answer to junk");
            // Onto the health port.
            let answer = raw_exchange(health, &garbage(16 << 10));
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
                "{answer:.200}"
            );
        }
        let clients = Clients::connect(&target);
        assert_eq!(clients.ping(b"unharmed").unwrap().payload, b"unharmed");
        assert_eq!(
            timed_get(health, "/health", Duration::from_secs(2)),
            (200, "READY".to_string())
        );
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
}

#[test]
fn a_second_instance_on_the_same_health_port_exits_1_and_the_first_keeps_serving() {
    let (_dir, mut first) = ready_sidecar(|_| {});
    let health = first.health_addr();
    let second_dir = TestDir::new();
    second_dir.write_model("model.bin", 64);
    let second = ConfigText {
        health_port: health.port(),
        ..ConfigText::new(&second_dir)
    };
    let log = expect_exit_1(&second_dir, &second.render(), &[]);
    assert!(
        log.contains(&format!(
            "cannot listen for health checks on 127.0.0.1:{}",
            health.port()
        )),
        "{log}"
    );
    assert_eq!(
        timed_get(health, "/health", Duration::from_secs(2)),
        (200, "READY".to_string())
    );
    let clients = Clients::connect(&first.grpc_target());
    assert_eq!(clients.ping(b"first").unwrap().payload, b"first");
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit_code(PATIENCE), 0);
}

/// Polls `/metrics` until the in-flight gauge reads `wanted`.
fn wait_for_in_flight(addr: SocketAddr, wanted: f64) -> Scrape {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let scrape = Scrape::fetch(addr);
        if scrape.get("gpu_sidecar_grpc_calls_in_flight") == wanted {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "in-flight calls never reached {wanted}: {:#?}",
            scrape.samples
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Pings of 1 MiB whose deadline passes while they wait for their handler (held at a gate
/// until every client has given up) are refused without work and leave nothing in flight.
#[cfg(feature = "failpoints")]
#[test]
fn pings_whose_deadline_has_passed_leave_nothing_in_flight() {
    let gate = crate::gate::Gate::new();
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let path = dir.write_config(&ConfigText::new(&dir).render());
    let failpoints = gate.at("rpc::ping");
    let mut sidecar = crate::util::Sidecar::spawn(
        &path,
        &[
            ("FAILPOINTS", failpoints.as_str()),
            ("CUDA_VISIBLE_DEVICES", ""),
        ],
    );
    sidecar.wait_ready();
    let clients = Clients::connect(&sidecar.grpc_target());
    let request = PingRequest {
        payload: garbage(1 << 20),
        ..PingRequest::default()
    };
    let calls: Vec<_> = (0..8)
        .map(|_| {
            clients
                .sidecar
                .ping_async_opt(
                    &request,
                    CallOption::default().timeout(Duration::from_millis(500)),
                )
                .unwrap()
        })
        .collect();
    sidecar.wait_for_log("failpoint rpc::ping: held");
    for call in calls {
        match futures_executor::block_on(call) {
            Err(GrpcError::RpcFailure(status)) => {
                assert_eq!(status.code(), RpcStatusCode::DEADLINE_EXCEEDED)
            }
            other => panic!("expected DEADLINE_EXCEEDED, got {other:?}"),
        }
    }
    // The sidecar's copy of a deadline counts from when it received the call, which was
    // before its client gave up: one more deadline's time, and each has passed there too.
    thread::sleep(Duration::from_millis(500));
    gate.release();
    let scrape = wait_for_in_flight(sidecar.health_addr(), 0.0);
    let calls = scrape.get("gpu_sidecar_ping_calls_total{transport=\"unix\"}");
    assert!(calls >= 1.0, "no Ping reached its handler");
    assert_eq!(
        scrape.get("gpu_sidecar_ping_errors_total{transport=\"unix\"}"),
        calls,
        "every Ping that reached its handler expired there"
    );
    assert_eq!(clients.ping(b"on time").unwrap().payload, b"on time");
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// A Watch whose client goes away is cleaned up at once, not at shutdown.
#[test]
fn a_watch_whose_client_vanishes_leaves_nothing_in_flight() {
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    let health = sidecar.health_addr();
    let clients = Clients::connect(&sidecar.grpc_target());
    let mut stream = clients
        .health
        .watch_opt(&crate::util::health_request(""), crate::util::call_option())
        .unwrap();
    let first = futures_executor::block_on(futures_util::StreamExt::next(&mut stream));
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    wait_for_in_flight(health, 1.0);
    drop(stream);
    drop(clients);
    wait_for_in_flight(health, 0.0);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[cfg(feature = "failpoints")]
mod held_calls {
    //! Calls held in the handler by the `rpc::ping` fail point, so that the client can leave
    //! or its deadline pass while the call is in flight.

    use super::*;
    use crate::gate::Gate;
    use crate::util::Sidecar;

    /// A sidecar whose Ping handler holds every call at `gate` until it is released.
    fn held_sidecar(gate: &Gate) -> (TestDir, Sidecar) {
        let dir = TestDir::new();
        dir.write_model("model.bin", 64);
        let path = dir.write_config(&ConfigText::new(&dir).render());
        let failpoints = gate.at("rpc::ping");
        let mut sidecar = Sidecar::spawn(
            &path,
            &[
                ("FAILPOINTS", failpoints.as_str()),
                ("CUDA_VISIBLE_DEVICES", ""),
            ],
        );
        sidecar.wait_ready();
        (dir, sidecar)
    }

    #[test]
    fn a_client_that_disconnects_mid_call_leaves_nothing_in_flight() {
        let gate = Gate::new();
        let (_dir, mut sidecar) = held_sidecar(&gate);
        let health = sidecar.health_addr();
        let clients = Clients::connect(&sidecar.grpc_target());
        let pending = clients
            .sidecar
            .ping_async_opt(
                &PingRequest {
                    payload: b"gone".to_vec(),
                    ..PingRequest::default()
                },
                crate::util::call_option(),
            )
            .unwrap();
        wait_for_in_flight(health, 1.0);
        sidecar.wait_for_log("failpoint rpc::ping: held");
        drop(pending);
        drop(clients);
        // Let go once the client is gone: its reply has no one to go to. Whether the
        // sidecar hears of the disconnect before it replies is a race it cannot see (a reply
        // written to a connection the client has just closed counts as delivered), so the
        // check is what holds either way: the call ends, is counted once, leaves nothing in
        // flight, and the sidecar serves on.
        gate.release();
        let scrape = wait_for_in_flight(health, 0.0);
        assert_eq!(
            scrape.get("gpu_sidecar_ping_calls_total{transport=\"unix\"}"),
            1.0
        );
        assert!(
            scrape.get("gpu_sidecar_ping_errors_total{transport=\"unix\"}") <= 1.0,
            "{:#?}",
            scrape.samples
        );
        let clients = Clients::connect(&sidecar.grpc_target());
        assert_eq!(clients.ping(b"next").unwrap().payload, b"next");
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }

    #[test]
    fn a_deadline_that_passes_mid_call_leaves_nothing_in_flight() {
        let gate = Gate::new();
        let (_dir, mut sidecar) = held_sidecar(&gate);
        let health = sidecar.health_addr();
        let clients = Clients::connect(&sidecar.grpc_target());
        // A deadline long enough for the call to reach its handler on a loaded machine; the
        // handler is held until the client has given up.
        let outcome = clients.sidecar.ping_opt(
            &PingRequest::default(),
            CallOption::default().timeout(Duration::from_millis(1000)),
        );
        match outcome {
            Err(GrpcError::RpcFailure(status)) => {
                assert_eq!(status.code(), RpcStatusCode::DEADLINE_EXCEEDED)
            }
            other => panic!("expected DEADLINE_EXCEEDED, got {other:?}"),
        }
        sidecar.wait_for_log("failpoint rpc::ping: held");
        gate.release();
        let scrape = wait_for_in_flight(health, 0.0);
        assert_eq!(
            scrape.get("gpu_sidecar_ping_calls_total{transport=\"unix\"}"),
            1.0
        );
        // The server's deadline counts from when the call reached it: on a loaded machine
        // that is later than the client's, and the reply may still go into a connection the
        // client is leaving. Whether it is counted as not delivered is that race's; that
        // nothing stays in flight is not.
        assert!(
            scrape.get("gpu_sidecar_ping_errors_total{transport=\"unix\"}") <= 1.0,
            "{:#?}",
            scrape.samples
        );
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
}
