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

//! Fault injection for tests (compiled with the `failpoints` feature only, never in
//! production): named points configured by the `FAILPOINTS` environment variable
//! (`name=action;...`, the `fail` crate's syntax). Besides the crate's own actions (`panic`,
//! `sleep(ms)`, counts such as `1*off->...`), a point configured `return(PATH)` is a gate:
//! the thread that reaches it logs "failpoint NAME: held" and waits while the file PATH
//! exists, so that a test holds it exactly as long as its check needs, then releases it by
//! removing the file. Runs on whichever thread reaches the point.

use std::path::Path;
use std::time::Duration;

/// How often a held gate looks for its file.
const GATE_POLL: Duration = Duration::from_millis(5);

/// Evaluates the point `name`: nothing unless configured; a gate holds here until released.
pub fn hold(name: &str) {
    let Some(Some(gate)) = fail::eval(name, |path| path) else {
        return;
    };
    log::info!("failpoint {name}: held while {gate} exists");
    while Path::new(&gate).exists() {
        std::thread::sleep(GATE_POLL);
    }
    log::info!("failpoint {name}: released");
}

/// Whether the point `name` is configured to fire (any action): for points that stand for a
/// failure rather than a wait.
pub fn fires(name: &str) -> bool {
    fail::eval(name, |_| ()).is_some()
}
