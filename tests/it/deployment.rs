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
    let config_map = of_kind(manifests, "ConfigMap");
    let pod = of_kind(manifests, "Pod");
    // The model and the runtime it names are the pod's: --check-config, which also checks
    // that both are there, reads this machine's in their place.
    let dir = TestDir::new();
    let model = dir.write_model("model.onnx", 16);
    let health_port = check_pod_and_config(
        &dir,
        config_map,
        pod,
        &[
            ("\"/models/model.onnx\"", model),
            (
                "\"/opt/onnxruntime/lib/libonnxruntime.so\"",
                crate::util::runtime_library(),
            ),
        ],
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

/// The one document of `kind` among `documents`.
fn of_kind<'a>(documents: &'a [Yaml], kind: &str) -> &'a Yaml {
    documents
        .iter()
        .find(|doc| doc["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// Checks a pod (or pod template) that runs the sidecar beside the TaskManager against the
/// config in `config_map`, whose pod paths `local` replaces with this machine's (quoted as
/// in the TOML): the config is one this binary accepts; the sidecar is a native sidecar
/// holding the GPUs, probed on its health port; the socket's folder is an emptyDir both
/// containers mount; the grace periods fit. Returns the health port.
fn check_pod_and_config(
    dir: &TestDir,
    config_map: &Yaml,
    pod: &Yaml,
    local: &[(&str, std::path::PathBuf)],
) -> i64 {
    let config_path = dir.path().join("sidecar.toml");
    let mut local_config = text(config_map, &["data", "sidecar.toml"]).to_string();
    for (pod_path, here) in local {
        assert!(
            local_config.contains(pod_path),
            "{pod_path} not in {local_config}"
        );
        local_config = local_config.replace(pod_path, &format!("{:?}", here.display().to_string()));
    }
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

    // Probes: startup and readiness on /health (or /health/ready), liveness on
    // /health/live, all on the health port.
    let health = named(list(sidecar, &["ports"]), "health");
    assert_eq!(health["containerPort"].as_i64(), Some(health_port));
    for (probe, paths) in [
        ("startupProbe", ["/health", "/health/ready"]),
        ("readinessProbe", ["/health", "/health/ready"]),
        ("livenessProbe", ["/health/live", "/health/live"]),
    ] {
        let path = text(sidecar, &[probe, "httpGet", "path"]);
        assert!(paths.contains(&path), "{probe}: {path}");
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
    health_port
}

#[test]
fn the_flink_deployment_is_valid_against_its_schemas_and_consistent() {
    let root = crate::util::project_root();
    let folder = root.join("deploy/kubernetes");
    let mut files: Vec<_> = fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let documents: Vec<Yaml> = files
        .iter()
        .flat_map(|path| YamlLoader::load_from_str(&fs::read_to_string(path).unwrap()).unwrap())
        .collect();
    let deployment = of_kind(&documents, "FlinkDeployment");
    let pod = &deployment["spec"]["taskManager"]["podTemplate"];
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    fs::create_dir_all(repository.join("affine/1")).unwrap();
    fs::copy(
        crate::util::fixture_path("models/affine.onnx"),
        repository.join("affine/1/model.onnx"),
    )
    .unwrap();
    let health_port = check_pod_and_config(
        &dir,
        of_kind(&documents, "ConfigMap"),
        pod,
        &[
            ("\"/models\"", repository),
            (
                "\"/opt/gpu-sidecar/lib/onnxruntime/libonnxruntime.so\"",
                crate::util::runtime_library(),
            ),
        ],
    );
    // The PodMonitor scrapes the health port of the pods the template labels.
    let monitor = of_kind(&documents, "PodMonitor");
    for (label, value) in field(monitor, &["spec", "selector", "matchLabels"])
        .as_hash()
        .expect("matchLabels")
    {
        assert_eq!(
            pod["metadata"]["labels"][label.as_str().unwrap()].as_str(),
            value.as_str(),
            "the pod template lacks the label {label:?} the PodMonitor selects"
        );
    }
    // A read-only root file system leaves the sidecar a writable temp folder: its health
    // endpoint binds a socket there (std::env::temp_dir).
    let sidecar = named(list(&pod["spec"], &["initContainers"]), "gpu-sidecar");
    if sidecar["securityContext"]["readOnlyRootFilesystem"].as_bool() == Some(true) {
        let tmp = list(sidecar, &["volumeMounts"])
            .iter()
            .find(|mount| mount["mountPath"].as_str() == Some("/tmp"))
            .expect("a read-only root file system, and no volume at /tmp for the health socket");
        let volume = named(list(&pod["spec"], &["volumes"]), text(tmp, &["name"]));
        assert!(!volume["emptyDir"].is_badvalue(), "/tmp is not an emptyDir");
    }
    let endpoint = &list(monitor, &["spec", "podMetricsEndpoints"])[0];
    assert_eq!(text(endpoint, &["port"]), "health");
    assert_eq!(text(endpoint, &["path"]), "/metrics");
    assert_eq!(
        named(list(sidecar, &["ports"]), "health")["containerPort"].as_i64(),
        Some(health_port)
    );

    // Against the schemas of the tools that take them (bin/dev.sh clients installs them).
    let clients = root.join(".clients");
    let jar = clients.join(format!(
        "flink-kubernetes-operator-api-{OPERATOR_API_VERSION}.jar"
    ));
    assert!(
        jar.exists() && clients.join("bin/python").exists(),
        "this test needs the schemas: run `bin/dev.sh clients` (makes .clients/)"
    );
    let output = Command::new(clients.join("bin/python"))
        .arg(root.join("tests/deploy/kubernetes_schemas.py"))
        .arg(&jar)
        .args(&files)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.contains("kubernetes schemas: all valid"),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("FlinkDeployment scoring: valid against"),
        "{said}"
    );
    assert!(said.contains("a valid Pod of Kubernetes 1.30"), "{said}");
}

/// The Flink Kubernetes Operator API release whose CRD the schema check reads (bin/dev.sh
/// clients fetches it): the newest the Maven repository here serves. 1.15.0, the first
/// whose CRD lists Flink v2_3, is not there; the check says what that leaves unchecked.
const OPERATOR_API_VERSION: &str = "1.10.0";

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

/// The image recipe agrees with the manifests: it is not built here (these machines have no
/// container builder, nor a registry to pull its base image from), so this checks what a
/// build would put where the manifests look for it.
#[test]
fn the_containerfile_makes_what_the_manifests_expect() {
    let root = crate::util::project_root();
    let recipe = fs::read_to_string(root.join("deploy/container/Containerfile")).unwrap();
    let instruction = |name: &str| -> Vec<String> {
        recipe
            .lines()
            .filter_map(|line| line.strip_prefix(&format!("{name} ")))
            .map(str::to_string)
            .collect()
    };
    let manifest =
        fs::read_to_string(root.join("deploy/kubernetes/flink-deployment.yaml")).unwrap();
    let deployment = &YamlLoader::load_from_str(&manifest).unwrap()[0];
    let pod = &deployment["spec"]["taskManager"]["podTemplate"];
    let sidecar = named(list(&pod["spec"], &["initContainers"]), "gpu-sidecar");

    // The tag the manifest names is this release's, as is the recipe's default version.
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text(sidecar, &["image"]).ends_with(&format!("/gpu-sidecar:{version}")),
        "{}",
        text(sidecar, &["image"])
    );
    assert!(
        instruction("ARG").contains(&format!("VERSION={version}")),
        "{recipe}"
    );
    // Not root, and in the group the pod shares the socket with.
    let user = instruction("USER").pop().expect("a USER");
    let fs_group = pod["spec"]["securityContext"]["fsGroup"].as_i64().unwrap();
    assert_eq!(user, format!("{fs_group}:{fs_group}"));
    // The health port it exposes is the one the pod probes.
    let port = named(list(sidecar, &["ports"]), "health")["containerPort"]
        .as_i64()
        .unwrap();
    assert_eq!(instruction("EXPOSE"), vec![port.to_string()]);
    // It runs the binary of the tarball on the config the ConfigMap mounts, with the
    // runtime library where the tarball keeps it (lib/onnxruntime/, as bin/dev.sh dist
    // packs it) and the ConfigMap says.
    assert_eq!(
        instruction("ENTRYPOINT"),
        vec!["[\"/opt/gpu-sidecar/bin/gpu-sidecar\"]".to_string()]
    );
    let config = Path::new(mount_path(sidecar, "sidecar-config")).join("sidecar.toml");
    assert_eq!(
        instruction("CMD"),
        vec![format!("[\"-c\", \"{}\"]", config.display())]
    );
    let config_map =
        fs::read_to_string(root.join("deploy/kubernetes/gpu-sidecar-config.yaml")).unwrap();
    assert!(config_map.contains("\"/opt/gpu-sidecar/lib/onnxruntime/libonnxruntime.so\""));
    let dist = fs::read_to_string(root.join("bin/dev.sh")).unwrap();
    assert!(
        dist.contains("\"$stage/lib/onnxruntime/\""),
        "dist packs the runtime elsewhere"
    );
    assert!(recipe.contains("test -e /opt/gpu-sidecar/lib/onnxruntime/libonnxruntime.so"));

    // Where a container builder is there, the image is built for real.
    let builder = ["podman", "buildah"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_ok())
        .or_else(|| {
            Command::new("docker")
                .arg("info")
                .output()
                .ok()
                .filter(|output| output.status.success())
                .map(|_| "docker")
        });
    match builder {
        Some(tool) => {
            let output = Command::new(root.join("bin/dev.sh"))
                .args(["image", "gpu-sidecar:test"])
                .current_dir(root)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "bin/dev.sh image with {tool}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        None => eprintln!(
            "the image is not built: no container builder here (podman, buildah, or docker with its daemon)"
        ),
    }
}
