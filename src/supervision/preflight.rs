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
use crate::serving::ByteSize;

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
        let model_error = |e| Error::Gpu(GpuError::Model(e));
        let mut data_files = Vec::new();
        let versions = match &spec.source {
            ModelSource::File(path) => {
                data_files = model::file::check_model_file(path).map_err(model_error)?;
                vec![1]
            }
            ModelSource::Folder(folder) => {
                let found = repository::scan::versions(folder);
                let picked = spec
                    .version_policy
                    .select(&found.keys().copied().collect::<Vec<_>>());
                for version in &picked {
                    data_files.extend(
                        model::file::check_model_file(&found[version]).map_err(model_error)?,
                    );
                }
                picked
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
        let external: Vec<String> = data_files
            .iter()
            .map(|data| format!("{} ({})", data.path.display(), ByteSize(data.size)))
            .collect();
        served.push(if external.is_empty() {
            format!("{} {versions:?}", spec.name)
        } else {
            format!(
                "{} {versions:?} with external data {}",
                spec.name,
                external.join(", ")
            )
        });
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
