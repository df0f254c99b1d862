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

//! Start-up, readiness and shutdown of the real binary: READY timing, the health endpoint
//! before and after READY, SIGTERM and a second signal, the Unix socket's life, and the
//! runtime failures that exit 1.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use gpu_sidecar::proto::health::health_check_response::ServingStatus;
use gpu_sidecar::proto::sidecar::ServingState;

use crate::util::{
    expect_exit_1, http, mkfifo, open_fifo_writer, padded_model, ready_sidecar, Clients,
    ConfigText, Sidecar, TestDir, PATIENCE,
};

/// The bound on start-up with a small model.
const READY_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn ready_within_five_seconds_of_spawn() {
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    let took = sidecar.since_spawn();
    println!("spawn to READY: {} ms", took.as_millis());
    assert!(took < READY_WITHIN, "READY took {took:?}");
    let addr = sidecar.health_addr();
    assert_eq!(
        http(addr, "GET", "/health").unwrap(),
        (200, "READY".to_string())
    );
    assert_eq!(
        http(addr, "GET", "/health/ready").unwrap(),
        (200, "READY".to_string())
    );
    assert_eq!(
        http(addr, "GET", "/health/live").unwrap(),
        (200, "LIVE".to_string())
    );
    assert_eq!(http(addr, "GET", "/metrics/nope").unwrap().0, 404);
    assert_eq!(http(addr, "POST", "/health").unwrap().0, 405);
    let (status, body) = http(addr, "HEAD", "/health").unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// The model comes through a FIFO, so start-up waits until the test writes it: the health
/// endpoint must already answer, with 503, and gRPC health must say NOT_SERVING.
#[test]
fn not_ready_until_the_model_is_loaded() {
    let dir = TestDir::new();
    let fifo = dir.path().join("model.fifo");
    mkfifo(&fifo);
    let mut config = ConfigText::new(&dir);
    config.model = "model.fifo".to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    let addr = sidecar.health_addr();
    assert_eq!(
        http(addr, "GET", "/health").unwrap(),
        (503, "NOT_READY".to_string())
    );
    assert_eq!(http(addr, "GET", "/health/ready").unwrap().0, 503);
    assert_eq!(
        http(addr, "GET", "/health/live").unwrap(),
        (200, "LIVE".to_string())
    );
    let clients = Clients::connect(&sidecar.grpc_target());
    let status = clients.health_check("").unwrap().status.enum_value();
    assert_eq!(status, Ok(ServingStatus::NOT_SERVING));
    let ping = clients.ping(b"early").unwrap();
    assert_eq!(
        ping.state.enum_value(),
        Ok(ServingState::SERVING_STATE_STARTING)
    );
    assert!(!ping.model_loaded);

    let mut writer = open_fifo_writer(&mut sidecar, &fifo);
    // Fits in the pipe's buffer: a non-blocking write takes it whole.
    writer.write_all(&padded_model(1000)).unwrap();
    drop(writer);
    sidecar.wait_ready();
    assert_eq!(
        http(addr, "GET", "/health").unwrap(),
        (200, "READY".to_string())
    );
    let status = clients.health_check("").unwrap().status.enum_value();
    assert_eq!(status, Ok(ServingStatus::SERVING));
    assert_eq!(clients.ping(b"").unwrap().model.size_bytes, 1000);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn sigterm_exits_0_within_the_grace_period_and_removes_the_socket() {
    let (dir, mut sidecar) = ready_sidecar(|c| c.grace_period = "3 s".to_string());
    let socket = dir.socket();
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "default socket mode");
    let signalled = Instant::now();
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    let took = signalled.elapsed();
    println!("SIGTERM to exit: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    assert!(!socket.exists(), "socket file left behind");
    let log = sidecar.log();
    for step in [
        "READY -> DRAINING",
        "gRPC server stopped",
        "DRAINING -> STOPPED",
    ] {
        assert!(log.contains(step), "log lacks {step:?}:\n{log}");
    }
}

#[test]
fn sigint_is_a_clean_shutdown_too() {
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    sidecar.signal(libc::SIGINT);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn socket_mode_is_applied() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let socket_line = format!("endpoint = \"unix:{}\"", dir.socket().display());
    let text = ConfigText::new(&dir).render().replace(
        &socket_line,
        &format!("{socket_line}\nsocket-mode = \"0600\""),
    );
    let mut sidecar = Sidecar::spawn(&dir.write_config(&text), &[]);
    sidecar.wait_ready();
    let mode = fs::metadata(dir.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

/// Shutdown that cannot finish (the GPU thread is stuck opening a FIFO nobody writes) is cut
/// short by a second signal, at once, with a non-zero code.
#[test]
fn a_second_signal_exits_at_once() {
    let dir = TestDir::new();
    mkfifo(&dir.path().join("model.fifo"));
    let mut config = ConfigText::new(&dir);
    config.model = "model.fifo".to_string();
    config.grace_period = "60 s".to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_for_log("loading model");
    sidecar.signal(libc::SIGTERM);
    sidecar.wait_for_log("gRPC server stopped");
    assert!(
        sidecar.try_exit().is_none(),
        "the first signal should wait for the GPU thread"
    );
    let second = Instant::now();
    sidecar.signal(libc::SIGTERM);
    let code = sidecar.exit_code(PATIENCE);
    assert_eq!(code, 128 + libc::SIGTERM, "{}", sidecar.log());
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "took {:?}",
        second.elapsed()
    );
}

#[test]
fn a_stale_socket_file_does_not_block_a_restart() {
    let dir = TestDir::new();
    // A socket file nobody listens on, as a killed sidecar leaves it.
    drop(UnixListener::bind(dir.socket()).unwrap());
    assert!(dir.socket().exists());
    dir.write_model("model.bin", 64);
    let mut sidecar = Sidecar::spawn(&dir.write_config(&ConfigText::new(&dir).render()), &[]);
    sidecar.wait_ready();
    assert!(
        sidecar.log().contains("removing stale socket"),
        "{}",
        sidecar.log()
    );
    let clients = Clients::connect(&sidecar.grpc_target());
    assert_eq!(clients.ping(b"x").unwrap().payload, b"x");
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
    assert!(!dir.socket().exists());
}

#[test]
fn restart_after_kill_9_on_the_same_socket() {
    let (dir, mut first) = ready_sidecar(|_| {});
    first.signal(libc::SIGKILL);
    first.wait_exit(PATIENCE);
    assert!(dir.socket().exists(), "SIGKILL leaves the socket file");
    let mut second = Sidecar::spawn(&dir.path().join("sidecar.toml"), &[]);
    second.wait_ready();
    second.signal(libc::SIGTERM);
    assert_eq!(second.exit_code(PATIENCE), 0, "{}", second.log());
}

#[test]
fn runtime_failures_exit_1_with_a_message_and_leave_nothing_behind() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);

    let missing_model = ConfigText {
        model: "absent.bin".to_string(),
        ..ConfigText::new(&dir)
    };
    let log = expect_exit_1(&dir, &missing_model.render(), &[]);
    assert!(
        log.contains("absent.bin") && log.contains("does not exist"),
        "{log}"
    );
    assert_eq!(dir.entries(), ["model.bin", "sidecar.toml"]);

    let empty = dir.path().join("empty.bin");
    fs::write(&empty, b"").unwrap();
    let empty_model = ConfigText {
        model: "empty.bin".to_string(),
        ..ConfigText::new(&dir)
    };
    // An empty file is no model: a configuration error, exit 2, which no restart fixes.
    let log = crate::util::expect_exit(2, &dir, &empty_model.render(), &[]);
    assert!(log.contains("is empty"), "{log}");
    fs::remove_file(&empty).unwrap();

    let no_folder = ConfigText {
        endpoint: format!("unix:{}/absent/s.sock", dir.path().display()),
        ..ConfigText::new(&dir)
    };
    let log = expect_exit_1(&dir, &no_folder.render(), &[]);
    assert!(
        log.contains("does not exist") && log.contains("absent"),
        "{log}"
    );
    assert_eq!(dir.entries(), ["model.bin", "sidecar.toml"]);

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let health_port_taken = ConfigText {
        health_port: port,
        ..ConfigText::new(&dir)
    };
    let log = expect_exit_1(&dir, &health_port_taken.render(), &[]);
    assert!(
        log.contains("sidecar.health") && log.contains(&port.to_string()),
        "{log}"
    );
    assert_eq!(dir.entries(), ["model.bin", "sidecar.toml"]);

    let grpc_port_taken = ConfigText {
        endpoint: format!("127.0.0.1:{port}"),
        ..ConfigText::new(&dir)
    };
    let log = expect_exit_1(&dir, &grpc_port_taken.render(), &[]);
    assert!(
        log.contains("cannot bind gRPC endpoint") && log.contains("in use"),
        "{log}"
    );
    drop(taken);

    fs::write(dir.socket(), b"not a socket").unwrap();
    let log = expect_exit_1(&dir, &ConfigText::new(&dir).render(), &[]);
    assert!(log.contains("not a socket"), "{log}");
    assert_eq!(
        fs::read(dir.socket()).unwrap(),
        b"not a socket",
        "the file was touched"
    );
    fs::remove_file(dir.socket()).unwrap();
}

#[test]
fn an_endpoint_served_by_a_live_process_is_refused() {
    let (dir, mut first) = ready_sidecar(|_| {});
    let log = expect_exit_1(&dir, &ConfigText::new(&dir).render(), &[]);
    assert!(log.contains("already served by a live process"), "{log}");
    // The first one is unharmed.
    let clients = Clients::connect(&first.grpc_target());
    assert_eq!(clients.ping(b"still here").unwrap().payload, b"still here");
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit_code(PATIENCE), 0);
}

#[test]
fn a_second_instance_on_the_same_tcp_port_is_refused() {
    let (dir, mut first) = ready_sidecar(|c| c.endpoint = "127.0.0.1:0".to_string());
    let target = first.grpc_target();
    let second_dir = TestDir::new();
    second_dir.write_model("model.bin", 64);
    let second = ConfigText {
        endpoint: target.clone(),
        ..ConfigText::new(&second_dir)
    };
    let log = expect_exit_1(&second_dir, &second.render(), &[]);
    assert!(log.contains("cannot bind gRPC endpoint"), "{log}");
    let clients = Clients::connect(&target);
    assert_eq!(clients.ping(b"ok").unwrap().payload, b"ok");
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit_code(PATIENCE), 0);
    drop(dir);
}
