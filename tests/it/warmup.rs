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

//! A model's warm-up (its `warmup` key): zeros, with strings "0", so that a model that parses
//! its strings as numbers starts (Triton's `simple_string`); random data; a file of sample
//! data per input (`.npy` from numpy, or Triton's raw `input_data_file`); and a warm-up that
//! fails, which exits 2 with its reason.

use gpu_sidecar::proto::grpc_service::model_infer_request::InferInputTensor;
use gpu_sidecar::proto::grpc_service::*;

use crate::inference::{client, patient};
use crate::util::{
    expect_exit, fixture_path, fixture_sidecar, ConfigText, Sidecar, TestDir, PATIENCE,
};

/// The lines under `[sidecar.model]` of a config serving fixture `model`.
fn config(dir: &TestDir, model: &str, lines: &str) -> String {
    dir.copy_fixture(model, &format!("{model}.onnx"));
    let mut config = ConfigText::new(dir);
    config.model = format!("{model}.onnx");
    config.render().replace(
        &format!("uri = \"{model}.onnx\""),
        &format!("uri = \"{model}.onnx\"\n{lines}"),
    )
}

/// Spawns a CPU sidecar on `text` and waits for READY.
fn ready(dir: &TestDir, text: &str) -> Sidecar {
    let mut sidecar = Sidecar::spawn(&dir.write_config(text), &[("CUDA_VISIBLE_DEVICES", "")]);
    sidecar.wait_ready();
    sidecar
}

/// The string elements of a BYTES tensor in the protocol's raw form.
fn strings(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let length = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(raw[at + 4..at + 4 + length].to_vec()).unwrap());
        at += 4 + length;
    }
    out
}

#[test]
fn a_model_that_parses_its_strings_warms_up_and_answers_as_onnx_runtime_does() {
    let (_dir, mut sidecar) = fixture_sidecar("simple_string", |_| {});
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("models/simple_string.expected.json")).unwrap(),
    )
    .unwrap();
    let mut request = ModelInferRequest {
        model_name: "simple_string".into(),
        ..Default::default()
    };
    for name in ["INPUT0", "INPUT1"] {
        let input = &expected["inputs"][name];
        let mut raw = Vec::new();
        for value in input["data"].as_array().unwrap() {
            let text = value.as_str().unwrap();
            raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
            raw.extend_from_slice(text.as_bytes());
        }
        request.inputs.push(InferInputTensor {
            name: name.into(),
            datatype: "BYTES".into(),
            shape: serde_json::from_value(input["shape"].clone()).unwrap(),
            ..Default::default()
        });
        request.raw_input_contents.push(raw);
    }
    let response = client(&sidecar.grpc_target())
        .model_infer_opt(&request, patient())
        .unwrap();
    for (i, output) in response.outputs.iter().enumerate() {
        let want: Vec<String> = expected["outputs"][&output.name]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            strings(&response.raw_output_contents[i]),
            want,
            "{}",
            output.name
        );
    }
    assert_eq!(response.outputs.len(), 2);
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn warm_up_data_comes_from_npy_and_raw_files_or_is_random() {
    let dir = TestDir::new();
    let npy = fixture_path("models/affine.warmup.npy");
    let text = config(
        &dir,
        "affine",
        &format!("warmup = {{ features = {:?} }}", npy.display().to_string()),
    );
    let mut check = Sidecar::spawn_args(
        &[
            "--check-config",
            "-c",
            dir.write_config(&text).to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(check.exit_code(PATIENCE), 0, "{}", check.log());
    assert!(
        check.stdout().contains(&format!(
            "sidecar.model.warmup = {{ features = {:?} }}",
            npy.display().to_string()
        )),
        "{}",
        check.stdout()
    );
    for text in [
        text,
        config(&dir, "affine", "warmup = \"random\""),
        config(
            &dir,
            "lookup",
            &format!(
                "warmup = {{ index = {:?} }}",
                fixture_path("models/lookup.warmup.bin")
                    .display()
                    .to_string()
            ),
        ),
        config(
            &dir,
            "simple_string",
            &format!(
                "warmup = {{ INPUT1 = {:?} }}",
                fixture_path("models/simple_string.warmup.npy")
                    .display()
                    .to_string()
            ),
        ),
    ] {
        let mut sidecar = ready(&dir, &text);
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
}

#[test]
fn a_warm_up_that_fails_or_does_not_fit_exits_2_naming_why() {
    let dir = TestDir::new();
    let bad = fixture_path("models/lookup.bad-warmup.bin");
    let npy = fixture_path("models/affine.warmup.npy");
    for (text, needles) in [
        // The file is read and run: its index is past the table.
        (
            config(&dir, "lookup", &format!("warmup = {{ index = {:?} }}", bad.display().to_string())),
            vec![
                "the warm-up execution of model",
                "indices element out of data bounds",
                "give the model a warmup it accepts",
            ],
        ),
        // FP32 data for an INT64 input.
        (
            config(&dir, "lookup", &format!("warmup = {{ index = {:?} }}", npy.display().to_string())),
            vec!["warm-up file", "for input \"index\"", "holds \"<f4\", not the input's INT64"],
        ),
        (
            config(&dir, "affine", "warmup = { pixels = \"p.npy\" }"),
            vec!["warmup names input \"pixels\", which the model does not have: its inputs are \"features\""],
        ),
        (
            config(&dir, "affine", "warmup = { features = \"absent.npy\" }"),
            vec!["absent.npy", "cannot be read"],
        ),
    ] {
        let log = expect_exit(2, &dir, &text, &[("CUDA_VISIBLE_DEVICES", "")]);
        for needle in needles {
            assert!(log.contains(needle), "{needle}: {log}");
        }
    }
    let log = expect_exit(2, &dir, &config(&dir, "affine", "warmup = \"ones\""), &[]);
    assert!(
        log.contains("sidecar.model.warmup") && log.contains("use \"zeros\", \"random\""),
        "{log}"
    );
}
