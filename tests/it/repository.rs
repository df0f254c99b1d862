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
//! per-model queues served in turn, statistics and metrics; version policies; the repository
//! extension (RepositoryIndex, Load, Unload) through our client and Triton's; a new version
//! swapped in under 16 streaming clients (by polling, SIGHUP and RepositoryModelLoad) with no
//! request failed or lost; a broken version; an unload under load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use grpcio::{RpcStatusCode, WriteFlags};

use crate::inference::{
    assert_outputs, client, closed_cleanly, expected, outputs, patient, raw_request, slow_request,
    status_of, Expected,
};
use crate::util::{
    call_option, expect_exit, fixture_path, health_request, http, Clients, Gate, Scrape, Sidecar,
    TestDir, PATIENCE,
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
fn serve(dir: &TestDir, sidecar: &str, tables: &str) -> Sidecar {
    let path = dir.write_config(&config_text(dir, sidecar, tables));
    let mut sidecar = Sidecar::spawn(&path, &[("CUDA_VISIBLE_DEVICES", "")]);
    sidecar.wait_ready();
    sidecar
}

/// A sidecar on the repository `dir/models` (CPU only), with `sidecar` lines in `[sidecar]`
/// and `FAILPOINTS` set to `failpoints`, READY.
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
fn index(
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
fn ready_versions(client: &GrpcInferenceServiceClient, model: &str) -> Vec<String> {
    index(client, true)
        .into_iter()
        .filter(|(name, ..)| name == model)
        .map(|(_, version, ..)| version)
        .collect()
}

/// Polls `condition` until it holds; panics with `what` and the log after PATIENCE.
fn wait_until(sidecar: &Sidecar, what: &str, mut condition: impl FnMut() -> bool) {
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
fn load(
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
fn unload(
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
fn ready_status(sidecar: &Sidecar) -> u16 {
    http(sidecar.health_addr(), "GET", "/health/ready")
        .unwrap()
        .0
}

/// Asserts READY by `ServerReady` and `/health/ready`.
fn assert_ready(sidecar: &Sidecar, client: &GrpcInferenceServiceClient) {
    let ready = client
        .server_ready_opt(&Default::default(), patient())
        .unwrap()
        .ready;
    assert!(ready, "ServerReady false; log:\n{}", sidecar.log());
    assert_eq!(ready_status(sidecar), 200, "{}", sidecar.log());
}

fn model_ready(client: &GrpcInferenceServiceClient, name: &str, version: &str) -> bool {
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
fn affine_row(model: &str, version: &str, id: &str, row: usize) -> ModelInferRequest {
    let inputs = expected("affine").inputs;
    let (name, features) = &inputs[0];
    let mut request = raw_request(model, id, &[(name.clone(), features.rows(row, row + 1))]);
    request.model_version = version.to_string();
    request
}

/// The outputs each version computes for one row of the affine inputs.
fn affine_outputs(
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
fn which_affine(response: &ModelInferResponse, row: usize, v1: &Expected, v2: &Expected) -> u64 {
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
fn stop(mut sidecar: Sidecar) {
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// How the new version is brought in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    /// The repository is polled every 200 ms.
    Poll,
    /// Polled hourly: only SIGHUP rescans it in time.
    Sighup,
    /// Explicit control: RepositoryModelLoad.
    LoadRpc,
}

/// What one streaming client saw: per answer, whether it was sent after the switch was
/// complete, and the version that computed it (0: neither).
struct Seen {
    answers: Vec<(bool, u64)>,
    failures: Vec<String>,
}

/// 16 clients stream requests, one at a time each, while version 2 of `affine` replaces
/// version 1; none fails, each answer is version 1's or 2's, a client that saw 2 never
/// sees 1 again, and once the switch is done only 2 answers.
fn swap_under_load(trigger: Trigger) {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    let control = match trigger {
        Trigger::Poll => "repository-control = \"poll\"\nrepository-poll-interval = \"200 ms\"",
        Trigger::Sighup => "repository-control = \"poll\"\nrepository-poll-interval = \"1 h\"",
        Trigger::LoadRpc => "repository-control = \"explicit\"",
    };
    let sidecar = serve(&dir, &format!("repository = \"models\"\n{control}"), "");
    let target = sidecar.grpc_target();
    let switched = Arc::new(AtomicBool::new(false));
    let stop_clients = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients = 16;
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (target, switched, stop_clients, answered) = (
                target.clone(),
                Arc::clone(&switched),
                Arc::clone(&stop_clients),
                Arc::clone(&answered),
            );
            thread::spawn(move || {
                let (v1, v2) = (expected("affine"), expected("affine_v2"));
                let client = client(&target);
                let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
                let mut seen = Seen {
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                block_on(async {
                    let mut i = 0;
                    while !stop_clients.load(Ordering::SeqCst) {
                        let after = switched.load(Ordering::SeqCst);
                        let row = (c + i) % 5;
                        let request = affine_row("affine", "", &format!("{c}-{i}"), row);
                        if let Err(e) = sink.send((request, WriteFlags::default())).await {
                            seen.failures.push(format!("send: {e}"));
                            break;
                        }
                        match receiver.next().await {
                            Some(Ok(message)) if message.error_message.is_empty() => {
                                let response = message.infer_response.unwrap();
                                seen.answers
                                    .push((after, which_affine(&response, row, &v1, &v2)));
                            }
                            Some(Ok(message)) => seen.failures.push(message.error_message),
                            other => {
                                seen.failures.push(format!("stream: {other:?}"));
                                break;
                            }
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    let closed = sink.close().await;
                    if !closed_cleanly(&closed) {
                        seen.failures.push(format!("close: {closed:?}"));
                    }
                });
                seen
            })
        })
        .collect();
    let at_least = |count: usize| {
        wait_until(&sidecar, "the clients answered", || {
            answered.load(Ordering::SeqCst) >= count
        })
    };
    at_least(clients * 10);
    let client = client(&target);
    publish(&repository, "affine", 2, "affine_v2");
    match trigger {
        Trigger::Poll => {}
        Trigger::Sighup => sidecar.signal(libc::SIGHUP),
        Trigger::LoadRpc => {
            load(&client, "affine").unwrap();
            // Loaded: it answers once version 2 takes requests and version 1 none.
            assert_eq!(ready_versions(&client, "affine"), ["2"]);
        }
    }
    wait_until(&sidecar, "version 2 alone READY", || {
        ready_versions(&client, "affine") == ["2"]
    });
    switched.store(true, Ordering::SeqCst);
    let now = answered.load(Ordering::SeqCst);
    at_least(now + clients * 10);
    stop_clients.store(true, Ordering::SeqCst);
    let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let failures: Vec<&String> = seen.iter().flat_map(|s| &s.failures).collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let mut by_version = [0usize; 3];
    for (c, client_seen) in seen.iter().enumerate() {
        let mut newest = 1;
        for &(after, version) in &client_seen.answers {
            by_version[version as usize] += 1;
            assert_ne!(version, 0, "client {c}: an answer of neither version");
            assert!(
                version >= newest,
                "client {c}: version 1 answered after version 2 had"
            );
            newest = version;
            assert!(
                !after || version == 2,
                "client {c}: version 1 after the switch"
            );
        }
    }
    assert!(
        by_version[1] > 0 && by_version[2] > 0,
        "answers by version: {by_version:?}"
    );
    // The old version is freed, and its series with it.
    sidecar.wait_for_log("model \"affine\" version 1: freed its session");
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_model_ready{model=\"affine\",version=\"2\"}"),
        1.0
    );
    assert!(
        !scrape.samples.keys().any(|s| s.contains("version=\"1\"")),
        "version 1's series stay: {:#?}",
        scrape.samples
    );
    assert_ready(&sidecar, &client);
    if trigger == Trigger::Poll {
        // The newest version's folder removed: back to the version the policy then picks.
        std::fs::remove_dir_all(repository.join("affine").join("2")).unwrap();
        wait_until(&sidecar, "rolled back to version 1", || {
            ready_versions(&client, "affine") == ["1"]
        });
    }
    stop(sidecar);
}

#[test]
fn a_polled_new_version_takes_over_under_load_with_no_request_lost() {
    swap_under_load(Trigger::Poll);
}

#[test]
fn sighup_rescans_and_swaps_under_load_with_no_request_lost() {
    swap_under_load(Trigger::Sighup);
}

#[test]
fn load_model_swaps_under_load_with_no_request_lost() {
    swap_under_load(Trigger::LoadRpc);
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

#[test]
fn an_unload_under_load_runs_what_is_queued_and_refuses_what_comes_after() {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    publish(&repository, "slow", 1, "slow");
    std::fs::write(
        repository.join("slow").join("model.toml"),
        "[batching]\nmax-batch-size = 1\n",
    )
    .unwrap();
    let sidecar = serve(
        &dir,
        "repository = \"models\"\nrepository-control = \"explicit\"",
        "",
    );
    let client = client(&sidecar.grpc_target());
    let queued = 8;
    let pending: Vec<_> = (0..queued)
        .map(|i| {
            client
                .model_infer_async_opt(&slow_request(&format!("q{i}"), 50_000 + i), patient())
                .unwrap()
        })
        .collect();
    wait_until(&sidecar, "the slow requests run", || {
        Scrape::fetch(sidecar.health_addr())
            .get("gpu_sidecar_inference_queue_seconds_count{model=\"slow\"}")
            >= 1.0
    });
    unload(&client, "slow").unwrap();
    // Nothing queued is lost: each answered with its own index.
    for (i, call) in pending.into_iter().enumerate() {
        let response = block_on(call).unwrap();
        assert_eq!(response.id, format!("q{i}"));
        assert_eq!(outputs(&response)["out"].values, [50_000.0 + i as f64]);
    }
    // New requests are refused as Triton refuses them: the model NOT_FOUND, a version of it
    // UNAVAILABLE; the sidecar stays READY (an unload on request is not a failure).
    let (code, message) = status_of(client.model_infer_opt(&slow_request("after", 1), patient()));
    assert_eq!(code, RpcStatusCode::NOT_FOUND, "{message}");
    assert!(
        message.contains("\"slow\"") && message.contains("unloaded"),
        "{message}"
    );
    let mut pinned = slow_request("pinned", 1);
    pinned.model_version = "1".into();
    let (code, message) = status_of(client.model_infer_opt(&pinned, patient()));
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("version \"1\""), "{message}");
    assert!(!model_ready(&client, "slow", ""));
    assert_ready(&sidecar, &client);
    assert!(index(&client, false).contains(&(
        "slow".to_string(),
        "1".to_string(),
        "UNAVAILABLE".to_string(),
        "unloaded".to_string()
    )));
    sidecar.wait_for_log("model \"slow\" version 1: freed its session");
    // Loaded again, it serves again; an unknown model is NOT_FOUND.
    load(&client, "slow").unwrap();
    let response = client
        .model_infer_opt(&slow_request("again", 3), patient())
        .unwrap();
    assert_eq!(outputs(&response)["out"].values, [3.0]);
    let (code, message) = status_of(load(&client, "nothing"));
    assert_eq!(code, RpcStatusCode::NOT_FOUND, "{message}");
    assert!(message.contains("\"nothing\""), "{message}");
    // A load that fails leaves the sidecar as it was: READY, the model not served, and why.
    let broken = repository.join("broken").join("1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not onnx").unwrap();
    let (code, message) = status_of(load(&client, "broken"));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
    assert!(
        message.contains("model \"broken\" version 1 failed to load"),
        "{message}"
    );
    assert_ready(&sidecar, &client);
    assert!(index(&client, false)
        .iter()
        .any(|(name, version, state, why)| name == "broken"
            && version == "1"
            && state == "UNAVAILABLE"
            && why.contains("failed to load")));
    stop(sidecar);
}

#[test]
fn version_policies_pick_the_versions_served() {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    for model in ["every", "newest-two", "chosen", "default"] {
        publish(&repository, model, 1, "affine");
        publish(&repository, model, 2, "affine_v2");
        publish(&repository, model, 3, "affine");
    }
    for (model, policy) in [
        ("every", "\"all\""),
        ("newest-two", "{ latest = 2 }"),
        ("chosen", "{ specific = [1, 2] }"),
    ] {
        std::fs::write(
            repository.join(model).join("model.toml"),
            format!("version-policy = {policy}\n"),
        )
        .unwrap();
    }
    let sidecar = serve(&dir, "repository = \"models\"", "");
    let client = client(&sidecar.grpc_target());
    // --check-config says the same of the repository, without starting anything.
    let mut check = Sidecar::spawn_args(
        &[
            "--check-config",
            "-c",
            dir.path().join("sidecar.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(check.exit_code(PATIENCE), 0, "{}", check.log());
    assert!(
        check.stdout().contains(
            "models (versions served at start): chosen [1, 2], default [3], every [1, 2, 3], newest-two [2, 3]"
        ),
        "{}",
        check.stdout()
    );
    assert_eq!(ready_versions(&client, "every"), ["1", "2", "3"]);
    assert_eq!(ready_versions(&client, "newest-two"), ["2", "3"]);
    assert_eq!(ready_versions(&client, "chosen"), ["1", "2"]);
    assert_eq!(ready_versions(&client, "default"), ["3"]);
    let (v1, v2) = (expected("affine"), expected("affine_v2"));
    // A named version answers; no version means the newest served.
    for (model, version, want) in [
        ("every", "2", &v2),
        ("every", "1", &v1),
        ("every", "", &v1),
        ("chosen", "", &v2),
        ("newest-two", "2", &v2),
    ] {
        let response = client
            .model_infer_opt(&affine_row(model, version, "v", 2), patient())
            .unwrap();
        assert_outputs(&response, &affine_outputs(want, 2));
        let newest = if model == "chosen" { "2" } else { "3" };
        let answered_by = if version.is_empty() { newest } else { version };
        assert_eq!(response.model_version, answered_by, "{model} {version:?}");
    }
    // A version on disk the policy leaves out is not ready (not an error) and not served.
    assert!(!model_ready(&client, "newest-two", "1"));
    assert!(model_ready(&client, "newest-two", "2"));
    let (code, message) =
        status_of(client.model_infer_opt(&affine_row("newest-two", "1", "v", 0), patient()));
    assert_eq!(code, RpcStatusCode::NOT_FOUND, "{message}");
    assert!(message.contains("no version \"1\""), "{message}");
    let metadata = client
        .model_metadata_opt(
            &ModelMetadataRequest {
                name: "every".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    assert_eq!(metadata.versions, ["1", "2", "3"]);
    stop(sidecar);
}

#[test]
fn a_models_table_may_name_a_folder_of_versions_with_a_policy() {
    let dir = TestDir::new();
    let repository = dir.path().join("versions");
    publish(&repository, "scorer", 1, "affine");
    publish(&repository, "scorer", 2, "affine_v2");
    dir.copy_fixture("affine", "affine.onnx");
    let sidecar = serve(
        &dir,
        "",
        "[[sidecar.models]]\nname = \"pinned\"\nuri = \"versions/scorer\"\nversion-policy = { specific = [1] }\n\
         [[sidecar.models]]\nname = \"newest\"\nuri = \"versions/scorer\"\n\
         [[sidecar.models]]\nname = \"file\"\nuri = \"affine.onnx\"\n",
    );
    let client = client(&sidecar.grpc_target());
    assert_eq!(ready_versions(&client, "pinned"), ["1"]);
    assert_eq!(ready_versions(&client, "newest"), ["2"]);
    assert_eq!(ready_versions(&client, "file"), ["1"]);
    let response = client
        .model_infer_opt(&affine_row("newest", "", "n", 3), patient())
        .unwrap();
    assert_outputs(&response, &affine_outputs(&expected("affine_v2"), 3));
    stop(sidecar);
}

#[test]
fn tritons_python_client_lists_loads_and_unloads_models() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".clients/bin/python");
    assert!(
        python.exists(),
        "this test needs Triton's Python client: run `bin/dev.sh clients` (makes .clients/)"
    );
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    publish(&repository, "second", 1, "affine_v2");
    let sidecar = serve(
        &dir,
        "repository = \"models\"\nrepository-control = \"explicit\"\nstartup-models = [\"affine\"]",
        "",
    );
    let output = std::process::Command::new(&python)
        .arg(fixture_path("../clients/tritonclient_check.py"))
        .arg(sidecar.grpc_target())
        .arg("repository")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        sidecar.log()
    );
    stop(sidecar);
}

#[test]
fn load_and_unload_are_refused_unless_control_is_explicit() {
    let dir = TestDir::new();
    dir.copy_fixture("affine", "affine.onnx");
    let sidecar = serve(
        &dir,
        "",
        "[sidecar.model]\nuri = \"affine.onnx\"\nname = \"affine\"\n",
    );
    let client = client(&sidecar.grpc_target());
    let (code, message) = status_of(unload(&client, "affine"));
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("repository-control"), "{message}");
    assert!(model_ready(&client, "affine", ""));
    stop(sidecar);
}

#[test]
fn a_repository_that_cannot_be_served_exits_2_and_names_why() {
    let dir = TestDir::new();
    // The log of a sidecar on `[sidecar]` lines and tables that must exit 2.
    let exits_2 = |sidecar: &str, tables: &str| {
        expect_exit(
            2,
            &dir,
            &config_text(&dir, sidecar, tables),
            &[("CUDA_VISIBLE_DEVICES", "")],
        )
    };
    // No such folder.
    let log = exits_2("repository = \"absent\"", "");
    assert!(log.contains("absent"), "{log}");
    // A model.toml with a bad key.
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    std::fs::write(
        repository.join("affine").join("model.toml"),
        "version-policy = { latest = 0 }\n",
    )
    .unwrap();
    let log = exits_2("repository = \"models\"", "");
    assert!(log.contains("version-policy"), "{log}");
    std::fs::remove_file(repository.join("affine").join("model.toml")).unwrap();
    // A version that is not a model.
    let broken = repository.join("broken").join("1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not onnx").unwrap();
    let log = exits_2("repository = \"models\"", "");
    assert!(log.contains("\"broken\""), "{log}");
    // A startup model the repository does not hold.
    let log = exits_2(
        "repository = \"models\"\nrepository-control = \"explicit\"\nstartup-models = [\"nope\"]",
        "",
    );
    assert!(log.contains("\"nope\""), "{log}");
    // A model twice, and a repository beside the shorthand.
    let log = exits_2("", "[[sidecar.models]]\nname = \"a\"\nuri = \"x.onnx\"\n[[sidecar.models]]\nname = \"a\"\nuri = \"y.onnx\"\n");
    assert!(log.contains("sidecar.models[1].name"), "{log}");
    let log = exits_2(
        "repository = \"models\"",
        "[sidecar.model]\nuri = \"x.onnx\"\n",
    );
    assert!(log.contains("sidecar.repository"), "{log}");
    // A version policy for a single file.
    dir.copy_fixture("affine", "affine.onnx");
    let log = exits_2(
        "",
        "[[sidecar.models]]\nname = \"a\"\nuri = \"affine.onnx\"\nversion-policy = \"all\"\n",
    );
    assert!(log.contains("sidecar.models[0].version-policy"), "{log}");
    // A model with no version to serve, at start and by --check-config alike.
    std::fs::create_dir_all(dir.path().join("empty").join("hollow").join("1")).unwrap();
    let log = exits_2("repository = \"empty\"", "");
    assert!(
        log.contains("model \"hollow\" has no version to load"),
        "{log}"
    );
    let mut check = Sidecar::spawn_args(
        &[
            "--check-config",
            "-c",
            dir.path().join("sidecar.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(check.exit_code(PATIENCE), 2, "{}", check.log());
    assert!(
        check
            .log()
            .contains("model \"hollow\" has no version to load"),
        "{}",
        check.log()
    );
    assert!(!dir.socket().exists(), "a socket was left behind");
}

/// A load while serving holds the GPU-owner thread (held at a failpoint's gate for 3 s): its
/// silence is the load's, not a stall, so the sidecar stays live and READY throughout.
#[cfg(feature = "failpoints")]
#[test]
fn a_long_load_while_serving_keeps_the_sidecar_live() {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    publish(&repository, "second", 1, "affine_v2");
    // The first load (at start) passes; the next is held at the gate until released.
    let gate = Gate::new();
    let sidecar = repository_sidecar(
        &dir,
        "repository-control = \"explicit\"\nstartup-models = [\"affine\"]",
        &format!("gpu::after_load=1*off->{}", gate.action()),
    );
    let client = client(&sidecar.grpc_target());
    let load = client
        .repository_model_load_async_opt(
            &RepositoryModelLoadRequest {
                model_name: "second".into(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    let began = Instant::now();
    // While it loads, its requests are UNAVAILABLE (worth a retry), not NOT_FOUND.
    wait_until(&sidecar, "second LOADING in the index", || {
        index(&client, false)
            .iter()
            .any(|(name, _, state, _)| name == "second" && state == "LOADING")
    });
    let (code, message) =
        status_of(client.model_infer_opt(&affine_row("second", "", "early", 0), patient()));
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("\"second\" is loading"), "{message}");
    sidecar.wait_for_log("failpoint gpu::after_load: held");
    // Held well past the liveness check's stall limit (2 s), checked all the while.
    let mut checks = 0;
    while began.elapsed() < Duration::from_millis(3000) {
        let (status, body) = http(sidecar.health_addr(), "GET", "/health/live").unwrap();
        assert_eq!(
            status,
            200,
            "{body} after {:?}; log:\n{}",
            began.elapsed(),
            sidecar.log()
        );
        assert_eq!(ready_status(&sidecar), 200);
        checks += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(checks > 10);
    gate.release();
    block_on(load).unwrap();
    assert!(!sidecar.log().contains("NOT_LIVE"), "{}", sidecar.log());
    assert!(model_ready(&client, "second", ""));
    stop(sidecar);
}

/// Unloaded and loaded again while the old copy still runs what it queued: both run, the old
/// is freed once done, and the new one serves on with its series.
#[test]
fn a_model_loaded_again_before_its_old_copy_is_freed_serves_on() {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "slow", 1, "slow");
    std::fs::write(
        repository.join("slow").join("model.toml"),
        "[batching]\nmax-batch-size = 1\n",
    )
    .unwrap();
    let sidecar = serve(
        &dir,
        "repository = \"models\"\nrepository-control = \"explicit\"",
        "",
    );
    let client = client(&sidecar.grpc_target());
    let queued: Vec<_> = (0..4)
        .map(|i| {
            client
                .model_infer_async_opt(&slow_request(&format!("old{i}"), 200_000 + i), patient())
                .unwrap()
        })
        .collect();
    wait_until(&sidecar, "the old copy runs", || {
        Scrape::fetch(sidecar.health_addr())
            .get("gpu_sidecar_inference_queue_seconds_count{model=\"slow\"}")
            >= 1.0
    });
    unload(&client, "slow").unwrap();
    load(&client, "slow").unwrap();
    let response = client
        .model_infer_opt(&slow_request("new", 5), patient())
        .unwrap();
    assert_eq!(outputs(&response)["out"].values, [5.0]);
    for (i, call) in queued.into_iter().enumerate() {
        let response = block_on(call).unwrap();
        assert_eq!(outputs(&response)["out"].values, [200_000.0 + i as f64]);
    }
    sidecar.wait_for_log("model \"slow\" version 1: freed its session");
    let response = client
        .model_infer_opt(&slow_request("after", 6), patient())
        .unwrap();
    assert_eq!(outputs(&response)["out"].values, [6.0]);
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_model_ready{model=\"slow\",version=\"1\"}"),
        1.0,
        "{:#?}",
        scrape.samples
    );
    assert!(
        scrape.get(
            "gpu_sidecar_inference_requests_total{model=\"slow\",outcome=\"ok\",version=\"1\"}"
        ) >= 2.0
    );
    stop(sidecar);
}
