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

//! Integration tests: each spawns the built `gpu-sidecar` binary on a temp config, free ports
//! and a temp socket, and talks to it as a client would.

mod cli;
mod deployment;
mod devices;
#[cfg(feature = "failpoints")]
mod dispatch;
mod examples;
mod exported;
mod faults;
#[cfg(feature = "failpoints")]
mod gate;
mod gpu;
#[cfg(feature = "failpoints")]
mod held;
mod inference;
mod launch_script;
mod launch_supervisor;
mod lifecycle;
mod loading;
#[cfg(feature = "failpoints")]
mod loads_beside;
mod operations;
mod reliability;
mod repository;
mod repository_control;
mod requests;
mod rpc;
mod scrape;
mod supervision;
mod swap;
mod text;
mod tls;
mod util;
mod warmup;
