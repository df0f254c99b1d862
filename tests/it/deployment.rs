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

//! The deployment files users copy: the README's Kubernetes manifests (valid YAML, a config
//! this binary accepts, ports, paths, volumes and grace periods that agree) and the sample
//! systemd unit (consistent with the sample config's grace period).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use gpu_sidecar::rpc::SIDECAR_SERVICE_NAME;
use yaml_rust2::{Yaml, YamlLoader};

use crate::util::{binary, TestDir};

const README: &str = include_str!("../../README.md");
const UNIT: &str = include_str!("../../bin/gpu-sidecar.service");
/// What the sidecar needs after the grace period: cancelling calls and releasing the GPU.
const STOP_MARGIN_SECONDS: i64 = 15;

/// The settings of a config file as `--check-config` prints them (`key = value  # note`).
fn effective_config(path: &Path) -> BTreeMap<String, String> {
    let output = Command::new(binary())
        .args(["--check-config", "-c"])
        .arg(path)
        .env("ORT_DYLIB_PATH", crate::util::runtime_library())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} is not a valid config: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The grace period in whole seconds, from `--check-config`'s `"30s"  # 30000 ms`.
fn grace_seconds(settings: &BTreeMap<String, String>) -> i64 {
    let value = &settings["sidecar.shutdown.grace-period"];
    let ms: i64 = value
        .split("# ")
        .nth(1)
        .and_then(|note| note.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("grace period {value:?}"));
    (ms + 999) / 1000
}

fn unquoted(value: &str) -> &str {
    value.split("  #").next().unwrap().trim().trim_matches('"')
}

/// Every ```yaml block of the README, parsed.
fn readme_yaml_blocks() -> Vec<Vec<Yaml>> {
    let mut blocks = Vec::new();
    let mut rest = README;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let end = body.find("\n```").expect("unclosed yaml block");
        let documents = YamlLoader::load_from_str(&body[..end])
            .unwrap_or_else(|e| panic!("README yaml block {} is invalid: {e}", blocks.len()));
        blocks.push(documents);
        rest = &body[end..];
    }
    blocks
}

fn field<'a>(yaml: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(yaml, |node, key| &node[*key])
}

fn text<'a>(yaml: &'a Yaml, path: &[&str]) -> &'a str {
    field(yaml, path)
        .as_str()
        .unwrap_or_else(|| panic!("no string at {path:?}"))
}

fn list<'a>(yaml: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    field(yaml, path)
        .as_vec()
        .unwrap_or_else(|| panic!("no list at {path:?}"))
}

fn named<'a>(items: &'a [Yaml], name: &str) -> &'a Yaml {
    items
        .iter()
        .find(|item| item["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("nothing named {name}"))
}

/// The mount path of volume `volume` in `container`.
fn mount_path<'a>(container: &'a Yaml, volume: &str) -> &'a str {
    text(
        named(list(container, &["volumeMounts"]), volume),
        &["mountPath"],
    )
}

#[test]
fn the_readme_kubernetes_manifests_are_valid_and_consistent() {
    let blocks = readme_yaml_blocks();
    assert_eq!(
        blocks.len(),
        2,
        "expected the pod template and the gRPC probe blocks"
    );
    let manifests = &blocks[0];
    let config_map = manifests
        .iter()
        .find(|doc| doc["kind"].as_str() == Some("ConfigMap"))
        .expect("a ConfigMap");
    let pod = manifests
        .iter()
        .find(|doc| doc["kind"].as_str() == Some("Pod"))
        .expect("a Pod");

    // The config in the ConfigMap is one this binary accepts. The model and the runtime it
    // names are the pod's: --check-config, which also checks that both are there, reads this
    // machine's in their place.
    let dir = TestDir::new();
    let config_path = dir.path().join("sidecar.toml");
    let model = dir.write_model("model.onnx", 16);
    let pod_config = text(config_map, &["data", "sidecar.toml"]);
    for pod_path in [
        "\"/models/model.onnx\"",
        "\"/opt/onnxruntime/lib/libonnxruntime.so\"",
    ] {
        assert!(
            pod_config.contains(pod_path),
            "{pod_path} not in {pod_config}"
        );
    }
    let local_config = pod_config
        .replace(
            "\"/models/model.onnx\"",
            &format!("{:?}", model.display().to_string()),
        )
        .replace(
            "\"/opt/onnxruntime/lib/libonnxruntime.so\"",
            &format!("{:?}", crate::util::runtime_library().display().to_string()),
        );
    fs::write(&config_path, local_config).unwrap();
    let settings = effective_config(&config_path);
    let endpoint = unquoted(&settings["sidecar.rpc.endpoint"]);
    let socket = endpoint.strip_prefix("unix:").expect("a unix endpoint");
    let socket_folder = Path::new(socket).parent().unwrap().to_str().unwrap();
    let health_port: i64 = settings["sidecar.health.port"].parse().unwrap();
    assert_eq!(unquoted(&settings["sidecar.health.host"]), "0.0.0.0");

    let spec = &pod["spec"];
    let sidecar = named(list(spec, &["initContainers"]), "gpu-sidecar");
    assert_eq!(
        text(sidecar, &["restartPolicy"]),
        "Always",
        "a native sidecar"
    );
    let main = named(list(spec, &["containers"]), "flink-main-container");

    // Grace periods: the pod's covers the sidecar's plus the wind-down.
    let termination = field(spec, &["terminationGracePeriodSeconds"])
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination >= grace_seconds(&settings) + STOP_MARGIN_SECONDS,
        "terminationGracePeriodSeconds {termination} is shorter than the grace period + {STOP_MARGIN_SECONDS} s"
    );

    // Probes: startup and readiness on /health, liveness on /health/live, all on the
    // health port.
    let health = named(list(sidecar, &["ports"]), "health");
    assert_eq!(health["containerPort"].as_i64(), Some(health_port));
    for (probe, path) in [
        ("startupProbe", "/health"),
        ("readinessProbe", "/health"),
        ("livenessProbe", "/health/live"),
    ] {
        assert_eq!(text(sidecar, &[probe, "httpGet", "path"]), path, "{probe}");
        assert_eq!(
            text(sidecar, &[probe, "httpGet", "port"]),
            "health",
            "{probe}"
        );
    }
    // The sidecar holds the node's GPUs, and serves on each of them; the TaskManager
    // requests none.
    let gpus = sidecar["resources"]["limits"]["nvidia.com/gpu"]
        .as_i64()
        .expect("the sidecar requests GPUs");
    assert!(gpus >= 1, "{gpus} GPUs");
    if gpus > 1 {
        assert_eq!(unquoted(&settings["sidecar.gpu.devices"]), "all");
    }
    assert!(
        main["resources"]["limits"]["nvidia.com/gpu"].is_badvalue(),
        "the TaskManager requests no GPU: the sidecar holds them"
    );

    // The socket's folder is an emptyDir that both containers mount there.
    let socket_volume = named(list(spec, &["volumes"]), "sidecar-socket");
    assert!(
        !socket_volume["emptyDir"].is_badvalue(),
        "the socket volume is not an emptyDir"
    );
    assert_eq!(mount_path(sidecar, "sidecar-socket"), socket_folder);
    assert_eq!(mount_path(main, "sidecar-socket"), socket_folder);

    // The config file the sidecar is told to read comes from the ConfigMap's mount.
    let args: Vec<&str> = list(sidecar, &["args"])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args[0], "-c");
    let config_volume = named(list(spec, &["volumes"]), "sidecar-config");
    assert_eq!(
        text(config_volume, &["configMap", "name"]),
        text(config_map, &["metadata", "name"])
    );
    assert_eq!(
        Path::new(args[1]),
        Path::new(mount_path(sidecar, "sidecar-config")).join("sidecar.toml")
    );

    // Metrics are scraped from the health port.
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(health_port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    // The gRPC alternative asks the standard health service about the Sidecar service.
    let alternative = &blocks[1][0];
    let grpc_port = named(list(alternative, &["ports"]), "grpc")["containerPort"]
        .as_i64()
        .unwrap();
    for probe in ["startupProbe", "readinessProbe"] {
        assert_eq!(alternative[probe]["grpc"]["port"].as_i64(), Some(grpc_port));
        assert_eq!(
            text(alternative, &[probe, "grpc", "service"]),
            SIDECAR_SERVICE_NAME
        );
    }
    assert_eq!(
        text(alternative, &["livenessProbe", "httpGet", "path"]),
        "/health/live"
    );
}

/// The unit's `[Service]` settings.
fn unit_service_settings() -> BTreeMap<String, String> {
    let mut section = "";
    let mut settings = BTreeMap::new();
    for line in UNIT.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            assert!(line.ends_with(']'), "bad section line {line:?}");
            section = line;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad unit line {line:?}"));
        if section == "[Service]" {
            settings.insert(key.to_string(), value.to_string());
        }
    }
    settings
}

#[test]
fn the_sample_systemd_unit_fits_the_sample_config() {
    let service = unit_service_settings();
    assert_eq!(service["Type"], "notify");
    assert_eq!(service["NotifyAccess"], "main");
    assert_eq!(service["Restart"], "on-failure");
    assert_eq!(service["RestartPreventExitStatus"], "2");
    assert_eq!(service["KillSignal"], "SIGTERM");
    let watchdog: u64 = service["WatchdogSec"].parse().unwrap();
    assert!(watchdog >= 2, "WatchdogSec {watchdog}");
    let exec: Vec<&str> = service["ExecStart"].split_whitespace().collect();
    assert!(
        exec[0].ends_with("/gpu-sidecar") && exec[1] == "-c",
        "{exec:?}"
    );

    // The stop timeout is the sample config's grace period plus the wind-down.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sidecar.toml");
    let grace = grace_seconds(&effective_config(&sample));
    let stop_timeout: i64 = service["TimeoutStopSec"].parse().unwrap();
    assert_eq!(stop_timeout, grace + STOP_MARGIN_SECONDS);
}
