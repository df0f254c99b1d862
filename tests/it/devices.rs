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

//! Every GPU on the host, on the fake driver with several devices: one GPU-owner thread per
//! device, each retaining and releasing its own device's context; models placed on some
//! devices or all, several instances each; the memory check per device; and, with fail
//! points, a version's queue feeding whichever instance is free, on devices and on the CPU.

use std::collections::BTreeMap;

use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::model_config::model_instance_group::Kind;
use gpu_sidecar::proto::model_config::ModelInstanceGroup;

use crate::gpu::{driver_calls, fake_driver};
use crate::inference::{client, patient};
use crate::requests::{expected_rows, lookup_request, lookup_rows};
use crate::util::{expect_exit, ConfigText, Sidecar, TestDir, PATIENCE};

/// The lookup fixture's config, with `gpu` lines under `[sidecar.gpu]` and `model` lines
/// under `[sidecar.model]`.
pub(crate) fn lookup_config(dir: &TestDir, gpu: &str, model: &str) -> String {
    dir.copy_fixture("lookup", "lookup.onnx");
    let mut config = ConfigText::new(dir);
    config.model = "lookup.onnx".to_string();
    config
        .render()
        .replace("mode = \"auto\"", &format!("mode = \"auto\"\n{gpu}"))
        .replace(
            "uri = \"lookup.onnx\"",
            &format!("uri = \"lookup.onnx\"\n{model}"),
        )
}

/// The lookup model's instance groups, as ModelConfig shows them.
pub(crate) fn instance_groups(sidecar: &Sidecar) -> Vec<ModelInstanceGroup> {
    client(&sidecar.grpc_target())
        .model_config_opt(
            &ModelConfigRequest {
                name: "lookup".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap()
        .config
        .unwrap()
        .instance_group
}

/// The fake driver's calls by thread, in order, each thread keyed by its first call.
fn calls_by_thread(log: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let mut threads: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tid, call) in driver_calls(log) {
        threads.entry(tid).or_default().push(call);
    }
    threads
}

#[test]
fn every_device_gets_a_gpu_owner_thread_that_holds_its_context_alone() {
    let dir = TestDir::new();
    let text = lookup_config(&dir, "devices = \"all\"", "");
    let path = dir.write_config(&text);
    let (lib_dir, log) = fake_driver(&dir);
    let log_path = log.to_str().unwrap().to_string();
    let mut sidecar = Sidecar::spawn(
        &path,
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_LOG", log_path.as_str()),
            ("FAKE_CUDA_DEVICES", "4"),
        ],
    );
    sidecar.wait_ready();
    for device in 0..4 {
        let line = format!("(gpu-owner-{device}) using GPU {device}: Fake CUDA Device");
        assert!(sidecar.log().contains(&line), "{line}: {}", sidecar.log());
    }
    // Without a CUDA provider (the CPU wheel) each device's instance runs on the CPU, on
    // its device's thread: four instances of the model, every request answered.
    assert_eq!(
        instance_groups(&sidecar),
        [ModelInstanceGroup {
            name: "lookup_0".into(),
            kind: Kind::KIND_CPU.into(),
            count: 4,
            ..Default::default()
        }]
    );
    let client = client(&sidecar.grpc_target());
    let answers: Vec<_> = (0..16)
        .map(|i| {
            client
                .model_infer_async_opt(&lookup_request(&format!("r{i}"), &[i % 4]), patient())
                .unwrap()
        })
        .collect();
    for (i, answer) in answers.into_iter().enumerate() {
        let response = futures_executor::block_on(answer).unwrap();
        assert_eq!(lookup_rows(&response), expected_rows(&[i as i64 % 4]));
    }
    // Every execution ran on one of the four threads, each counted under its device.
    let scrape = crate::scrape::Scrape::fetch(sidecar.health_addr());
    let per_thread: f64 = (0..4)
        .map(|device| {
            scrape.get(&format!(
                "gpu_sidecar_thread_executions_total{{thread=\"gpu-owner-{device}\",device=\"{device}\"}}"
            ))
        })
        .sum();
    assert_eq!(
        per_thread,
        scrape.get("gpu_sidecar_inference_executions_total{model=\"lookup\",version=\"1\"}"),
        "{scrape:#?}"
    );
    for device in 0..4 {
        assert!(
            sidecar
                .log()
                .contains(&format!("(gpu-owner-{device}) released the GPU context")),
            "{}",
            sidecar.log()
        );
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    // Each device's context: retained, made current and released by one thread of its own,
    // which touches no other device; the loader retains each for a while; the main thread
    // never calls the driver.
    let threads = calls_by_thread(&log);
    assert!(
        !threads.contains_key(&format!("tid={}", sidecar.pid())),
        "{threads:?}"
    );
    for device in 0..4 {
        let retain = format!("retain device={device}");
        let release = format!("release device={device}");
        let owners: Vec<&Vec<String>> = threads
            .values()
            .filter(|calls| calls.iter().filter(|c| c.starts_with("retain")).count() == 1)
            .filter(|calls| calls.contains(&retain))
            .collect();
        assert_eq!(owners.len(), 1, "device {device}: {threads:?}");
        let calls: Vec<&str> = owners[0]
            .iter()
            .map(String::as_str)
            .filter(|c| *c != "cuInit -> 0")
            .collect();
        assert_eq!(
            calls,
            [retain.as_str(), "set-current", release.as_str()],
            "device {device}'s GPU-owner thread: {threads:?}"
        );
    }
}

#[test]
fn a_model_runs_on_its_devices_only_and_check_config_lists_the_placement() {
    let dir = TestDir::new();
    let path = dir.write_config(&lookup_config(
        &dir,
        "devices = [0, 1, 2]",
        "devices = [2]\ninstances = 2",
    ));
    let mut check = Sidecar::spawn_args(&["--check-config", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(check.exit_code(PATIENCE), 0, "{}", check.log());
    for line in [
        "sidecar.gpu.devices = [0, 1, 2]",
        "sidecar.model.devices = [2]",
        "sidecar.model.instances = 2",
    ] {
        assert!(check.stdout().contains(line), "{line}: {}", check.stdout());
    }
    let (lib_dir, _) = fake_driver(&dir);
    let mut sidecar = Sidecar::spawn(
        &path,
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_DEVICES", "4"),
        ],
    );
    sidecar.wait_ready();
    let log = sidecar.log();
    let adopted = |lane: &str| {
        log.lines()
            .filter(|line| line.contains(&format!("({lane}) model \"lookup\" version 1 adopted")))
            .count()
    };
    assert_eq!(adopted("gpu-owner-2"), 2, "{log}");
    assert_eq!(adopted("gpu-owner-0") + adopted("gpu-owner-1"), 0, "{log}");
    assert!(
        !log.contains("gpu-owner-3"),
        "device 3 is not served: {log}"
    );
    assert_eq!(instance_groups(&sidecar)[0].count, 2);
    let response = client(&sidecar.grpc_target())
        .model_infer_opt(&lookup_request("one", &[3]), patient())
        .unwrap();
    assert_eq!(lookup_rows(&response), expected_rows(&[3]));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn devices_a_sidecar_cannot_serve_on_are_refused_with_the_key_to_change() {
    // A model's device outside sidecar.gpu.devices: a config error, before anything starts.
    let dir = TestDir::new();
    let text = lookup_config(&dir, "devices = [0, 1]", "devices = [3]");
    let log = expect_exit(2, &dir, &text, &[]);
    assert!(
        log.contains("sidecar.model.devices")
            && log.contains("names device 3, which the sidecar does not serve on (sidecar.gpu.devices = [0, 1])"),
        "{log}"
    );
    // device and devices both set.
    let text = lookup_config(&dir, "device = 0\ndevices = [0]", "");
    let log = expect_exit(2, &dir, &text, &[]);
    assert!(
        log.contains("sidecar.gpu.devices") && log.contains("and sidecar.gpu.device are both set"),
        "{log}"
    );
    // With "all", the driver decides: a model's device beyond it cannot be served (exit 2);
    // a listed device the driver lacks stops the start (exit 1).
    let (lib_dir, _) = fake_driver(&dir);
    let envs = [
        ("LD_LIBRARY_PATH", lib_dir.as_str()),
        ("FAKE_CUDA_DEVICES", "2"),
    ];
    let text = lookup_config(&dir, "devices = \"all\"", "devices = [5]");
    let log = expect_exit(2, &dir, &text, &envs);
    assert!(
        log.contains(
            "model \"lookup\" names device 5 in its devices, but the sidecar serves on [0, 1]"
        ),
        "{log}"
    );
    let text = lookup_config(&dir, "devices = [0, 3]", "");
    let log = expect_exit(1, &dir, &text, &envs);
    assert!(
        log.contains("sidecar.gpu.devices lists 3 but the driver sees 2 device(s)"),
        "{log}"
    );
}

#[test]
fn the_free_memory_check_runs_on_each_device_of_the_model() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let text = ConfigText::new(&dir)
        .render()
        .replace("mode = \"auto\"", "mode = \"auto\"\ndevices = \"all\"");
    let config_path = dir.write_config(&text);
    let (lib_dir, _) = fake_driver(&dir);
    let mut sidecar = Sidecar::spawn(
        &config_path,
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_DEVICES", "2"),
            ("FAKE_CUDA_FREE_BYTES_1", "1000"),
        ],
    );
    assert_eq!(sidecar.exit_code(PATIENCE), 1, "{}", sidecar.log());
    assert!(
        sidecar
            .log()
            .contains("needs 4.00 KiB but GPU 1 has only 1000 B free"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn the_readme_example_of_several_gpus_is_a_valid_config() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("### Every GPU on the host")
        .expect("the README's section")..];
    let start = section.find("```toml\n").expect("its example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("\n```").unwrap()];
    let dir = TestDir::new();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("embedder/1")).unwrap();
    dir.copy_fixture("lookup", "models/embedder/1/model.onnx");
    dir.copy_fixture("lookup", "models/fraud.onnx");
    let text = format!(
        "[sidecar.rpc]\nendpoint = \"unix:{}\"\n[sidecar.health]\nport = 0\n{example}\n",
        dir.socket().display()
    );
    let path = dir.write_config(&text);
    let mut check = Sidecar::spawn_args(&["--check-config", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(check.exit_code(PATIENCE), 0, "{}", check.log());
    for line in [
        "sidecar.gpu.devices = \"all\"",
        "sidecar.models[1].devices = [2, 3]",
        "sidecar.models[1].instances = 1",
        "sidecar.models[0].instances = 1",
    ] {
        assert!(check.stdout().contains(line), "{line}: {}", check.stdout());
    }
}

/// Each device's utilisation, as NVML reports it (the fake NVML: 40% on device 0, 50% on
/// device 1, found by the PCI bus id the fake driver gives), reaches the metrics.
#[test]
fn each_devices_utilisation_from_nvml_is_a_metric() {
    let dir = TestDir::new();
    let text = lookup_config(&dir, "devices = \"all\"", "");
    let path = dir.write_config(&text);
    let (lib_dir, _log) = fake_driver(&dir);
    let mut sidecar = Sidecar::spawn(
        &path,
        &[
            ("LD_LIBRARY_PATH", lib_dir.as_str()),
            ("FAKE_CUDA_DEVICES", "2"),
        ],
    );
    sidecar.wait_ready();
    let deadline = std::time::Instant::now() + PATIENCE;
    let wanted = [
        "gpu_sidecar_gpu_utilization_ratio{ordinal=\"0\"} 0.4",
        "gpu_sidecar_gpu_utilization_ratio{ordinal=\"1\"} 0.5",
    ];
    let mut metrics = String::new();
    while std::time::Instant::now() < deadline {
        metrics = crate::util::http(sidecar.health_addr(), "GET", "/metrics")
            .expect("metrics")
            .1;
        if wanted.iter().all(|line| metrics.contains(line)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "{wanted:?} not in the metrics within {PATIENCE:?}:\n{metrics}\n{}",
        sidecar.log()
    );
}
