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

//! What supervisors see: `/metrics` in the Prometheus text format, and the systemd
//! notifications (a datagram socket bound by the test stands in for systemd, passed as
//! `NOTIFY_SOCKET`): status lines, READY, STOPPING, start-up extensions, watchdog pings.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

#[cfg(feature = "failpoints")]
use crate::gate::Gate;
use crate::scrape::Scrape;
use crate::util::{
    http, mkfifo, open_fifo_writer, padded_model, ready_sidecar, Clients, ConfigText, Sidecar,
    TestDir, PATIENCE,
};

/// A stand-in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    /// Every datagram received so far, in order.
    messages: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &TestDir) -> Self {
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            path: path.to_str().unwrap().to_string(),
            messages: Vec::new(),
        }
    }

    /// The index of the first datagram that satisfies `wanted`, receiving until one does;
    /// panics after `PATIENCE`.
    fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> usize {
        if let Some(index) = self.messages.iter().position(|m| wanted(m)) {
            return index;
        }
        self.wait_for_next(wanted)
    }

    /// Like [`NotifySocket::wait_for`], for datagrams not received yet.
    fn wait_for_next(&mut self, wanted: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "no such notification within {PATIENCE:?}; got {:#?}",
                self.messages
            );
            if let Some(message) = self.receive_within(deadline - now) {
                self.messages.push(message);
                if wanted(self.messages.last().unwrap()) {
                    return self.messages.len() - 1;
                }
            }
        }
    }

    /// Every datagram that arrives within `window`.
    fn collect_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.receive_within(left) {
                Some(message) => {
                    self.messages.push(message.clone());
                    seen.push(message);
                }
                None => break,
            }
        }
        seen
    }

    fn receive_within(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on notify socket: {e}"),
        }
    }
}

fn is_watchdog(message: &str) -> bool {
    message.lines().any(|line| line == "WATCHDOG=1")
}

/// Spawns a sidecar on `config` (written into `dir`) with a notification socket of the
/// test's as `NOTIFY_SOCKET`, no GPU, and `envs`.
fn notified_sidecar(
    dir: &TestDir,
    config: &ConfigText,
    envs: &[(&str, &str)],
) -> (NotifySocket, Sidecar) {
    let notify = NotifySocket::bind(dir);
    let mut all_envs = vec![
        ("NOTIFY_SOCKET", notify.path.as_str()),
        ("CUDA_VISIBLE_DEVICES", ""),
    ];
    all_envs.extend_from_slice(envs);
    let sidecar = Sidecar::spawn(&dir.write_config(&config.render()), &all_envs);
    (notify, sidecar)
}

#[test]
fn metrics_are_prometheus_text_and_counters_move_after_calls() {
    for endpoint in ["unix", "tcp"] {
        let (_dir, mut sidecar) = ready_sidecar(|config| {
            if endpoint == "tcp" {
                config.endpoint = "127.0.0.1:0".to_string();
            }
        });
        let addr = sidecar.health_addr();
        let before = Scrape::fetch(addr);
        let ping_calls = format!("gpu_sidecar_ping_calls_total{{transport=\"{endpoint}\"}}");
        let ping_count =
            format!("gpu_sidecar_ping_duration_seconds_count{{transport=\"{endpoint}\"}}");
        let checks = "gpu_sidecar_grpc_health_checks_total{method=\"Check\"}";
        assert_eq!(before.get(&ping_calls), 0.0);
        assert_eq!(before.get(checks), 0.0);
        assert_eq!(before.get("gpu_sidecar_state{state=\"ready\"}"), 1.0);
        assert_eq!(before.get("gpu_sidecar_state{state=\"starting\"}"), 0.0);
        assert_eq!(before.get("gpu_sidecar_live"), 1.0);
        assert!(before.get("gpu_sidecar_startup_duration_seconds") > 0.0);
        assert_eq!(
            before.get("gpu_sidecar_model_resident_bytes{location=\"host\"}"),
            4096.0
        );
        assert!(before.get("gpu_sidecar_model_load_duration_seconds") > 0.0);
        assert!(before.get("process_resident_memory_bytes") > 0.0);
        assert!(
            !before.has_family("gpu_sidecar_gpu_"),
            "GPU series without a GPU: {:#?}",
            before.samples
        );

        let clients = Clients::connect(&sidecar.grpc_target());
        for _ in 0..3 {
            clients.ping(b"counted").unwrap();
        }
        clients.health_check("").unwrap();
        let after = Scrape::fetch(addr);
        assert_eq!(after.get(&ping_calls), 3.0);
        assert_eq!(after.get(&ping_count), 3.0);
        assert_eq!(
            after.get(&format!(
                "gpu_sidecar_ping_errors_total{{transport=\"{endpoint}\"}}"
            )),
            0.0
        );
        assert_eq!(after.get(checks), 1.0);
        // A handler counts itself out just after its reply is sent: the client may read the
        // metrics first.
        let deadline = Instant::now() + PATIENCE;
        while Scrape::fetch(addr).get("gpu_sidecar_grpc_calls_in_flight") != 0.0 {
            assert!(
                Instant::now() < deadline,
                "calls still in flight after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(after.get("gpu_sidecar_uptime_seconds") > before.get("gpu_sidecar_uptime_seconds"));

        // Prometheus conventions: one prefix, units in the name, counters end in _total.
        for (family, kind) in &after.types {
            assert!(
                family.starts_with("gpu_sidecar_") || family.starts_with("process_"),
                "{family}"
            );
            if kind == "counter" {
                assert!(family.ends_with("_total"), "counter {family}");
            }
        }
        assert_eq!(
            after.types["gpu_sidecar_ping_duration_seconds"],
            "histogram"
        );
        assert!(!sidecar.log().contains("systemd"), "{}", sidecar.log());
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
}

#[test]
fn systemd_hears_each_phase_in_order() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let (mut notify, mut sidecar) = notified_sidecar(&dir, &ConfigText::new(&dir), &[]);
    let ready = notify.wait_for(|m| m.lines().any(|l| l == "READY=1"));
    assert_eq!(
        http(sidecar.health_addr(), "GET", "/health").unwrap(),
        (200, "READY".to_string()),
        "READY=1 was sent before /health said READY"
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    notify.collect_for(Duration::from_millis(100));
    let messages = notify.messages.clone();
    let position = |needle: &str| {
        messages
            .iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {messages:#?}"))
    };
    assert_eq!(messages[0], "STATUS=starting\n", "{messages:#?}");
    assert!(
        messages[ready].contains("STATUS=serving model \"model\" 1 from ")
            && messages[ready].contains("model.bin (4.00 KiB) with ONNX Runtime ")
            && messages[ready].contains(" on the CPU, no GPU, on unix:"),
        "{messages:#?}"
    );
    let stopping = position("STOPPING=1");
    assert!(
        messages[stopping].contains("STATUS=draining: 0 call(s) in flight, grace period 10s"),
        "{messages:#?}"
    );
    assert!(ready < stopping, "{messages:#?}");
    assert_eq!(
        messages.last().unwrap(),
        "STATUS=stopped\n",
        "{messages:#?}"
    );
    assert!(
        !messages.iter().any(|m| is_watchdog(m)),
        "watchdog pings without WATCHDOG_USEC: {messages:#?}"
    );
}

/// A model that arrives slowly (through a FIFO the test writes) earns start-up extensions
/// while bytes keep coming, with a status line that shows the progress.
#[test]
fn a_loading_model_extends_the_start_timeout_while_it_progresses() {
    let dir = TestDir::new();
    let fifo = dir.path().join("model.fifo");
    mkfifo(&fifo);
    let config = ConfigText {
        model: "model.fifo".to_string(),
        ..ConfigText::new(&dir)
    };
    let (mut notify, mut sidecar) = notified_sidecar(&dir, &config, &[]);
    let mut writer = open_fifo_writer(&mut sidecar, &fifo);
    let model = padded_model(4096);
    writer.write_all(&model[..2048]).unwrap();
    let extended = notify.wait_for(|m| m.starts_with("EXTEND_TIMEOUT_USEC=30000000"));
    let progress =
        notify.wait_for(|m| m.contains("STATUS=loading model ") && m.contains("2.00 KiB read"));
    assert!(
        notify.messages[..extended.max(progress)]
            .iter()
            .all(|m| !m.contains("READY=1")),
        "{:#?}",
        notify.messages
    );
    writer.write_all(&model[2048..]).unwrap();
    notify.wait_for(|m| m.contains("4.00 KiB read"));
    drop(writer);
    notify.wait_for(|m| m.contains("READY=1"));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn the_watchdog_is_fed_at_half_its_timeout() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let (mut notify, mut sidecar) =
        notified_sidecar(&dir, &ConfigText::new(&dir), &[("WATCHDOG_USEC", "400000")]);
    let ready = notify.wait_for(|m| m.contains("READY=1"));
    let first = notify.wait_for(is_watchdog);
    assert!(first > ready, "{:#?}", notify.messages);
    let started = Instant::now();
    let pings = notify.collect_for(Duration::from_millis(1000));
    let fed = pings.iter().filter(|m| is_watchdog(m)).count();
    // Every 200 ms: about five in a second, at least three even on a loaded machine; the
    // once-a-second cadence used without a short watchdog would give one or two.
    assert!(
        fed >= 3,
        "{fed} pings in {:?}: {pings:#?}",
        started.elapsed()
    );
    assert!(sidecar
        .log()
        .contains("sending status and watchdog pings every 200ms (WATCHDOG_USEC is 400ms)"));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// A GPU-owner thread that stops answering (held by a fail point) stops the watchdog pings
/// and turns `/health/live` to NOT_LIVE, until it answers again.
#[cfg(feature = "failpoints")]
#[test]
fn a_stuck_gpu_thread_starves_the_watchdog_and_fails_liveness() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let gate = Gate::new();
    // Three heartbeats answered, then one held at the gate until released, then all answered.
    let failpoints = format!("gpu::heartbeat=3*off->1*{}->off", gate.action());
    let (mut notify, mut sidecar) = notified_sidecar(
        &dir,
        &ConfigText::new(&dir),
        &[("WATCHDOG_USEC", "400000"), ("FAILPOINTS", &failpoints)],
    );
    notify.wait_for(is_watchdog);
    sidecar.wait_for_log("the gpu-owner thread has not answered for");
    let addr = sidecar.health_addr();
    assert_eq!(
        http(addr, "GET", "/health/live").unwrap(),
        (503, "NOT_LIVE".to_string())
    );
    assert_eq!(Scrape::fetch(addr).get("gpu_sidecar_live"), 0.0);
    // Pings sent before the stall was judged may still be queued; none after it.
    notify.collect_for(Duration::from_millis(50));
    let starved = notify.collect_for(Duration::from_millis(600));
    assert!(
        !starved.iter().any(|m| is_watchdog(m)),
        "fed while stuck: {starved:#?}"
    );
    gate.release();
    sidecar.wait_for_log("the gpu-owner thread answers again: live");
    notify.wait_for_next(is_watchdog);
    assert_eq!(
        http(addr, "GET", "/health/live").unwrap(),
        (200, "LIVE".to_string())
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}
