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
//! `required` exits 1. The binary must not link libcuda. The GPU-owner thread's driver calls
//! run against a fake driver (tests/fixtures/fake_libcuda.c) on every machine; tests that need
//! a real GPU are ignored by default: run them on a GPU machine with
//! `cargo test -- --ignored`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use gpu_sidecar::proto::sidecar::ModelLocation;
use grpcio::CallOption;

use crate::scrape::Scrape;
use crate::util::{
    binary, expect_exit_1, ready_sidecar, sha256_of, Clients, ConfigText, Sidecar, TestDir,
    PATIENCE,
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
    let log = expect_exit_1(&dir, &config.render(), &[NO_GPU]);
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
        .arg("-d")
        .arg(binary())
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

/// The fake driver and NVML, compiled into `dir`: returns the folder to put on LD_LIBRARY_PATH and the
/// file it logs its calls to.
pub(crate) fn fake_driver(dir: &TestDir) -> (String, PathBuf) {
    let lib_dir = dir.path().join("fake-driver");
    fs::create_dir(&lib_dir).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_libcuda.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(lib_dir.join("libcuda.so"))
        .arg(source)
        .status()
        .expect("a C compiler (cc) builds the fake driver");
    assert!(status.success(), "compiling the fake driver failed");
    let nvml = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fake_libnvidia_ml.c"
    );
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(lib_dir.join("libnvidia-ml.so.1"))
        .arg(nvml)
        .status()
        .expect("a C compiler (cc) builds the fake NVML");
    assert!(status.success(), "compiling the fake NVML failed");
    (
        lib_dir.to_str().unwrap().to_string(),
        dir.path().join("fake-driver.log"),
    )
}

/// Spawns a sidecar on the fake driver with `knobs`; returns it and the driver's call log.
pub(crate) fn spawn_on_fake_driver(
    dir: &TestDir,
    config: &ConfigText,
    knobs: &[(&str, &str)],
) -> (Sidecar, PathBuf) {
    let (lib_dir, log) = fake_driver(dir);
    let log_path = log.to_str().unwrap().to_string();
    let mut envs = vec![
        ("LD_LIBRARY_PATH", lib_dir.as_str()),
        ("FAKE_CUDA_LOG", log_path.as_str()),
    ];
    envs.extend_from_slice(knobs);
    let sidecar = Sidecar::spawn(&dir.write_config(&config.render()), &envs);
    (sidecar, log)
}

/// The fake driver's calls: (thread id, call).
pub(crate) fn driver_calls(log: &std::path::Path) -> Vec<(String, String)> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (tid, call) = line.split_once(' ').unwrap();
            (tid.to_string(), call.to_string())
        })
        .collect()
}

/// Asserts what the fake driver saw: the GPU-owner thread initialises the driver, retains the
/// context and makes it current, and releases it last; the loader (the repository thread)
/// only ever retains the same context, makes it current while it builds a session, and lets
/// it go, every retain of its matched by a release; the main thread never touches CUDA.
fn assert_context_only_on_owner_and_loader(log: &std::path::Path, pid: i32) {
    let calls = driver_calls(log);
    let owner = &calls[0].0;
    let on = |thread: &String| -> Vec<&str> {
        calls
            .iter()
            .filter(|(tid, _)| tid == thread)
            .map(|(_, call)| call.as_str())
            .collect()
    };
    assert_eq!(
        on(owner),
        [
            "cuInit -> 0",
            "retain device=0",
            "set-current",
            "release device=0"
        ],
        "the GPU-owner thread's driver calls: {calls:?}"
    );
    let mut others: Vec<&String> = calls
        .iter()
        .map(|(tid, _)| tid)
        .filter(|t| *t != owner)
        .collect();
    others.dedup();
    assert!(
        others.len() <= 1,
        "CUDA used from several threads: {calls:?}"
    );
    for loader in others {
        let seen = on(loader);
        assert!(
            seen.chunks(4).all(|load| load
                == [
                    "retain device=0",
                    "set-current",
                    "set-current",
                    "release device=0"
                ]),
            "the loader's driver calls: {calls:?}"
        );
    }
    assert_eq!(
        calls.last().map(|(tid, call)| (tid, call.as_str())),
        Some((owner, "release device=0")),
        "the context is released last, by the GPU-owner thread: {calls:?}"
    );
    assert!(
        calls.iter().all(|(tid, _)| tid != &format!("tid={pid}")),
        "CUDA used from the main thread: {calls:?}"
    );
}

/// With a GPU but an ONNX Runtime without CUDA (the CPU wheel, as in CI), `required` refuses
/// to start and names the CUDA execution provider; the context is still released on the
/// GPU-owner thread.
#[test]
fn required_mode_with_a_runtime_without_cuda_exits_1_and_releases_the_context() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let config = ConfigText {
        gpu_mode: "required".to_string(),
        ..ConfigText::new(&dir)
    };
    let (mut sidecar, log) = spawn_on_fake_driver(&dir, &config, &[]);
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    let message = sidecar.log();
    assert!(
        message.contains("sidecar.gpu.mode is \"required\" but no GPU can be used: the CUDA execution provider of ONNX Runtime is not usable on GPU 0"),
        "{message}"
    );
    assert_context_only_on_owner_and_loader(&log, sidecar.pid());
}

/// `auto` with a GPU but no CUDA provider: a warning, the context released at once, and the
/// model served on the CPU, which Ping, the log and the metrics say.
#[test]
fn auto_mode_with_a_runtime_without_cuda_serves_on_the_cpu_and_says_so() {
    let dir = TestDir::new();
    let model = dir.write_model("model.bin", 4096);
    let (mut sidecar, log) = spawn_on_fake_driver(&dir, &ConfigText::new(&dir), &[]);
    sidecar.wait_ready();
    let ping = Clients::connect(&sidecar.grpc_target())
        .ping(b"on the cpu")
        .unwrap();
    assert!(!ping.gpu_in_use, "{}", sidecar.log());
    assert_eq!(
        ping.model.location.enum_value(),
        Ok(ModelLocation::MODEL_LOCATION_HOST_MEMORY)
    );
    assert_eq!(ping.model.sha256, sha256_of(&model));
    assert!(
        sidecar.log().contains("using GPU 0: Fake CUDA Device, 80.00 GiB total, compute capability 9.0, driver supports CUDA 12.4"),
        "{}",
        sidecar.log()
    );
    assert!(
        sidecar
            .log()
            .contains("running the models on the CPU, in host memory"),
        "{}",
        sidecar.log()
    );
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_model_resident_bytes{location=\"host\"}"),
        4096.0
    );
    assert!(!scrape.has_family("gpu_sidecar_gpu_info"));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    assert_context_only_on_owner_and_loader(&log, sidecar.pid());
}

#[test]
fn a_model_larger_than_free_device_memory_exits_1_before_reading_it() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let config = ConfigText {
        gpu_mode: "required".to_string(),
        ..ConfigText::new(&dir)
    };
    let (mut sidecar, log) =
        spawn_on_fake_driver(&dir, &config, &[("FAKE_CUDA_FREE_BYTES", "1000")]);
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    assert!(
        sidecar
            .log()
            .contains("needs 4.00 KiB but GPU 0 has only 1000 B free"),
        "{}",
        sidecar.log()
    );
    let calls: Vec<String> = driver_calls(&log)
        .into_iter()
        .map(|(_, call)| call)
        .collect();
    assert!(!calls.iter().any(|c| c.starts_with("alloc")), "{calls:?}");
    assert_eq!(
        calls.last().map(String::as_str),
        Some("release device=0"),
        "context not released"
    );
    assert_eq!(
        dir.entries(),
        [
            "fake-driver",
            "fake-driver.log",
            "model.bin",
            "sidecar.toml"
        ]
    );
}

#[test]
fn a_device_ordinal_the_driver_lacks_exits_1() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 64);
    let text = ConfigText::new(&dir)
        .render()
        .replace("mode = \"auto\"", "mode = \"auto\"\ndevice = 2");
    let (lib_dir, _) = fake_driver(&dir);
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&text),
        &[("LD_LIBRARY_PATH", &lib_dir), ("FAKE_CUDA_DEVICES", "2")],
    );
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    assert!(
        sidecar
            .log()
            .contains("sidecar.gpu.device is 2 but the driver sees 2 device(s)"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn auto_mode_falls_back_to_the_host_when_the_driver_has_no_device() {
    for knob in [("FAKE_CUDA_DEVICES", "0"), ("FAKE_CUDA_INIT_ERROR", "100")] {
        let dir = TestDir::new();
        dir.write_model("model.bin", 64);
        let (mut sidecar, _) = spawn_on_fake_driver(&dir, &ConfigText::new(&dir), &[knob]);
        sidecar.wait_ready();
        assert!(
            sidecar.log().contains("running without a GPU"),
            "{knob:?}: {}",
            sidecar.log()
        );
        assert!(
            !Clients::connect(&sidecar.grpc_target())
                .ping(b"")
                .unwrap()
                .gpu_in_use
        );
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0);

        let required = ConfigText {
            gpu_mode: "required".to_string(),
            ..ConfigText::new(&dir)
        };
        fs::remove_dir_all(dir.path().join("fake-driver")).unwrap();
        let (mut sidecar, _) = spawn_on_fake_driver(&dir, &required, &[knob]);
        assert_eq!(
            sidecar.exit_code(PATIENCE),
            1,
            "{knob:?}: {}",
            sidecar.log()
        );
        assert!(
            sidecar.log().contains("no GPU can be used"),
            "{}",
            sidecar.log()
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU, its driver and ORT_DYLIB_PATH naming the onnxruntime-gpu wheel's libonnxruntime.so; run with `cargo test -- --ignored` on a GPU machine"]
fn required_mode_on_a_gpu_serves_the_model_from_device_memory() {
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
    // The CUDA execution provider computes what the CPU computed in process.
    let client = crate::inference::client(&sidecar.grpc_target());
    let expected = crate::inference::expected("affine");
    let response = client
        .model_infer_opt(
            &crate::inference::raw_request("model", "gpu", &expected.inputs),
            CallOption::default().timeout(PATIENCE),
        )
        .unwrap();
    crate::inference::assert_outputs(&response, &expected.outputs);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    let log = sidecar.log();
    assert!(
        log.contains("model session(s) and released the context of GPU"),
        "{log}"
    );
    println!("{log}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with `cargo test -- --ignored` on a GPU machine"]
fn a_model_larger_than_free_device_memory_exits_1() {
    let dir = TestDir::new();
    // A sparse file larger than any GPU's memory: refused from its size, before reading.
    let model = dir.path().join("huge.bin");
    let file = std::fs::File::create(&model).unwrap();
    file.set_len(1 << 40).unwrap();
    let config = ConfigText {
        gpu_mode: "required".to_string(),
        model: "huge.bin".to_string(),
        ..ConfigText::new(&dir)
    };
    let mut sidecar = Sidecar::spawn(&dir.write_config(&config.render()), &[]);
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    let log = sidecar.log();
    assert!(log.contains("needs 1.00 TiB but GPU 0 has only"), "{log}");
    assert_eq!(dir.entries(), ["huge.bin", "sidecar.toml"], "left behind");
}

/// A load on request that does not fit in the device's free memory is refused before the
/// file is read, with RESOURCE_EXHAUSTED naming what it needs and what is free; the sidecar
/// serves on, READY.
#[test]
fn a_load_on_request_larger_than_free_device_memory_is_refused_and_the_sidecar_serves_on() {
    use gpu_sidecar::proto::grpc_service::RepositoryModelLoadRequest;

    let dir = TestDir::new();
    let big = dir.path().join("models").join("big").join("1");
    fs::create_dir_all(&big).unwrap();
    fs::write(big.join("model.onnx"), vec![0u8; 4096]).unwrap();
    let config = format!(
        "[sidecar]\nrepository = \"models\"\nrepository-control = \"explicit\"\nstartup-models = []\n\
         [sidecar.rpc]\nendpoint = \"unix:{}\"\n[sidecar.health]\nport = 0\n[sidecar.log]\nlevel = \"debug\"\n",
        dir.socket().display()
    );
    let (lib_dir, log) = fake_driver(&dir);
    let log_path = log.to_str().unwrap().to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config),
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_LOG", log_path.as_str()),
            ("FAKE_CUDA_FREE_BYTES", "1000"),
        ],
    );
    sidecar.wait_ready();
    let client = crate::inference::client(&sidecar.grpc_target());
    let refused = client.repository_model_load_opt(
        &RepositoryModelLoadRequest {
            model_name: "big".into(),
            ..Default::default()
        },
        CallOption::default().timeout(PATIENCE),
    );
    let (code, message) = crate::inference::status_of(refused);
    assert_eq!(code, grpcio::RpcStatusCode::RESOURCE_EXHAUSTED, "{message}");
    assert!(
        message.contains("needs 4.00 KiB but GPU 0 has only 1000 B free"),
        "{message}"
    );
    assert_eq!(
        crate::util::http(sidecar.health_addr(), "GET", "/health/ready")
            .unwrap()
            .0,
        200
    );
    assert!(
        sidecar.log().contains("needs 4.00 KiB"),
        "{}",
        sidecar.log()
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    assert_context_only_on_owner_and_loader(&log, sidecar.pid());
}

/// A model's CUDA provider options are read, shown by `--check-config` and in ModelConfig's
/// parameters, and handed to the provider (here, on the fake driver with a runtime without
/// CUDA, `auto` falls back to the CPU, and the model is served with them set all the same).
#[test]
fn a_models_cuda_options_are_shown_and_the_model_served() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let mut config = ConfigText::new(&dir);
    config.extra = String::new();
    let text = config.render().replace(
        "uri = \"model.bin\"",
        "uri = \"model.bin\"\ngpu-memory-limit = \"2 GiB\"\narena-extend-strategy = \"next-power-of-two\"\ncudnn-conv-algo-search = \"heuristic\"",
    );
    let path = dir.write_config(&text);
    let mut check = Sidecar::spawn_args(&["--check-config", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(check.exit_code(PATIENCE), 0, "{}", check.log());
    let shown = check.stdout();
    for line in [
        "sidecar.model.gpu-memory-limit = \"2.0 GiB\"",
        "sidecar.model.arena-extend-strategy = \"next-power-of-two\"",
        "sidecar.model.cudnn-conv-algo-search = \"heuristic\"",
    ] {
        assert!(shown.contains(line), "{line} missing from:\n{shown}");
    }
    let (lib_dir, _) = fake_driver(&dir);
    let mut sidecar = Sidecar::spawn(&path, &[("LD_LIBRARY_PATH", lib_dir.as_str())]);
    sidecar.wait_ready();
    let config = crate::inference::client(&sidecar.grpc_target())
        .model_config_opt(
            &gpu_sidecar::proto::grpc_service::ModelConfigRequest {
                name: "model".into(),
                ..Default::default()
            },
            CallOption::default().timeout(PATIENCE),
        )
        .unwrap()
        .config;
    for (key, value) in [
        ("cuda.gpu-memory-limit", "2.0 GiB"),
        ("cuda.arena-extend-strategy", "next-power-of-two"),
        ("cuda.cudnn-conv-algo-search", "heuristic"),
    ] {
        assert_eq!(config.parameters[key].string_value, value, "{key}");
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}
