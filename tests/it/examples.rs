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

//! What the example programs of Triton's client repository do, with Triton's own Python
//! client (`tests/clients/triton_examples_check.py`), against the `simple` and `simple_int8`
//! fixtures, over the Unix socket and TCP.

use crate::util::{fixture_path, ConfigText, Sidecar, TestDir, PATIENCE};

/// Runs the Python check `script` of tests/clients/ (with Triton's client, from the
/// `.clients/` environment that `bin/dev.sh clients` makes) against `sidecar`, with `args`;
/// fails the test with what it printed, and the sidecar's log, unless it says it `passed`.
pub(crate) fn python_check(script: &str, sidecar: &Sidecar, args: &[&str], passed: &str) {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".clients/bin/python");
    assert!(
        python.exists(),
        "this test needs Triton's Python client: run `bin/dev.sh clients` (makes .clients/)"
    );
    let output = std::process::Command::new(&python)
        .arg(fixture_path(&format!("../clients/{script}")))
        .arg(sidecar.grpc_target())
        .args(args)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.contains(passed),
        "{script} {args:?} over {}: {said}{}
{}",
        sidecar.grpc_target(),
        String::from_utf8_lossy(&output.stderr),
        sidecar.log()
    );
}

#[test]
fn tritons_example_programs_work_unmodified() {
    for tcp in [false, true] {
        let dir = TestDir::new();
        let mut tables = String::new();
        for model in ["simple", "simple_int8"] {
            let file = dir.copy_fixture(model, &format!("{model}.onnx"));
            tables.push_str(&format!(
                "[[sidecar.models]]\nname = \"{model}\"\nuri = {:?}\n",
                file.display().to_string()
            ));
        }
        let mut config = ConfigText::new(&dir);
        if tcp {
            config.endpoint = "127.0.0.1:0".to_string();
        }
        // The shorthand model gives way to the tables.
        let text = config
            .render()
            .replace("[sidecar.model]\nuri = \"model.bin\"\n", &tables);
        let mut sidecar = Sidecar::spawn(&dir.write_config(&text), &[("CUDA_VISIBLE_DEVICES", "")]);
        sidecar.wait_ready();
        python_check(
            "triton_examples_check.py",
            &sidecar,
            &[],
            "triton examples check passed",
        );
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    }
}
