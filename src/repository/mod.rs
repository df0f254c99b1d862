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

//! The model repository: every model the sidecar knows, each a [`ModelHandle`] with its
//! versions, and what Triton's repository extension reports of them (`RepositoryIndex`).
//!
//! [`Repository`] is the shared view: the gRPC handlers find models in it (completion-queue
//! threads), and the `repository` thread ([`control`]) changes it: it loads what is configured
//! or found on disk ([`scan`]) through the GPU-owner thread, puts each new version in its
//! model's routing table once warmed up, and takes the old one out, to be freed once it has
//! run what it holds. A request follows the files by name: `rpc/inference/` →
//! `repository/mod.rs` (the model) → `model/mod.rs` (its version) → `model/version.rs`
//! (checked, queued) → `gpu/owner.rs` and `model/batcher.rs` (gathered) → `gpu/execute.rs`
//! (the execution) → back through the job's reply.

pub mod config_override;
pub mod control;
pub mod scan;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::RepositoryControl;
use crate::gpu::GpuError;
use crate::lifecycle::{Lifecycle, State};
use crate::model::text::TextError;
use crate::model::{AdmitError, ModelHandle, VersionState};

/// Why a model could not be loaded or unloaded.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// Loading and unloading on request need explicit control.
    #[error("explicit model load / unload is not allowed: sidecar.repository-control is \"{control}\"; set it to \"explicit\" to load and unload models by request")]
    NotExplicit { control: RepositoryControl },
    /// No model of that name is configured or in the repository.
    #[error("unknown model {name:?}: {known}")]
    UnknownModel { name: String, known: String },
    /// The model's folder cannot be served as it stands (its `model.toml`, its name).
    #[error("model {name:?} cannot be loaded: {reason}")]
    Unreadable { name: String, reason: String },
    /// The model's folder has no version to serve.
    #[error("model {name:?} has no version to load: {why}")]
    NoVersion { name: String, why: String },
    /// A version could not be made resident.
    #[error("model {name:?} version {version} failed to load: {source}")]
    Load {
        name: String,
        version: u64,
        source: Box<GpuError>,
    },
    /// The model's tokenizer cannot be read or does not fit the version.
    #[error("model {name:?}: {source}")]
    Text { name: String, source: TextError },
    /// The repository folder cannot be read.
    #[error("cannot read the model repository {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    /// A load's config override cannot be applied.
    #[error("failed to load '{name}': its config override {reason}; what serves stays as it is")]
    ConfigOverride { name: String, reason: String },
    /// A load request sent model files, which the sidecar does not take.
    #[error("failed to load '{name}': the request sends model files ({parameter}), which this sidecar does not take: put the model in its repository and load it by name")]
    FilesInRequest { name: String, parameter: String },
    /// The sidecar stops: the repository takes no more orders.
    #[error("the sidecar is shutting down; the repository takes no more orders")]
    Stopped,
}

impl RepositoryError {
    /// Whether the configuration or the model itself is at fault (exit code 2 at start-up),
    /// not the machine.
    pub fn is_config(&self) -> bool {
        match self {
            RepositoryError::Unreadable { .. }
            | RepositoryError::NoVersion { .. }
            | RepositoryError::Text { .. }
            | RepositoryError::UnknownModel { .. }
            | RepositoryError::Folder { .. } => true,
            RepositoryError::Load { source, .. } => source.is_unservable_model(),
            _ => false,
        }
    }
}

/// One line of `RepositoryIndex`: a model version (or a model, `version` unset) and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<u64>,
    /// Triton's states: READY, LOADING, UNAVAILABLE.
    pub state: &'static str,
    pub reason: String,
}

/// Every model the sidecar knows, shared by the handlers and the repository thread.
#[derive(Debug)]
pub struct Repository {
    control: RepositoryControl,
    lifecycle: Arc<Lifecycle>,
    models: RwLock<BTreeMap<String, Arc<ModelHandle>>>,
    /// Model folders the last scan could not read, and why.
    unreadable: RwLock<BTreeMap<String, String>>,
}

impl Repository {
    pub fn new(control: RepositoryControl, lifecycle: Arc<Lifecycle>) -> Self {
        Repository {
            control,
            lifecycle,
            models: RwLock::new(BTreeMap::new()),
            unreadable: RwLock::new(BTreeMap::new()),
        }
    }

    /// Who changes what is loaded.
    pub fn control(&self) -> RepositoryControl {
        self.control
    }

    /// The model called `name`; NOT_FOUND-worthy when there is none, but while the sidecar
    /// starts (the model may be on its way) a retry-worthy [`AdmitError::Loading`].
    pub fn model(&self, name: &str) -> Result<Arc<ModelHandle>, AdmitError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models.get(name).cloned().ok_or_else(|| {
            if self.lifecycle.state() == State::Starting {
                AdmitError::Loading
            } else {
                AdmitError::UnknownModel {
                    name: name.to_string(),
                    served: names(models.keys()),
                }
            }
        })
    }

    /// Every model known, by name.
    pub fn models(&self) -> Vec<Arc<ModelHandle>> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models.values().cloned().collect()
    }

    /// The model called `name`, made (not wanted, no version) if it is new.
    fn model_or_new(&self, name: &str) -> Arc<ModelHandle> {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(models.entry(name.to_string()).or_insert_with(|| {
            Arc::new(ModelHandle::new(
                name.to_string(),
                Arc::clone(&self.lifecycle),
                false,
            ))
        }))
    }

    /// Records the model folders a scan could not read.
    fn set_unreadable(&self, unreadable: BTreeMap<String, String>) {
        *self.unreadable.write().unwrap_or_else(|e| e.into_inner()) = unreadable;
    }

    /// Serves `version` as a version taking requests.
    #[cfg(test)]
    pub fn serve_for_tests(&self, version: crate::model::ModelVersion) {
        let handle = self.model_or_new(&version.name);
        let mut versions = handle.versions_mut();
        versions.set_wanted(true);
        versions.add(Arc::new(version));
    }

    /// Why the model folder `name` could not be read at the last scan, if it could not.
    pub fn unreadable(&self, name: &str) -> Option<String> {
        self.unreadable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Tells the lifecycle whether every model that should be served has a ready version.
    fn update_readiness(&self) {
        let missing = self
            .models()
            .into_iter()
            .find(|model| model.versions().missing());
        let name = missing.as_ref().map(|model| model.name().to_string());
        let before = self.lifecycle.set_missing_model(name.as_deref());
        match (before, name) {
            (None, Some(name)) => log::warn!(
                "model {name:?} should be served and has no ready version: NOT_READY until it has"
            ),
            (Some(before), None) => {
                log::info!("model {before:?} has a ready version again: every model is served")
            }
            _ => {}
        }
    }

    /// `RepositoryIndex`: each version known with its state, each model without one as a
    /// line of its own; with `ready_only`, only what takes requests.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let mut entries = Vec::new();
        for model in self.models() {
            let versions = model.versions();
            let name = model.name().to_string();
            let mut lines: BTreeMap<u64, IndexEntry> = BTreeMap::new();
            for &version in versions.serving().keys() {
                lines.insert(
                    version,
                    IndexEntry {
                        name: name.clone(),
                        version: Some(version),
                        state: "READY",
                        reason: String::new(),
                    },
                );
            }
            for (&version, state) in versions.others() {
                let (state, reason) = match state {
                    VersionState::Loading => ("LOADING", String::new()),
                    VersionState::Unavailable(reason) => ("UNAVAILABLE", reason.clone()),
                    VersionState::Unloaded => ("UNAVAILABLE", "unloaded".to_string()),
                    VersionState::OutOfService(reason) => ("UNAVAILABLE", reason.clone()),
                };
                lines.entry(version).or_insert(IndexEntry {
                    name: name.clone(),
                    version: Some(version),
                    state,
                    reason,
                });
            }
            if lines.is_empty() {
                entries.push(IndexEntry {
                    name,
                    version: None,
                    state: "UNAVAILABLE",
                    reason: if versions.wanted() {
                        "no version to load".to_string()
                    } else {
                        "not loaded".to_string()
                    },
                });
            } else {
                entries.extend(lines.into_values());
            }
        }
        for (name, reason) in self
            .unreadable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if entries.iter().all(|entry| &entry.name != name) {
                entries.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason: reason.clone(),
                });
            }
        }
        entries.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        if ready_only {
            entries.retain(|entry| entry.state == "READY");
        }
        entries
    }
}

/// "\"a\", \"b\"", or "no model" when there is none.
fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = names.map(|name| format!("{name:?}")).collect();
    if quoted.is_empty() {
        "no model".to_string()
    } else {
        quoted.join(", ")
    }
}
