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

// The daemon's test helpers, shared rather than copied: they start and stop sidecars.
#[allow(dead_code)]
#[path = "../../tests/it/util.rs"]
mod util;

use util::{ready_sidecar, PATIENCE};

const BENCH: &str = env!("CARGO_BIN_EXE_gpu-sidecar-bench");

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// Runs the bench with `args`, expects success, and returns its JSON lines.
fn run_bench(args: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(BENCH)
        .args(args)
        .args(["--warmup", "0 ms", "--json"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("ORT_DYLIB_PATH", util::runtime_library())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&output.stdout)
}

/// Runs the bench with `args`, expects `code`, and returns its stderr.
fn bench_fails(args: &[&str], code: i32) -> String {
    let output = Command::new(BENCH).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    stderr
}

#[test]
fn spawned_runs_report_every_request_and_the_startup() {
    let lines = run_bench(&[
        "--spawn",
        "--transports",
        "unix,tcp",
        "--concurrency",
        "1,3",
        "--payload",
        "16,4KiB",
        "--requests",
        "60",
        "--startup-runs",
        "2",
    ]);
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
fn a_version_switch_is_measured_beside_a_run_without_one() {
    let lines = run_bench(&[
        "--spawn",
        "--swap",
        "--transports",
        "unix",
        "--concurrency",
        "4",
        "--duration",
        "600 ms",
        "--startup-runs",
        "0",
    ]);
    let runs: Vec<_> = lines.iter().filter(|l| l["kind"] == "swap").collect();
    assert_eq!(runs.len(), 2, "{lines:#?}");
    assert_eq!(runs[0]["switch"], false, "{lines:#?}");
    assert!(runs[0]["load"].is_null(), "{}", runs[0]);
    assert_eq!(runs[1]["switch"], true, "{lines:#?}");
    assert!(
        runs[1]["load"]["seconds"].as_f64().unwrap() > 0.0,
        "{}",
        runs[1]
    );
    assert!(runs[1]["load"]["error"].is_null(), "{}", runs[1]);
    for run in &runs {
        assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["ok"], run["requests"], "{run}");
        assert_eq!(run["errors"], serde_json::json!({}), "{run}");
        assert!(run["rss_bytes"]["peak"].as_u64().unwrap() > 0, "{run}");
    }
}

#[test]
fn inference_runs_account_for_every_request_and_report_the_batches() {
    let lines = run_bench(&[
        "--spawn",
        "--transports",
        "unix",
        "--mode",
        "unary,stream",
        "--concurrency",
        "4",
        "--rows",
        "1,3",
        "--max-batch-size",
        "8,0",
        "--instances",
        "1,2",
        "--intra-op-threads",
        "1",
        "--requests",
        "40",
        "--startup-runs",
        "0",
        "--runtime-only",
        "--duration",
        "200 ms",
    ]);
    let runs: Vec<_> = lines.iter().filter(|l| l["kind"] == "inference").collect();
    // 2 batch sizes x 2 instance counts x 2 modes x 2 row counts.
    assert_eq!(runs.len(), 16, "{lines:#?}");
    for instances in [1, 2] {
        assert_eq!(
            runs.iter()
                .filter(|run| run["instances"] == instances)
                .count(),
            8,
            "{lines:#?}"
        );
    }
    for run in &runs {
        assert_eq!(run["requests"], 40, "{run}");
        assert_eq!(run["ok"], 40, "{run}");
        assert_eq!(run["errors"], serde_json::json!({}), "{run}");
        let rows = run["rows"].as_f64().unwrap();
        let per_execution = run["rows_per_execution"].as_f64().unwrap();
        if run["max_batch_size"] == 0 {
            // One request per execution, counted as one inference, as Triton counts them.
            assert_eq!(
                per_execution, 1.0,
                "batching off runs one request each: {run}"
            );
        } else {
            assert!((rows..=8.0).contains(&per_execution), "{run}");
        }
        assert!(run["rows_per_second"].as_f64().unwrap() > 0.0, "{run}");
        assert!(
            run["runtime_only"]["rows_per_second"].as_f64().unwrap() > 0.0,
            "{run}"
        );
        // The spawned sidecar's CPU, read from /proc (in 10 ms ticks: a short run may read
        // none): in all, per request, and by thread group, which add up to it.
        let cpu = &run["server_cpu"];
        let per_request = cpu["us_per_request"].as_f64().unwrap();
        let seconds = cpu["seconds"].as_f64().unwrap();
        assert!((per_request * 40.0 - seconds * 1e6).abs() < 1.0, "{run}");
        let groups: f64 = cpu["us_per_request_by_threads"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!(
            (groups - per_request).abs() < 1e-6 * per_request.max(1.0),
            "{run}"
        );
        // Its threads' context switches, by group, which add up too; the gRPC threads wait
        // for requests, so at least one.
        let switches = cpu["context_switches_per_request"].as_f64().unwrap();
        let by_group = &cpu["context_switches_per_request_by_threads"];
        let sum: f64 = ["execution", "grpc", "other"]
            .iter()
            .map(|g| by_group[g].as_f64().unwrap())
            .sum();
        assert!((sum - switches).abs() < 1e-9 * switches.max(1.0), "{run}");
        assert!(by_group["grpc"].as_f64().unwrap() > 0.0, "{run}");
    }
}

#[test]
fn a_running_target_is_measured_and_errors_are_counted() {
    let (_dir, mut sidecar) = ready_sidecar(|config| {
        config.rpc_extra = "max-message-size = \"4 MiB\"".to_string();
    });
    let health = sidecar.health_addr().to_string();
    // A 5 MiB payload exceeds the sidecar's 4 MiB message limit: every call fails, and says so.
    let lines = run_bench(&[
        "--target",
        &sidecar.grpc_target(),
        "--health",
        &health,
        "--concurrency",
        "2",
        "--payload",
        "16,5MiB",
        "--requests",
        "20",
    ]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["ok"], 20);
    assert_eq!(lines[1]["ok"], 0);
    assert_eq!(lines[1]["requests"], 20);
    assert_eq!(
        lines[1]["errors"],
        serde_json::json!({"3-INVALID_ARGUMENT": 20}),
        "{lines:#?}"
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

#[test]
fn bad_targets_and_arguments_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("unix:{}", dir.path().join("absent.sock").display());
    let stderr = bench_fails(&["--target", &target, "--requests", "1"], 1);
    assert!(
        stderr.contains(&format!("cannot reach gpu-sidecar at {target}")),
        "{stderr}"
    );
    let absent_model = dir.path().join("absent.bin");
    let stderr = bench_fails(&["--spawn", "--model", absent_model.to_str().unwrap()], 1);
    assert!(stderr.contains("absent.bin: No such file"), "{stderr}");
    for (args, wanted) in [
        (&["--spawn", "--concurrency", "0"][..], "--concurrency"),
        (&["--spawn", "--requests", "0"][..], "--requests"),
        (&["--spawn", "--duration", "0 s"][..], "--duration"),
        (&["--spawn", "--payload", "lots"][..], "lots"),
    ] {
        let stderr = bench_fails(args, 2);
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}
