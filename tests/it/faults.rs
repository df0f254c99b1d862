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

//! A component thread that dies while the sidecar serves triggers the orderly shutdown and
//! exit code 1. The deaths are injected through fail points, compiled in only with the
//! `failpoints` feature (the README's test command enables it).

#![cfg(feature = "failpoints")]

use crate::util::{http, ConfigText, Sidecar, TestDir, PATIENCE};

/// Starts a sidecar with `failpoints` set, waits for READY in its log.
fn sidecar_with(failpoints: &str) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let path = dir.write_config(&ConfigText::new(&dir).render());
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
    let (dir, mut sidecar) = sidecar_with("health::respond=panic");
    sidecar.wait_for_log("READY in");
    // The first request makes the health thread panic; the connection just drops.
    let _ = http(sidecar.health_addr(), "GET", "/health");
    assert_orderly_failure(&dir, &mut sidecar, "health");
}

#[test]
fn a_gpu_thread_panic_shuts_down_with_exit_1() {
    let (dir, mut sidecar) = sidecar_with("gpu::after_ready=panic");
    assert_orderly_failure(&dir, &mut sidecar, "gpu-owner");
}
