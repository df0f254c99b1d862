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

//! Bringing a model to what it should serve, on the `repository` thread: which models and
//! versions are configured or on disk now, the versions its policy picks loaded one by one
//! beside those serving (each takes requests once warmed up), then those it no longer picks
//! taken out of service and retired, once a version it picks is ready.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{Keeper, Known};
use crate::config::{ModelSource, ModelSpec};
use crate::gpu::LoadOrder;
use crate::model::text::TextStage;
use crate::model::{ModelHandle, ModelVersion, VersionState};
use crate::repository::scan::{self, FileStamp};
use crate::repository::RepositoryError;

impl Keeper {
    /// The models configured or in the repository now, with their versions, and the model
    /// folders that cannot be read with why (recorded for the index).
    pub(super) fn known(&self) -> Result<(Known, BTreeMap<String, String>), RepositoryError> {
        let Some(folder) = &self.plan.folder else {
            let known = self
                .plan
                .specs
                .iter()
                .map(|spec| {
                    let versions = match &spec.source {
                        ModelSource::File(path) => BTreeMap::from([(1, path.clone())]),
                        ModelSource::Folder(folder) => scan::versions(folder),
                    };
                    (
                        spec.name.clone(),
                        scan::Found {
                            spec: spec.clone(),
                            versions,
                        },
                    )
                })
                .collect();
            return Ok((known, BTreeMap::new()));
        };
        let scan =
            scan::scan(folder, &self.plan.batching).map_err(|source| RepositoryError::Folder {
                path: folder.display().to_string(),
                source,
            })?;
        let unreadable: BTreeMap<String, String> = scan
            .unreadable
            .into_iter()
            .map(|u| (u.name, u.reason))
            .collect();
        for (name, reason) in &unreadable {
            log::warn!("model folder {name:?} cannot be served: {reason}");
        }
        self.repository.set_unreadable(unreadable.clone());
        Ok((scan.models, unreadable))
    }

    /// Loads the versions of `found` that its policy picks and are not resident, then takes
    /// out of service those it no longer picks (once one it picks is ready). With
    /// `polling`, a version whose load failed is tried again only once its file changed.
    pub(super) fn bring_to_policy(
        &mut self,
        found: &scan::Found,
        polling: bool,
        afresh: bool,
    ) -> Result<(), RepositoryError> {
        let spec = &found.spec;
        let name = spec.name.as_str();
        let model = self.repository.model_or_new(name);
        model.versions_mut().set_wanted(true);
        let available: Vec<u64> = found.versions.keys().copied().collect();
        let picked = spec.version_policy.select(&available);
        if picked.is_empty() {
            let why = match &spec.source {
                ModelSource::Folder(folder) if available.is_empty() => format!(
                    "no numbered folder in {} holds a {}",
                    folder.display(),
                    scan::MODEL_FILE
                ),
                _ => format!(
                    "version-policy {} picks none of the versions there ({available:?})",
                    spec.version_policy
                ),
            };
            let error = RepositoryError::NoVersion {
                name: name.to_string(),
                why,
            };
            if model.versions().serving().is_empty() {
                return Err(error);
            }
            log::warn!("{error}; the versions serving stay");
            return Ok(());
        }
        let mut first_error = None;
        let resident: Vec<u64> = model.versions().serving().keys().copied().collect();
        // Afresh (new settings): every version picked is loaded again, the serving copy going
        // once the new one takes requests.
        let to_load: Vec<u64> = picked
            .iter()
            .copied()
            .filter(|version| afresh || !resident.contains(version))
            .collect();
        let stage = if to_load.is_empty() {
            None
        } else {
            match &spec.text {
                Some(text) => match TextStage::load(text) {
                    Ok(stage) => Some(stage),
                    Err(source) => {
                        return Err(RepositoryError::Text {
                            name: name.to_string(),
                            source,
                        })
                    }
                },
                None => None,
            }
        };
        for version in to_load {
            let path = &found.versions[&version];
            let key = (name.to_string(), version);
            let stamp = FileStamp::of(path);
            if polling && self.failed.get(&key) == Some(&stamp) {
                continue;
            }
            match self.load_version(&model, spec, version, path, stage.as_ref()) {
                Ok(()) => {
                    self.failed.remove(&key);
                }
                Err(e) => {
                    log::error!("{e}");
                    self.metrics.model_load_failed(name);
                    model
                        .versions_mut()
                        .set_state(version, VersionState::Unavailable(e.to_string()));
                    self.failed.insert(key, stamp);
                    first_error.get_or_insert(e);
                }
            }
        }
        // The old go once a version the policy picks is ready.
        let going: Vec<u64> = {
            let versions = model.versions();
            let serving = versions.serving();
            if picked.iter().any(|version| serving.contains_key(version)) {
                serving
                    .keys()
                    .copied()
                    .filter(|version| !picked.contains(version))
                    .collect()
            } else {
                Vec::new()
            }
        };
        for version in going {
            if let Some(old) = model.versions_mut().remove(version) {
                self.retire(&old);
            }
        }
        {
            // Forget what became of versions no longer there.
            let mut versions = model.versions_mut();
            let stale: Vec<u64> = versions
                .others()
                .keys()
                .copied()
                .filter(|version| !found.versions.contains_key(version))
                .collect();
            for version in stale {
                versions.forget(version);
            }
        }
        self.failed
            .retain(|(model, version), _| model != name || found.versions.contains_key(version));
        first_error.map_or(Ok(()), Err)
    }

    /// Loads one version beside those serving; it takes requests once warmed up.
    fn load_version(
        &mut self,
        model: &ModelHandle,
        spec: &ModelSpec,
        version: u64,
        path: &Path,
        stage: Option<&TextStage>,
    ) -> Result<(), RepositoryError> {
        let name = spec.name.as_str();
        model
            .versions_mut()
            .set_state(version, VersionState::Loading);
        let order = LoadOrder {
            name: name.to_string(),
            version,
            path: path.to_path_buf(),
            intra_op_threads: spec.intra_op_threads,
            batching: spec.batching.clone(),
            text: stage.cloned(),
            cuda: spec.cuda,
            placement: spec.placement.clone(),
            warmup: spec.warmup.clone(),
        };
        let loaded = self
            .gpu
            .load(order)
            .map_err(|source| RepositoryError::Load {
                name: name.to_string(),
                version,
                source: Box::new(source),
            })?;
        self.metrics.model_loaded(
            name,
            version,
            loaded.location,
            loaded.size_bytes,
            loaded.load_time,
            loaded.batching.max_queue_size,
        );
        if let Some(replaced) = model.versions_mut().add(loaded) {
            // Loaded afresh: the copy it replaces runs what it holds, then goes; the version's
            // series stay for the new one.
            self.gpu.retire(&replaced);
            log::info!("model {name:?} version {version}: the copy loaded before runs what it holds, then goes");
        }
        log::info!("model {name:?} version {version} takes requests");
        Ok(())
    }

    /// Has a version taken out of the routing table run what it holds, then be freed.
    pub(super) fn retire(&self, version: &Arc<ModelVersion>) {
        let (name, number) = (&version.name, version.version);
        self.metrics.model_retiring(name, number);
        self.gpu.retire(version);
        log::info!("model {name:?} version {number} takes no new requests");
    }
}
