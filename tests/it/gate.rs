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

//! Fail-point gates for tests built with `--features failpoints`.

use std::fs;
use std::path::PathBuf;

/// A failpoint gate (the daemon's `failpoint::hold`, test builds only): the sidecar holds
/// whichever thread reaches the point while the gate's file exists, and logs
/// "failpoint NAME: held" as it does. Closed when made; [`Gate::release`] opens it for good.
pub struct Gate {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Gate {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gpu-sidecar-gate")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("closed");
        fs::write(&path, b"").expect("gate file");
        Gate { _dir: dir, path }
    }

    /// The `FAILPOINTS` action that holds a point at this gate.
    pub fn action(&self) -> String {
        format!("return({})", self.path.display())
    }

    /// `FAILPOINTS` for `point` held at this gate every time it is reached.
    pub fn at(&self, point: &str) -> String {
        format!("{point}={}", self.action())
    }

    /// Lets every thread held at the gate, and every later one, through.
    pub fn release(&self) {
        let _ = fs::remove_file(&self.path);
    }
}
