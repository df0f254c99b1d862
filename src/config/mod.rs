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

//! Configuration: the TOML file's serde structs (`deny_unknown_fields` throughout), parsing of
//! endpoints, Flink-style durations, socket modes and model URIs, and the checks that need more
//! than one key. Runs on the main thread before anything starts; every error names the key it
//! is about and maps to exit code 2.

//!
//! By file: [`endpoints`] (`[sidecar.rpc]`, `[sidecar.health]`, endpoint and socket parsing),
//! [`models`] (`[sidecar.model]`, `[[sidecar.models]]`, a repository's `model.toml`, text,
//! version policies, names and URIs), [`batching`] (`[sidecar.batching]` and a model's own),
//! [`values`] (shutdown, GPU and log sections, durations, device ordinals), [`display`] (the
//! effective configuration as `key = value` lines); loading and the checks across sections
//! here.

mod batching;
mod cuda;
mod display;
mod endpoints;
mod models;
mod placement;
pub mod tls;
mod values;
mod warmup;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::batching::{
    BatchingConfig, DelayMode, MAX_BATCH_SIZE_LIMIT, MAX_QUEUE_DELAY_LIMIT, MAX_QUEUE_SIZE_LIMIT,
};
pub use self::cuda::{ArenaExtendStrategy, ConvAlgoSearch, CudaOptions, MemoryLimit};
pub use self::endpoints::{
    Endpoint, HealthConfig, MessageSize, RpcConfig, SocketMode, DEFAULT_MAX_MESSAGE_SIZE,
};
use self::models::{default_poll_interval, poll_interval, validate_text};
pub use self::models::{
    ModelConfig, ModelName, ModelSettings, ModelSource, ModelSpec, ModelTable, ModelUri, Pooling,
    RepositoryControl, TextConfig, ThreadCount, VersionPolicy,
};
pub use self::placement::{DeviceSelection, Placement, MAX_INSTANCES};
pub use self::values::{
    parse_duration, DeviceOrdinal, GpuConfig, GpuMode, GracePeriod, LogConfig, LogLevel,
    ShutdownConfig,
};
pub use self::warmup::Warmup;

/// The keys without a default, checked before anything else so that an empty or partial file
/// names what it lacks.
const REQUIRED_KEYS: [&str; 3] = [
    "sidecar.rpc.endpoint",
    "sidecar.model.uri",
    "sidecar.health.port",
];

/// A configuration that cannot be used; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The TOML is malformed, or a key is unknown or of the wrong type or value.
    #[error("config file {}: `{key}`: {message}", path.display())]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A key without a default is not in the file.
    #[error("config file {}: {key} is required", path.display())]
    Missing { path: PathBuf, key: String },
}

/// What is wrong with a config text: a key's value, or a key that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The dotted key and what is wrong with it.
    Key(String, String),
    /// A required dotted key that is not there.
    Missing(String),
}

/// The whole file: everything lives under the `[sidecar]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    sidecar: Config,
}

/// The validated configuration of one sidecar process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub rpc: RpcConfig,
    /// `[sidecar.model]`: the one-model shorthand.
    pub model: Option<ModelConfig>,
    /// `[[sidecar.models]]`: several models, one file each.
    #[serde(default)]
    pub models: Vec<ModelTable>,
    /// A model repository in Triton's layout: `DIR/<name>/<version>/model.onnx`.
    pub repository: Option<PathBuf>,
    /// Who changes what is loaded once started.
    #[serde(default)]
    pub repository_control: RepositoryControl,
    /// With `explicit`: the models loaded at start; unset: all.
    pub startup_models: Option<Vec<ModelName>>,
    /// With `poll`: how often the repository is rescanned.
    #[serde(default = "default_poll_interval", deserialize_with = "poll_interval")]
    pub repository_poll_interval: Duration,
    /// ONNX Runtime's shared library, for every model.
    runtime_library: Option<PathBuf>,
    pub health: HealthConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub gpu: GpuConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub log: LogConfig,
}

impl Config {
    /// ONNX Runtime's shared library: `sidecar.runtime-library` (or the shorthand's
    /// `sidecar.model.runtime-library`); unset: `ORT_DYLIB_PATH`, else `libonnxruntime.so`.
    pub fn runtime_library(&self) -> Option<&Path> {
        self.runtime_library.as_deref()
    }

    /// The models configured by file (`[sidecar.model]` or `[[sidecar.models]]`); a
    /// repository's are found by scanning it.
    pub fn model_specs(&self) -> Vec<ModelSpec> {
        let shorthand = self.model.iter().map(|model| ModelSpec {
            name: model.name(),
            source: ModelSource::File(model.uri.path.clone()),
            intra_op_threads: model.intra_op_threads,
            text: model.text.clone(),
            batching: self.batching.clone(),
            version_policy: VersionPolicy::default(),
            cuda: model.cuda(),
            placement: model.placement(),
            warmup: model.warmup.clone(),
        });
        let tables = self.models.iter().map(|table| ModelSpec {
            name: table.name.0.clone(),
            // A folder holds numbered versions; anything else is one file.
            source: if table.uri.path.is_dir() {
                ModelSource::Folder(table.uri.path.clone())
            } else {
                ModelSource::File(table.uri.path.clone())
            },
            intra_op_threads: table.intra_op_threads,
            text: table.text.clone(),
            batching: table.batching.clone().unwrap_or(self.batching.clone()),
            version_policy: table.version_policy.clone().unwrap_or_default(),
            cuda: table.cuda(),
            placement: table.placement(),
            warmup: table.warmup.clone(),
        });
        shorthand.chain(tables).collect()
    }

    /// Reads, parses and validates the file at `path`. Relative model paths resolve against the
    /// file's folder. Fails with a [`ConfigError`] that names the offending key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = absolute_parent(path);
        Config::parse(&text, &base).map_err(|problem| match problem {
            Problem::Key(key, message) => ConfigError::Key {
                path: path.to_path_buf(),
                key,
                message,
            },
            Problem::Missing(key) => ConfigError::Missing {
                path: path.to_path_buf(),
                key,
            },
        })
    }

    /// Parses and validates TOML text; `base` is the folder relative model paths resolve
    /// against. Fails with the dotted key and what is wrong with it, or the first required
    /// key that is missing.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Problem> {
        let key_problem = |e: serde_path_to_error::Error<toml::de::Error>| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string().trim_end().to_string();
            Problem::Key(key, message)
        };
        // Malformed TOML is reported as such; then an unknown key by name (a mistyped key is
        // the likeliest cause of a missing one); then missing keys by name, before serde would
        // report only the first missing table ("missing field `sidecar`").
        let table: toml::Table =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(key_problem)?;
        let file: ConfigFile = match serde_path_to_error::deserialize(toml::Deserializer::new(text))
        {
            Ok(file) => file,
            Err(e) if e.inner().message().starts_with("unknown field") => {
                return Err(key_problem(e))
            }
            Err(e) => {
                return Err(
                    match REQUIRED_KEYS.iter().find(|key| {
                        let elsewhere = **key == "sidecar.model.uri"
                            && (has_key(&table, "sidecar.models")
                                || has_key(&table, "sidecar.repository"));
                        !elsewhere && !has_key(&table, key)
                    }) {
                        Some(missing) => Problem::Missing(missing.to_string()),
                        None => key_problem(e),
                    },
                )
            }
        };
        let mut config = file.sidecar;
        if config.model.is_none() && config.models.is_empty() && config.repository.is_none() {
            return Err(Problem::Missing("sidecar.model.uri".to_string()));
        }
        if has_key(&table, "sidecar.gpu.device") && has_key(&table, "sidecar.gpu.devices") {
            return Err(Problem::Key(
                "sidecar.gpu.devices".to_string(),
                "and sidecar.gpu.device are both set: keep devices (several GPUs) or device (one)"
                    .to_string(),
            ));
        }
        config
            .validate(base)
            .map_err(|(key, message)| Problem::Key(key, message))?;
        Ok(config)
    }

    /// The checks that span keys, and resolution of the model path.
    fn validate(&mut self, base: &Path) -> Result<(), (String, String)> {
        if self.rpc.socket_mode.is_some() && !matches!(self.rpc.endpoint, Endpoint::Unix(_)) {
            return Err((
                "sidecar.rpc.socket-mode".to_string(),
                format!(
                    "applies only to unix: endpoints, but sidecar.rpc.endpoint is {}",
                    self.rpc.endpoint
                ),
            ));
        }
        if let Some(tls) = &mut self.rpc.tls {
            if let Endpoint::Unix(_) = self.rpc.endpoint {
                return Err((
                    "sidecar.rpc.tls".to_string(),
                    format!(
                        "applies only to TCP endpoints, but sidecar.rpc.endpoint is {}: a unix: socket is guarded by its file's mode (sidecar.rpc.socket-mode); remove [sidecar.rpc.tls] or listen on host:port",
                        self.rpc.endpoint
                    ),
                ));
            }
            tls.resolve(base);
            tls.load()
                .map_err(|error| (error.key().to_string(), error.to_string()))?;
        }
        if let Endpoint::Tcp { port, .. } = self.rpc.endpoint {
            if port != 0 && port == self.health.port {
                return Err((
                    "sidecar.health.port".to_string(),
                    format!(
                        "port {port} is also the port of sidecar.rpc.endpoint; give each its own"
                    ),
                ));
            }
        }
        let sources = [
            self.model.is_some(),
            !self.models.is_empty(),
            self.repository.is_some(),
        ];
        if sources.iter().filter(|&&given| given).count() > 1 {
            return Err((
                "sidecar.repository".to_string(),
                "sidecar.model, [[sidecar.models]] and sidecar.repository each say which models to serve: use one of them".to_string(),
            ));
        }
        if let Some(model) = &mut self.model {
            if model.uri.path.is_relative() {
                model.uri.path = base.join(&model.uri.path);
            }
            if let Some(text) = &mut model.text {
                validate_text(
                    text,
                    "sidecar.model.text",
                    base,
                    &self.batching,
                    "sidecar.batching",
                )?;
            }
            if model
                .runtime_library
                .as_ref()
                .is_some_and(|library| library.as_os_str().is_empty())
            {
                return Err((
                    "sidecar.model.runtime-library".to_string(),
                    "is empty: leave it out to use ORT_DYLIB_PATH or libonnxruntime.so".to_string(),
                ));
            }
            if model.runtime_library.is_some() && self.runtime_library.is_some() {
                return Err((
                    "sidecar.model.runtime-library".to_string(),
                    "and sidecar.runtime-library are both set: keep one".to_string(),
                ));
            }
            if let Some(library) = model.runtime_library.take() {
                self.runtime_library = Some(library);
            }
            self.gpu
                .check_placement(&model.placement(), "sidecar.model.devices")?;
            model.warmup.resolve(base);
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, table) in self.models.iter_mut().enumerate() {
            let key = format!("sidecar.models[{i}]");
            if !names.insert(table.name.0.clone()) {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "{:?} names two models: give each its own name",
                        table.name.0
                    ),
                ));
            }
            if table.uri.path.is_relative() {
                table.uri.path = base.join(&table.uri.path);
            }
            if table.version_policy.is_some() && table.uri.path.is_file() {
                return Err((
                    format!("{key}.version-policy"),
                    format!(
                        "applies to a uri that is a folder of numbered versions (<uri>/<version>/model.onnx), and {} is a file: leave it out, or point uri at the folder",
                        table.uri.path.display()
                    ),
                ));
            }
            let (batching, batching_key) = match &table.batching {
                Some(batching) => (batching.clone(), format!("{key}.batching")),
                None => (self.batching.clone(), "sidecar.batching".to_string()),
            };
            if let Some(text) = &mut table.text {
                validate_text(text, &format!("{key}.text"), base, &batching, &batching_key)?;
            }
            self.gpu
                .check_placement(&table.placement(), &format!("{key}.devices"))?;
            table.warmup.resolve(base);
        }
        if let Some(repository) = &mut self.repository {
            if repository.as_os_str().is_empty() {
                return Err((
                    "sidecar.repository".to_string(),
                    "is empty: give the folder of models".to_string(),
                ));
            }
            if repository.is_relative() {
                *repository = base.join(&*repository);
            }
        } else if self.repository_control == RepositoryControl::Poll {
            return Err((
                "sidecar.repository-control".to_string(),
                "is \"poll\", which rescans sidecar.repository, but no repository is set"
                    .to_string(),
            ));
        }
        if self.startup_models.is_some() && self.repository_control != RepositoryControl::Explicit {
            return Err((
                "sidecar.startup-models".to_string(),
                format!(
                    "applies only to sidecar.repository-control = \"explicit\", not \"{}\"",
                    self.repository_control
                ),
            ));
        }
        if let Some(library) = &mut self.runtime_library {
            if library.as_os_str().is_empty() {
                return Err((
                    "sidecar.runtime-library".to_string(),
                    "is empty: leave it out to use ORT_DYLIB_PATH or libonnxruntime.so".to_string(),
                ));
            }
            // A bare file name is for the loader to find; a path resolves like the model's.
            if library.is_relative() && library.components().count() > 1 {
                *library = base.join(&*library);
            }
        }
        Ok(())
    }
}

/// Whether the dotted `key` is in `table` (every part but the last a table).
fn has_key(table: &toml::Table, key: &str) -> bool {
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        match current.get(part) {
            Some(_) if parts.peek().is_none() => return true,
            Some(toml::Value::Table(inner)) => current = inner,
            _ => return false,
        }
    }
    false
}

/// The folder holding `path`, made absolute against the working directory.
fn absolute_parent(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

#[cfg(test)]
mod tests;
