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

//! `gpu-sidecar-bench` does what it says: counts add up, errors are shown, an unreachable
//! target is a clear failure. Its timings are not checked here (they belong to the README's
//! figures, not to tests).

use std::process::Command;

use crate::util::{ready_sidecar, PATIENCE};

const BENCH: &str = env!("CARGO_BIN_EXE_gpu-sidecar-bench");

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn spawned_runs_report_every_request_and_the_startup() {
    let output = Command::new(BENCH)
        .args([
            "--spawn",
            "--transports",
            "unix,tcp",
            "--concurrency",
            "1,3",
        ])
        .args([
            "--payload",
            "16,4KiB",
            "--requests",
            "60",
            "--warmup",
            "0 ms",
        ])
        .args(["--startup-runs", "2", "--json"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output.stdout);
    let startups: Vec<_> = lines.iter().filter(|l| l["kind"] == "startup").collect();
    let runs: Vec<_> = lines.iter().filter(|l| l["kind"] == "ping").collect();
    assert_eq!(startups.len(), 2, "{lines:#?}");
    for startup in &startups {
        assert_eq!(startup["runs"], 2);
        assert!(startup["median_ms"].as_f64().unwrap() > 0.0);
    }
    // 2 transports x 2 concurrencies x 2 payloads.
    assert_eq!(runs.len(), 8, "{lines:#?}");
    for run in &runs {
        assert_eq!(run["requests"], 60, "{run}");
        assert_eq!(run["ok"], 60, "{run}");
        assert_eq!(run["errors"], serde_json::json!({}), "{run}");
        let latency = &run["latency_us"];
        assert!(latency["p50"].as_f64() <= latency["p99"].as_f64(), "{run}");
        assert!(latency["p99"].as_f64() <= latency["max"].as_f64(), "{run}");
        assert!(run["rss_bytes"].as_u64().unwrap() > 0, "{run}");
    }
}

#[test]
fn a_running_target_is_measured_and_errors_are_counted() {
    let (_dir, mut sidecar) = ready_sidecar(|_| {});
    let health = sidecar.health_addr().to_string();
    // A 5 MiB payload exceeds the sidecar's 4 MiB message limit: every call fails, and says so.
    let output = Command::new(BENCH)
        .args(["--target", &sidecar.grpc_target(), "--health", &health])
        .args([
            "--concurrency",
            "2",
            "--payload",
            "16,5MiB",
            "--requests",
            "20",
        ])
        .args(["--warmup", "0 ms", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output.stdout);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["ok"], 20);
    assert_eq!(lines[1]["ok"], 0);
    assert_eq!(lines[1]["requests"], 20);
    assert_eq!(
        lines[1]["errors"],
        serde_json::json!({"8-RESOURCE_EXHAUSTED": 20}),
        "{lines:#?}"
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

#[test]
fn an_unreachable_target_exits_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("unix:{}", dir.path().join("absent.sock").display());
    let output = Command::new(BENCH)
        .args(["--target", &target, "--requests", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach gpu-sidecar at {target}")),
        "{stderr}"
    );
    let output = Command::new(BENCH)
        .args(["--concurrency", "0", "--spawn"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
