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

//! Why the sidecar stopped other than by request: [`Error`], every module's typed error met
//! in one place, and the exit code each maps to (0 clean, 1 runtime failure, 2 bad
//! configuration or a model the sidecar cannot serve).

use crate::config::ConfigError;
use crate::gpu::GpuError;
use crate::health::HealthError;
use crate::metrics::MetricsError;
use crate::model::text::TextError;
use crate::repository::RepositoryError;
use crate::rpc::RpcError;
use crate::shutdown::ShutdownError;

/// Exit code for a runtime failure.
pub const EXIT_RUNTIME_FAILURE: u8 = 1;
/// Exit code for a bad configuration or command line.
pub const EXIT_USAGE: u8 = 2;

/// Why the sidecar stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The logger could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// The health endpoint could not start.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The metrics registry could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The gRPC endpoint could not start or stop.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The GPU or the runtime could not be brought up.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A model that should be served at start could not be.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The tokenizer cannot be read, or does not fit the model.
    #[error(transparent)]
    Text(#[from] TextError),
    /// A thread could not be started or stopped.
    #[error(transparent)]
    Thread(#[from] ShutdownError),
    /// A component thread ended while the sidecar was running.
    #[error("the {name} thread died: {reason}")]
    ThreadDied { name: String, reason: String },
}

impl Error {
    /// The process exit code for this error: 2 for a bad configuration, including a model the
    /// sidecar cannot serve (no restart can fix either: supervisors do not retry exit 2), 1
    /// for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Text(_) => EXIT_USAGE,
            Error::Gpu(e) if e.is_unservable_model() => EXIT_USAGE,
            Error::Repository(e) if e.is_config() => EXIT_USAGE,
            Error::Rpc(e) if e.is_config() => EXIT_USAGE,
            _ => EXIT_RUNTIME_FAILURE,
        }
    }
}
