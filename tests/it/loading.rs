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

//! Big models: requests far over the message limit refused before they are held in memory,
//! and models with ONNX external data served from every kind of model folder.

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use grpcio::{RpcStatusCode, WriteFlags};

use crate::inference::{client, patient, status_of, zero_features};
use crate::util::{fixture_sidecar, ConfigText, Sidecar, TestDir, PATIENCE};

/// The peak resident memory of process `pid` (VmHWM), in bytes.
pub(crate) fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// A request far over `max-message-size` is refused by gRPC itself (RESOURCE_EXHAUSTED,
/// "larger than max") as soon as it has arrived, held once and never parsed (gRPC 1.56
/// checks a message's size only once it is whole, so the peak grows by about the request,
/// not twice it as before); one a little over is refused by the sidecar naming the key, on a
/// stream that stays open.
#[test]
fn an_oversized_request_costs_about_the_limit_in_memory() {
    let (_dir, mut sidecar) = fixture_sidecar("affine", |config| {
        config.rpc_extra = "max-message-size = \"8 MiB\"".to_string();
        config.extra = "[sidecar.batching]\nmax-batch-size = 0\n".to_string();
    });
    let client = client(&sidecar.grpc_target());
    // Warm the paths a request takes, so that what grows after is the request's.
    let (code, _) = status_of(client.model_infer_opt(&zero_features("over", 550_000), patient()));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    let before = peak_rss(sidecar.pid());
    let huge = 160 << 20;
    let (code, message) =
        status_of(client.model_infer_opt(&zero_features("huge", huge / 16), patient()));
    let grown = peak_rss(sidecar.pid()).saturating_sub(before);
    assert_eq!(code, RpcStatusCode::RESOURCE_EXHAUSTED, "{message}");
    assert!(message.contains("larger than max"), "{message}");
    assert!(
        grown < (huge as u64) * 5 / 4,
        "a {huge}-byte request grew the peak resident memory by {grown} bytes"
    );
    // A little over the limit (8.5 MiB): the sidecar's own refusal, and the stream serves on.
    let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
    block_on(async {
        for (id, rows) in [("over", (17 << 19) / 16), ("small", 2)] {
            sink.send((zero_features(id, rows), WriteFlags::default()))
                .await
                .unwrap_or_else(|e| panic!("sending {id:?}: {e}"));
            let answer = receiver.next().await.unwrap().unwrap();
            assert_eq!(answer.infer_response.id, id);
            if id == "over" {
                assert!(
                    answer.error_message.starts_with("INVALID_ARGUMENT: ")
                        && answer
                            .error_message
                            .contains("sidecar.rpc.max-message-size"),
                    "{}",
                    answer.error_message
                );
            } else {
                assert_eq!(answer.error_message, "", "the stream still serves");
            }
        }
        sink.close().await.unwrap();
    });
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// Copies the external-data fixture (`external.onnx` and `external.onnx.data`) into
/// `folder` as `name`, its data file beside it under the name the model gives.
fn copy_external(folder: &std::path::Path, name: &str) {
    std::fs::create_dir_all(folder).unwrap();
    std::fs::copy(
        crate::util::fixture_path("models/external.onnx"),
        folder.join(name),
    )
    .unwrap();
    std::fs::copy(
        crate::util::fixture_path("models/external.onnx.data"),
        folder.join("external.onnx.data"),
    )
    .unwrap();
}

/// Asks `sidecar` for model `model` on the fixture's inputs; the answer equals what ONNX
/// Runtime computed in process.
fn assert_served_as_in_process(sidecar: &Sidecar, model: &str) {
    let expected = crate::inference::expected("external");
    let response = client(&sidecar.grpc_target())
        .model_infer_opt(
            &crate::inference::raw_request(model, "ext", &expected.inputs),
            patient(),
        )
        .unwrap_or_else(|e| panic!("{model}: {e}; log:\n{}", sidecar.log()));
    crate::inference::assert_outputs(&response, &expected.outputs);
}

/// A model whose weights are in an external data file beside it is served, and answers as
/// ONNX Runtime does in process: as `[sidecar.model]`, as a `[[sidecar.models]]` table, and as
/// a version in a repository; its data file counts in what the load read and its identity.
#[test]
fn a_model_with_external_data_is_served_every_way() {
    let dir = TestDir::new();
    copy_external(dir.path(), "external.onnx");
    let mut config = ConfigText::new(&dir);
    config.model = "external.onnx".to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_ready();
    assert_served_as_in_process(&sidecar, "external");
    sidecar.wait_for_log("weights in ");
    assert!(
        sidecar.log().contains("external.onnx.data (73.00 KiB)"),
        "{}",
        sidecar.log()
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());

    let tables = TestDir::new();
    copy_external(&tables.path().join("weights"), "model.onnx");
    let path = tables.write_config(&crate::repository::config_text(
        &tables,
        "",
        "[[sidecar.models]]\nname = \"ext\"\nuri = \"weights/model.onnx\"\n",
    ));
    let mut sidecar = Sidecar::spawn(&path, &[("CUDA_VISIBLE_DEVICES", "")]);
    sidecar.wait_ready();
    assert_served_as_in_process(&sidecar, "ext");
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());

    let repository = TestDir::new();
    copy_external(&repository.path().join("models/ext/1"), "model.onnx");
    let path = repository.write_config(&crate::repository::config_text(
        &repository,
        "repository = \"models\"",
        "",
    ));
    let mut sidecar = Sidecar::spawn(&path, &[("CUDA_VISIBLE_DEVICES", "")]);
    sidecar.wait_ready();
    assert_served_as_in_process(&sidecar, "ext");
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

/// `--check-config` lists a model's external data files, and exits 2 naming one that is
/// missing, or one the model places outside its folder.
#[test]
fn check_config_lists_external_data_and_names_a_missing_file() {
    let dir = TestDir::new();
    copy_external(dir.path(), "external.onnx");
    let mut config = ConfigText::new(&dir);
    config.model = "external.onnx".to_string();
    let path = dir.write_config(&config.render());
    let check = |envs: &[(&str, &str)]| {
        let mut sidecar =
            Sidecar::spawn_args(&["--check-config", "-c", path.to_str().unwrap()], envs);
        let code = sidecar.exit_code(PATIENCE);
        (code, format!("{}\n{}", sidecar.stdout(), sidecar.log()))
    };
    let (code, output) = check(&[]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("with external data ") && output.contains("external.onnx.data (73.00 KiB)"),
        "{output}"
    );
    std::fs::remove_file(dir.path().join("external.onnx.data")).unwrap();
    let (code, output) = check(&[]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("keeps its weights in")
            && output.contains("external.onnx.data, which does not exist"),
        "{output}"
    );
}
