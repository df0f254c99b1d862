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

//! The command line and configuration errors: exit code 2 naming the key, before anything
//! binds; --help, --version, --check-config.

use std::fs;
use std::time::Duration;

use crate::util::{ConfigText, Sidecar, TestDir};

const QUICK: Duration = Duration::from_secs(20);

/// Runs the binary on `config` and returns (exit code, stderr).
fn run_config(dir: &TestDir, config: &str) -> (i32, String) {
    let path = dir.write_config(config);
    let mut sidecar = Sidecar::spawn(&path, &[]);
    let code = sidecar.exit_code(QUICK);
    (code, sidecar.log())
}

#[test]
fn malformed_configs_exit_2_naming_the_key_and_bind_nothing() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 16);
    let valid = ConfigText::new(&dir).render();
    let socket_line = format!("endpoint = \"unix:{}\"", dir.socket().display());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            valid.replace("port = 0", "port = 0\nprot = 1"),
            "sidecar.health.prot",
        ),
        (
            "unknown table",
            format!("{valid}\n[sidecar.cache]\nsize = 1\n"),
            "sidecar.cache",
        ),
        (
            "mistyped required key",
            valid.replace("endpoint =", "endpont ="),
            "`sidecar.rpc.endpont`: TOML parse error",
        ),
        (
            "wrong type",
            valid.replace("port = 0", "port = \"zero\""),
            "sidecar.health.port",
        ),
        (
            "port out of range",
            valid.replace("port = 0", "port = 65536"),
            "sidecar.health.port",
        ),
        (
            "missing key",
            valid.replace("port = 0", ""),
            "sidecar.health.port is required",
        ),
        (
            "empty file",
            String::new(),
            "sidecar.rpc.endpoint is required",
        ),
        (
            "no model",
            format!("[sidecar.rpc]\n{socket_line}\n"),
            "sidecar.model.uri is required",
        ),
        (
            "batching off the scale",
            format!("{valid}\n[sidecar.batching]\nmax-queue-size = 0\n"),
            "sidecar.batching.max-queue-size",
        ),
        (
            "relative socket",
            valid.replace(&socket_line, "endpoint = \"unix:relative.sock\""),
            "sidecar.rpc.endpoint",
        ),
        (
            "no port",
            valid.replace(&socket_line, "endpoint = \"localhost\""),
            "sidecar.rpc.endpoint",
        ),
        (
            "bad IPv6",
            valid.replace(&socket_line, "endpoint = \"::1:5000\""),
            "sidecar.rpc.endpoint",
        ),
        (
            "remote model",
            valid.replace("uri = \"model.bin\"", "uri = \"s3://bucket/model\""),
            "sidecar.model.uri",
        ),
        (
            "bad duration",
            valid.replace("grace-period = \"10 s\"", "grace-period = \"soon\""),
            "sidecar.shutdown.grace-period",
        ),
        (
            "zero duration",
            valid.replace("grace-period = \"10 s\"", "grace-period = \"0 s\""),
            "sidecar.shutdown.grace-period",
        ),
        (
            "bad gpu mode",
            valid.replace("mode = \"auto\"", "mode = \"sometimes\""),
            "sidecar.gpu.mode",
        ),
        (
            "negative device",
            valid.replace("mode = \"auto\"", "mode = \"auto\"\ndevice = -1"),
            "sidecar.gpu.device",
        ),
        (
            "bad log level",
            valid.replace("level = \"debug\"", "level = \"chatty\""),
            "sidecar.log.level",
        ),
        (
            "bad socket mode",
            valid.replace(
                &socket_line,
                &format!("{socket_line}\nsocket-mode = \"rw\""),
            ),
            "sidecar.rpc.socket-mode",
        ),
        (
            "health host name",
            valid.replace("port = 0", "port = 0\nhost = \"example\""),
            "sidecar.health.host",
        ),
        (
            "not TOML",
            "[sidecar.rpc\nendpoint=".to_string(),
            "TOML parse error",
        ),
    ];
    for (what, config, key) in cases {
        let (code, log) = run_config(&dir, &config);
        assert_eq!(code, 2, "{what}: expected exit 2; log:\n{log}");
        assert!(
            log.contains(key),
            "{what}: message should name {key:?}; got:\n{log}"
        );
        assert_eq!(
            dir.entries(),
            ["model.bin", "sidecar.toml"],
            "{what}: something was left behind"
        );
    }
}

#[test]
fn missing_config_file_exits_2() {
    let dir = TestDir::new();
    let missing = dir.path().join("absent.toml");
    let mut sidecar = Sidecar::spawn(&missing, &[]);
    assert_eq!(sidecar.exit_code(QUICK), 2);
    assert!(sidecar.log().contains("absent.toml"), "{}", sidecar.log());
}

#[test]
fn usage_errors_exit_2() {
    for args in [&[][..], &["--bogus"][..], &["-c"][..]] {
        let mut sidecar = Sidecar::spawn_args(args, &[]);
        assert_eq!(
            sidecar.exit_code(QUICK),
            2,
            "args {args:?}: {}",
            sidecar.log()
        );
        assert!(
            sidecar.log().contains("error:"),
            "args {args:?}: {}",
            sidecar.log()
        );
    }
}

#[test]
fn help_and_version_exit_0() {
    let mut help = Sidecar::spawn_args(&["--help"], &[]);
    assert_eq!(help.exit_code(QUICK), 0);
    assert!(help.stdout().contains("--config"), "{}", help.stdout());
    assert!(
        help.stdout().contains("--check-config"),
        "{}",
        help.stdout()
    );
    let mut version = Sidecar::spawn_args(&["--version"], &[]);
    assert_eq!(version.exit_code(QUICK), 0);
    assert_eq!(
        version.stdout().trim(),
        format!("gpu-sidecar {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_validates_without_starting() {
    let dir = TestDir::new();
    let path = dir.write_config(&ConfigText::new(&dir).render());
    // The model is a FIFO nobody writes to: opening it for reading would block.
    crate::util::mkfifo(&dir.path().join("model.bin"));
    let mut sidecar = Sidecar::spawn_args(&["--check-config", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(sidecar.exit_code(QUICK), 0, "{}", sidecar.log());
    let stdout = sidecar.stdout();
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("ONNX Runtime 1."), "{stdout}");
    assert!(
        stdout.contains("models (versions served at start): model [1]"),
        "{stdout}"
    );
    // Nothing was started: no socket, and the model was not opened.
    assert_eq!(dir.entries(), ["model.bin", "sidecar.toml"]);

    let bad = dir.write_config(
        &ConfigText::new(&dir)
            .render()
            .replace("port = 0", "port = -1"),
    );
    let mut sidecar = Sidecar::spawn_args(&["--check-config", "-c", bad.to_str().unwrap()], &[]);
    assert_eq!(sidecar.exit_code(QUICK), 2);
    assert!(
        sidecar.log().contains("sidecar.health.port"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn check_config_names_a_missing_model_or_runtime() {
    let dir = TestDir::new();
    let path = dir.write_config(&ConfigText::new(&dir).render());
    let check = |envs: &[(&str, &str)]| {
        let mut sidecar =
            Sidecar::spawn_args(&["--check-config", "-c", path.to_str().unwrap()], envs);
        assert_eq!(sidecar.exit_code(QUICK), 2, "{}", sidecar.log());
        assert_eq!(sidecar.stdout(), "", "nothing printed as valid");
        sidecar.log()
    };
    let log = check(&[]);
    assert!(
        log.contains("model file") && log.contains("model.bin does not exist (sidecar.model.uri)"),
        "{log}"
    );
    dir.write_model("model.bin", 16);
    let log = check(&[
        ("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"),
        ("LD_LIBRARY_PATH", "/nonexistent"),
    ]);
    assert!(
        log.contains("cannot load ONNX Runtime")
            && log.contains("ORT_DYLIB_PATH = /nonexistent/libonnxruntime.so"),
        "{log}"
    );
}

#[test]
fn the_runtime_beside_the_binary_is_found_without_any_setting() {
    // The release layout: bin/gpu-sidecar, lib/onnxruntime/libonnxruntime.so.
    let dir = TestDir::new();
    let bin = dir.path().join("bin");
    let lib = dir.path().join("lib/onnxruntime");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&lib).unwrap();
    let binary = bin.join("gpu-sidecar");
    if fs::hard_link(crate::util::binary(), &binary).is_err() {
        fs::copy(crate::util::binary(), &binary).unwrap();
    }
    fs::copy(
        fs::canonicalize(crate::util::runtime_library()).unwrap(),
        lib.join("libonnxruntime.so"),
    )
    .unwrap();
    dir.write_model("model.bin", 16);
    let path = dir.write_config(&ConfigText::new(&dir).render());
    let output = std::process::Command::new(&binary)
        .args(["--check-config", "-c"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "from the runtime beside the binary, {}",
            fs::canonicalize(&lib)
                .unwrap()
                .join("libonnxruntime.so")
                .display()
        )),
        "{stdout}"
    );
}

#[test]
fn sample_config_in_the_repository_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sidecar.toml");
    let mut sidecar = Sidecar::spawn_args(&["--check-config", "-c", sample], &[]);
    assert_eq!(sidecar.exit_code(QUICK), 0, "{}", sidecar.log());
}

#[test]
fn no_onnx_runtime_exits_1_naming_every_place_tried_and_how_to_install_it() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 16);
    let config = ConfigText {
        extra: String::new(),
        ..ConfigText::new(&dir)
    }
    .render()
    .replace(
        "uri = \"model.bin\"",
        "uri = \"model.bin\"\nruntime-library = \"/nonexistent/libonnxruntime.so\"",
    );
    let message = crate::util::expect_exit_1(
        &dir,
        &config,
        &[
            ("ORT_DYLIB_PATH", "/also/missing/libonnxruntime.so"),
            ("LD_LIBRARY_PATH", "/nonexistent"),
        ],
    );
    for needle in [
        "cannot load ONNX Runtime",
        "sidecar.model.runtime-library = /nonexistent/libonnxruntime.so",
        "ORT_DYLIB_PATH = /also/missing/libonnxruntime.so",
        "libonnxruntime.so on the loader's path",
        "`onnxruntime` PyPI wheel",
        "onnxruntime-gpu",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message}"
        );
    }
}

#[test]
fn a_model_with_an_input_that_cannot_be_served_exits_2_naming_it() {
    let dir = TestDir::new();
    dir.copy_fixture("bf16", "bf16.onnx");
    let config = ConfigText {
        model: "bf16.onnx".to_string(),
        ..ConfigText::new(&dir)
    }
    .render();
    let message = crate::util::expect_exit(2, &dir, &config, &[("CUDA_VISIBLE_DEVICES", "")]);
    assert!(
        message.contains("input \"x\" is BF16, which is not served yet (served: BOOL, UINT8"),
        "{message}"
    );
}

#[test]
fn a_file_that_is_no_onnx_model_exits_2() {
    let dir = TestDir::new();
    fs::write(dir.path().join("model.bin"), b"this is not a model").unwrap();
    let message = crate::util::expect_exit(2, &dir, &ConfigText::new(&dir).render(), &[]);
    assert!(
        message.contains("ONNX Runtime cannot load model"),
        "{message}"
    );
}
