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

//! Several models and versions: `[[sidecar.models]]` and a repository in Triton's layout;
//! per-model queues served in turn, statistics and metrics; a broken version. The helpers
//! here serve [`crate::swap`] and [`crate::repository_control`] too.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use futures_util::StreamExt;
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use grpcio::RpcStatusCode;

use crate::inference::{
    assert_outputs, client, expected, outputs, patient, raw_request, slow_request, status_of,
    Expected,
};
use crate::scrape::Scrape;
use crate::util::{
    call_option, fixture_path, health_request, http, Clients, Sidecar, TestDir, PATIENCE,
};
use gpu_sidecar::proto::health::health_check_response::ServingStatus;

/// A config serving what `sidecar` says (lines of the `[sidecar]` table), on a socket in `dir`.
pub(crate) fn config_text(dir: &TestDir, sidecar: &str, tables: &str) -> String {
    format!(
        r#"
[sidecar]
{sidecar}

[sidecar.rpc]
endpoint = "unix:{}"

[sidecar.health]
port = 0

[sidecar.shutdown]
grace-period = "10 s"

[sidecar.log]
level = "debug"
{tables}
"#,
        dir.socket().display()
    )
}

/// Spawns a sidecar (no GPU) on `config_text(dir, sidecar, tables)` and waits for READY.
pub(crate) fn serve(dir: &TestDir, sidecar: &str, tables: &str) -> Sidecar {
    let path = dir.write_config(&config_text(dir, sidecar, tables));
    let mut sidecar = Sidecar::spawn(&path, &[("CUDA_VISIBLE_DEVICES", "")]);
    sidecar.wait_ready();
    sidecar
}

/// A sidecar on the repository `dir/models` (CPU only), with `sidecar` lines in `[sidecar]`
/// and `FAILPOINTS` set to `failpoints`, READY.
#[cfg(feature = "failpoints")]
pub(crate) fn repository_sidecar(dir: &TestDir, sidecar: &str, failpoints: &str) -> Sidecar {
    let path = dir.write_config(&config_text(
        dir,
        &format!("repository = \"models\"\n{sidecar}"),
        "",
    ));
    let mut sidecar = Sidecar::spawn(
        &path,
        &[("CUDA_VISIBLE_DEVICES", ""), ("FAILPOINTS", failpoints)],
    );
    sidecar.wait_ready();
    sidecar
}

/// Publishes the fixture `fixture` as `version` of `model` in the repository `repository`
/// as a careful operator does: written in a hidden folder, then renamed into place.
pub(crate) fn publish(repository: &Path, model: &str, version: u64, fixture: &str) {
    let folder = repository.join(model);
    let staging = folder.join(format!(".{version}.partial"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(
        fixture_path(&format!("models/{fixture}.onnx")),
        staging.join("model.onnx"),
    )
    .unwrap();
    std::fs::rename(&staging, folder.join(version.to_string())).unwrap();
}

/// The repository's index: (name, version, state, reason) of each line.
pub(crate) fn index(
    client: &GrpcInferenceServiceClient,
    ready: bool,
) -> Vec<(String, String, String, String)> {
    client
        .repository_index_opt(
            &RepositoryIndexRequest {
                ready,
                ..Default::default()
            },
            patient(),
        )
        .unwrap()
        .models
        .into_iter()
        .map(|m| (m.name, m.version, m.state, m.reason))
        .collect()
}

/// The versions of `model` that the index says are READY.
pub(crate) fn ready_versions(client: &GrpcInferenceServiceClient, model: &str) -> Vec<String> {
    index(client, true)
        .into_iter()
        .filter(|(name, ..)| name == model)
        .map(|(_, version, ..)| version)
        .collect()
}

/// Polls `condition` until it holds; panics with `what` and the log after PATIENCE.
pub(crate) fn wait_until(sidecar: &Sidecar, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}; log:\n{}",
            sidecar.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `RepositoryModelLoad` of `name`.
pub(crate) fn load(
    client: &GrpcInferenceServiceClient,
    name: &str,
) -> grpcio::Result<RepositoryModelLoadResponse> {
    client.repository_model_load_opt(
        &RepositoryModelLoadRequest {
            model_name: name.into(),
            ..Default::default()
        },
        patient(),
    )
}

/// `RepositoryModelUnload` of `name`.
pub(crate) fn unload(
    client: &GrpcInferenceServiceClient,
    name: &str,
) -> grpcio::Result<RepositoryModelUnloadResponse> {
    client.repository_model_unload_opt(
        &RepositoryModelUnloadRequest {
            model_name: name.into(),
            ..Default::default()
        },
        patient(),
    )
}

/// The HTTP status of `/health/ready`.
pub(crate) fn ready_status(sidecar: &Sidecar) -> u16 {
    http(sidecar.health_addr(), "GET", "/health/ready")
        .unwrap()
        .0
}

/// Asserts READY by `ServerReady` and `/health/ready`.
pub(crate) fn assert_ready(sidecar: &Sidecar, client: &GrpcInferenceServiceClient) {
    let ready = client
        .server_ready_opt(&Default::default(), patient())
        .unwrap()
        .ready;
    assert!(ready, "ServerReady false; log:\n{}", sidecar.log());
    assert_eq!(ready_status(sidecar), 200, "{}", sidecar.log());
}

pub(crate) fn model_ready(client: &GrpcInferenceServiceClient, name: &str, version: &str) -> bool {
    client
        .model_ready_opt(
            &ModelReadyRequest {
                name: name.into(),
                version: version.into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap()
        .ready
}

/// One row of the affine fixtures' inputs, for `model` (`version` empty: the newest).
pub(crate) fn affine_row(model: &str, version: &str, id: &str, row: usize) -> ModelInferRequest {
    let inputs = expected("affine").inputs;
    let (name, features) = &inputs[0];
    let mut request = raw_request(model, id, &[(name.clone(), features.rows(row, row + 1))]);
    request.model_version = version.to_string();
    request
}

/// The outputs each version computes for one row of the affine inputs.
pub(crate) fn affine_outputs(
    fixture: &Expected,
    row: usize,
) -> std::collections::BTreeMap<String, crate::inference::Tensor> {
    fixture
        .outputs
        .iter()
        .map(|(k, t)| (k.clone(), t.rows(row, row + 1)))
        .collect()
}

/// Which fixture computed `response` for `row`: 1 (affine), 2 (affine_v2), or 0 (neither).
pub(crate) fn which_affine(
    response: &ModelInferResponse,
    row: usize,
    v1: &Expected,
    v2: &Expected,
) -> u64 {
    let got = outputs(response);
    let close = |want: &Expected| {
        affine_outputs(want, row).iter().all(|(name, tensor)| {
            got.get(name).is_some_and(|g| {
                g.shape == tensor.shape
                    && g.values
                        .iter()
                        .zip(&tensor.values)
                        .all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs().max(1.0))
            })
        })
    };
    if close(v1) {
        1
    } else if close(v2) {
        2
    } else {
        0
    }
}

#[test]
fn two_models_are_served_at_once_and_a_busy_one_does_not_starve_the_other() {
    let dir = TestDir::new();
    dir.copy_fixture("affine", "affine.onnx");
    dir.copy_fixture("slow", "slow.onnx");
    // "busy" (the slow fixture) runs one request per execution, so a burst of it is many
    // executions. It sorts (and loads) before "light": a scheduler that favoured the first
    // model with work, rather than taking turns, would make light wait for the whole burst.
    let sidecar = serve(
        &dir,
        "",
        r#"
[[sidecar.models]]
name = "light"
uri = "affine.onnx"

[[sidecar.models]]
name = "busy"
uri = "slow.onnx"
[sidecar.models.batching]
max-batch-size = 1
"#,
    );
    let client = client(&sidecar.grpc_target());
    let busy_request = |id: &str, iterations: i64| ModelInferRequest {
        model_name: "busy".into(),
        ..slow_request(id, iterations)
    };
    // Both answer as ONNX Runtime computes them.
    let affine = expected("affine");
    let response = client
        .model_infer_opt(&raw_request("light", "a", &affine.inputs), patient())
        .unwrap();
    assert_outputs(&response, &affine.outputs);
    let response = client
        .model_infer_opt(&busy_request("s", 7), patient())
        .unwrap();
    assert_eq!(outputs(&response)["out"].values, [7.0]);
    assert!(model_ready(&client, "light", "") && model_ready(&client, "busy", ""));
    // A burst of 10 requests of busy, about 400 ms each; once the second runs, one request of
    // light. Served in turn, it waits for the execution running (and, if the scrape was
    // slow, the one after), not for the 8 queued behind it.
    let burst = 10;
    let pending: Vec<_> = (0..burst)
        .map(|i| {
            client
                .model_infer_async_opt(&busy_request(&format!("s{i}"), 200_000), patient())
                .unwrap()
        })
        .collect();
    wait_until(&sidecar, "the burst runs", || {
        Scrape::fetch(sidecar.health_addr())
            .get("gpu_sidecar_inference_queue_seconds_count{model=\"busy\"}")
            >= 2.0
    });
    let response = client
        .model_infer_opt(&affine_row("light", "", "light", 0), patient())
        .unwrap();
    assert_outputs(&response, &affine_outputs(&affine, 0));
    let busy_done = |client: &GrpcInferenceServiceClient| {
        let stats = client
            .model_statistics_opt(
                &ModelStatisticsRequest {
                    name: "busy".into(),
                    ..Default::default()
                },
                patient(),
            )
            .unwrap();
        // Less the first request.
        stats.model_stats[0].inference_count - 1
    };
    let ran_before = busy_done(&client);
    assert!(
        ran_before <= 4,
        "light waited for {ran_before} executions of the burst, not the one running"
    );
    for (i, call) in pending.into_iter().enumerate() {
        let response = block_on(call).unwrap();
        assert_eq!(response.id, format!("s{i}"));
    }
    assert_eq!(busy_done(&client), burst);
    // Statistics per model, every model when none is named, and metrics labelled by model
    // and version.
    let all = client
        .model_statistics_opt(&ModelStatisticsRequest::default(), patient())
        .unwrap();
    let counts: Vec<(String, String, u64)> = all
        .model_stats
        .iter()
        .map(|s| (s.name.clone(), s.version.clone(), s.inference_count))
        .collect();
    assert_eq!(
        counts,
        [
            ("busy".to_string(), "1".to_string(), 1 + burst),
            ("light".to_string(), "1".to_string(), 6)
        ]
    );
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get(
            "gpu_sidecar_inference_requests_total{model=\"light\",outcome=\"ok\",version=\"1\"}"
        ),
        2.0
    );
    assert_eq!(
        scrape.get(
            "gpu_sidecar_inference_requests_total{model=\"busy\",outcome=\"ok\",version=\"1\"}"
        ),
        1.0 + burst as f64
    );
    assert_eq!(
        scrape.get("gpu_sidecar_inference_executions_total{model=\"busy\",version=\"1\"}"),
        1.0 + burst as f64
    );
    assert_eq!(
        scrape.get("gpu_sidecar_model_ready{model=\"light\",version=\"1\"}"),
        1.0
    );
    stop(sidecar);
}

/// SIGTERM, and a clean exit.
pub(crate) fn stop(mut sidecar: Sidecar) {
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn a_broken_new_version_leaves_the_old_one_serving_and_says_why() {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    let sidecar = serve(
        &dir,
        "repository = \"models\"\nrepository-control = \"poll\"\nrepository-poll-interval = \"100 ms\"",
        "",
    );
    let client = client(&sidecar.grpc_target());
    // Version 2 is not a model; version 3's folder has no model file yet.
    let broken = repository.join("affine").join(".2.partial");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not an onnx model").unwrap();
    std::fs::rename(&broken, repository.join("affine").join("2")).unwrap();
    std::fs::create_dir_all(repository.join("affine").join("3")).unwrap();
    let mut reason = String::new();
    wait_until(&sidecar, "version 2 UNAVAILABLE", || {
        let lines = index(&client, false);
        match lines
            .iter()
            .find(|(name, version, ..)| name == "affine" && version == "2")
        {
            Some((_, _, state, why)) if state == "UNAVAILABLE" => {
                reason = why.clone();
                true
            }
            _ => false,
        }
    });
    assert!(
        reason.contains("version 2 failed to load") && reason.contains("model.onnx"),
        "{reason}"
    );
    assert!(sidecar.log().contains(&reason), "{}", sidecar.log());
    // Version 1 serves on; the empty folder is not a version.
    assert_eq!(ready_versions(&client, "affine"), ["1"]);
    assert!(
        !index(&client, false)
            .iter()
            .any(|(_, version, ..)| version == "3"),
        "{:?}",
        index(&client, false)
    );
    let v1 = expected("affine");
    let response = client
        .model_infer_opt(&affine_row("affine", "", "still", 1), patient())
        .unwrap();
    assert_outputs(&response, &affine_outputs(&v1, 1));
    assert!(model_ready(&client, "affine", "") && !model_ready(&client, "affine", "2"));
    let (code, message) =
        status_of(client.model_infer_opt(&affine_row("affine", "2", "pinned", 1), patient()));
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("version \"2\""), "{message}");
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert!(scrape.get("gpu_sidecar_model_load_failures_total{model=\"affine\"}") >= 1.0);
    assert_eq!(ready_status(&sidecar), 200);
    // Polls do not retry the same file; a fixed file is tried again and takes over.
    let failures = scrape.get("gpu_sidecar_model_load_failures_total{model=\"affine\"}");
    std::fs::copy(
        fixture_path("models/affine_v2.onnx"),
        repository.join("affine").join("2").join("model.onnx"),
    )
    .unwrap();
    wait_until(&sidecar, "the fixed version 2 READY", || {
        ready_versions(&client, "affine") == ["2"]
    });
    assert_eq!(
        Scrape::fetch(sidecar.health_addr())
            .get("gpu_sidecar_model_load_failures_total{model=\"affine\"}"),
        failures
    );
    let response = client
        .model_infer_opt(&affine_row("affine", "", "fixed", 1), patient())
        .unwrap();
    assert_outputs(&response, &affine_outputs(&expected("affine_v2"), 1));
    // A new model whose only version fails to load: the repository asks for it and it is
    // not served, so the sidecar is not ready (HTTP, gRPC Check and Watch) until it is.
    let clients = Clients::connect(&sidecar.grpc_target());
    let mut watch = clients
        .health
        .watch_opt(&health_request(""), call_option())
        .unwrap();
    let mut next_status = || {
        block_on(watch.next())
            .unwrap()
            .unwrap()
            .status
            .enum_value()
            .unwrap()
    };
    assert_eq!(next_status(), ServingStatus::SERVING);
    let late = repository.join(".late");
    std::fs::create_dir_all(late.join("1")).unwrap();
    std::fs::write(late.join("1").join("model.onnx"), b"broken").unwrap();
    std::fs::rename(&late, repository.join("late")).unwrap();
    assert_eq!(next_status(), ServingStatus::NOT_SERVING);
    assert_eq!(ready_status(&sidecar), 503);
    assert_eq!(
        clients.health_check("").unwrap().status.enum_value(),
        Ok(ServingStatus::NOT_SERVING)
    );
    assert!(
        sidecar
            .log()
            .contains("model \"late\" should be served and has no ready version"),
        "{}",
        sidecar.log()
    );
    std::fs::copy(
        fixture_path("models/affine.onnx"),
        repository.join("late").join("1").join("model.onnx"),
    )
    .unwrap();
    assert_eq!(next_status(), ServingStatus::SERVING);
    assert_eq!(ready_status(&sidecar), 200);
    stop(sidecar);
}
