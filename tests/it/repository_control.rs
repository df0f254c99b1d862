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

//! The repository extension and version policies: RepositoryIndex, Load and Unload through
//! our client and Triton's, an unload under load, policies, refusals, and loads while serving.

#[cfg(feature = "failpoints")]
use std::thread;
#[cfg(feature = "failpoints")]
use std::time::{Duration, Instant};

use futures_executor::block_on;
use gpu_sidecar::proto::grpc_service::*;
use grpcio::RpcStatusCode;

#[cfg(feature = "failpoints")]
use crate::gate::Gate;
use crate::inference::{
    assert_outputs, client, expected, outputs, patient, slow_request, status_of,
};
use crate::repository::*;
use crate::scrape::Scrape;
#[cfg(feature = "failpoints")]
use crate::util::http;
use crate::util::{expect_exit, Sidecar, TestDir, PATIENCE};

/// Publishes the slow fixture as model "slow", version 1, one request per execution.
fn publish_slow(repository: &std::path::Path) {
    publish(repository, "slow", 1, "slow");
    std::fs::write(
        repository.join("slow").join("model.toml"),
        "[batching]\nmax-batch-size = 1\n",
    )
    .unwrap();
}

#[test]
fn an_unload_under_load_runs_what_is_queued_and_refuses_what_comes_after() {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    publish_slow(&repository);
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
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    publish(&repository, "second", 1, "affine_v2");
    let sidecar = serve(
        &dir,
        "repository = \"models\"\nrepository-control = \"explicit\"\nstartup-models = [\"affine\"]",
        "",
    );
    crate::examples::python_check(
        "tritonclient_check.py",
        &sidecar,
        &["repository"],
        "tritonclient repository check passed",
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
    publish_slow(&repository);
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
