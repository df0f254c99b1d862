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

//! GPU use. Without a usable GPU (no driver, or devices hidden): `auto` runs on the host and
//! `required` exits 1. The binary must not link libcuda. Tests that need a real GPU are
//! ignored by default; run them on a GPU machine with `cargo test -- --ignored`.

use std::process::Command;

use gpu_sidecar::proto::sidecar::ModelLocation;

use crate::util::{
    ready_sidecar, sha256_of, Clients, ConfigText, Sidecar, TestDir, BINARY, PATIENCE,
};

/// Hides every GPU from the driver, where there is one; on machines without a driver the
/// library is absent anyway. Either way the sidecar finds no usable GPU.
const NO_GPU: (&str, &str) = ("CUDA_VISIBLE_DEVICES", "");

#[test]
fn required_mode_without_a_gpu_exits_1_with_a_clear_message() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let config = ConfigText {
        gpu_mode: "required".to_string(),
        ..ConfigText::new(&dir)
    };
    let mut sidecar = Sidecar::spawn(&dir.write_config(&config.render()), &[NO_GPU]);
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    let log = sidecar.log();
    assert!(
        log.contains("sidecar.gpu.mode is \"required\" but no GPU can be used"),
        "{log}"
    );
    assert_eq!(
        dir.entries(),
        ["model.bin", "sidecar.toml"],
        "socket left behind"
    );
}

#[test]
fn auto_mode_without_a_gpu_serves_from_host_memory_and_says_so() {
    let (_dir, mut sidecar) = ready_sidecar(|c| c.gpu_mode = "auto".to_string());
    assert!(
        sidecar.log().contains("running without a GPU"),
        "{}",
        sidecar.log()
    );
    let ping = Clients::connect(&sidecar.grpc_target()).ping(b"").unwrap();
    assert!(!ping.gpu_in_use);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

#[test]
fn off_mode_never_touches_cuda() {
    let (_dir, mut sidecar) = ready_sidecar(|c| c.gpu_mode = "off".to_string());
    assert!(
        sidecar.log().contains("sidecar.gpu.mode is \"off\""),
        "{}",
        sidecar.log()
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0);
}

#[test]
fn the_binary_does_not_link_libcuda() {
    let output = Command::new("readelf")
        .args(["-d", BINARY])
        .output()
        .expect("readelf (binutils) is needed for this test");
    assert!(output.status.success());
    let dynamic = String::from_utf8_lossy(&output.stdout);
    assert!(
        dynamic.contains("(NEEDED)"),
        "no dynamic section read:\n{dynamic}"
    );
    assert!(!dynamic.contains("libcuda"), "links libcuda:\n{dynamic}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with `cargo test -- --ignored` on a GPU machine"]
fn required_mode_on_a_gpu_keeps_the_model_in_device_memory() {
    let dir = TestDir::new();
    let model = dir.write_model("model.bin", 64 << 20);
    let config = ConfigText {
        gpu_mode: "required".to_string(),
        ..ConfigText::new(&dir)
    };
    let mut sidecar = Sidecar::spawn(&dir.write_config(&config.render()), &[]);
    let took = sidecar.wait_ready();
    println!(
        "spawn to READY with a 64 MiB model on the GPU: {} ms",
        took.as_millis()
    );
    let ping = Clients::connect(&sidecar.grpc_target())
        .ping(b"gpu")
        .unwrap();
    assert_eq!(ping.payload, b"gpu");
    assert!(ping.gpu_in_use);
    let gpu = ping.gpu.as_ref().expect("GPU details");
    println!(
        "GPU {}: {} ({} bytes, compute capability {}, driver CUDA {})",
        gpu.ordinal, gpu.name, gpu.total_memory_bytes, gpu.compute_capability, gpu.driver_version
    );
    assert!(!gpu.name.is_empty());
    assert!(gpu.total_memory_bytes > 64 << 20);
    assert_eq!(
        ping.model.location.enum_value(),
        Ok(ModelLocation::MODEL_LOCATION_DEVICE_MEMORY)
    );
    assert_eq!(ping.model.size_bytes, 64 << 20);
    assert_eq!(ping.model.sha256, sha256_of(&model));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    let log = sidecar.log();
    assert!(
        log.contains("freed 64.00 MiB of device memory and released the context"),
        "{log}"
    );
    println!("{log}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with `cargo test -- --ignored` on a GPU machine"]
fn a_model_larger_than_free_device_memory_exits_1() {
    let dir = TestDir::new();
    // A sparse file larger than any GPU's memory: reading it costs time but no disk.
    let model = dir.path().join("huge.bin");
    let file = std::fs::File::create(&model).unwrap();
    file.set_len(1 << 40).unwrap();
    let config = ConfigText {
        gpu_mode: "required".to_string(),
        model: "huge.bin".to_string(),
        ..ConfigText::new(&dir)
    };
    let mut sidecar = Sidecar::spawn(&dir.write_config(&config.render()), &[]);
    let _ = sidecar.exit_code(PATIENCE);
    let log = sidecar.log();
    assert!(log.contains("free"), "{log}");
}
