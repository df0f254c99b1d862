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

//! `--check-config` beyond the file itself, on the main thread: the model files (or the
//! repository's model folders) are there and readable, the tokenizers load, and ONNX
//! Runtime's library loads; no model is opened and nothing is started.

use super::error::Error;
use crate::backend;
use crate::config::{Config, ModelSource};
use crate::gpu::GpuError;
use crate::model;
use crate::model::text::TextStage;
use crate::repository::{self, RepositoryError};

/// What `--check-config` checks beyond the file itself, without starting anything: that the
/// model files (or the repository's model folders) are there and readable, that tokenizers
/// load, and that ONNX Runtime's library can be found and loaded (no model is opened).
/// Returns where the runtime comes from and its version.
pub fn preflight(config: &Config) -> Result<String, Error> {
    let mut specs = config.model_specs();
    if let Some(folder) = &config.repository {
        let scan = repository::scan::scan(folder, &config.batching).map_err(|source| {
            RepositoryError::Folder {
                path: folder.display().to_string(),
                source,
            }
        })?;
        if let Some(unreadable) = scan.unreadable.into_iter().next() {
            return Err(RepositoryError::Unreadable {
                name: unreadable.name,
                reason: unreadable.reason,
            }
            .into());
        }
        specs.extend(scan.models.into_values().map(|found| found.spec));
    }
    let mut served = Vec::with_capacity(specs.len());
    for spec in &specs {
        let versions = match &spec.source {
            ModelSource::File(path) => {
                model::file::check_model_file(path).map_err(|e| Error::Gpu(GpuError::Model(e)))?;
                vec![1]
            }
            ModelSource::Folder(folder) => {
                let found: Vec<u64> = repository::scan::versions(folder).into_keys().collect();
                spec.version_policy.select(&found)
            }
        };
        let at_start = config
            .startup_models
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name.0 == spec.name));
        if versions.is_empty() && at_start {
            return Err(RepositoryError::NoVersion {
                name: spec.name.clone(),
                why: format!(
                    "version-policy {} picks none of the numbered folders holding a {}",
                    spec.version_policy,
                    repository::scan::MODEL_FILE
                ),
            }
            .into());
        }
        if let Some(text) = &spec.text {
            TextStage::load(text)?;
        }
        served.push(format!("{} {versions:?}", spec.name));
    }
    let (_, source, version) = backend::onnx::load_library(config.runtime_library())
        .map_err(|e| Error::Gpu(GpuError::Runtime(e)))?;
    Ok(format!(
        "models (versions served at start): {}; ONNX Runtime {version} from {source}",
        if served.is_empty() {
            "none".to_string()
        } else {
            served.join(", ")
        }
    ))
}
