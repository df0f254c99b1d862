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

//! A served model and its versions. The [`ModelHandle`] (one per model name, owned by the
//! repository) routes each request to a version: the one it names, or the newest that takes
//! requests. Each version is a [`ModelVersion`] ([`version`]): its signature, text stage,
//! queue, admission (queue limit, deadlines), statistics and metrics, built once.
//!
//! A request, by file: the codec's [`request::InferRequest`] is checked against the version
//! ([`request`], with [`text`] tokenizing texts and [`outputs`] choosing what is answered)
//! while the model's routing table is held for reading, so that a version taken out of it (by
//! the repository thread, for writing) gets no request after that; the [`job`] waits in the
//! version's [`queue`]; the GPU-owner thread gathers jobs ([`batcher`]), joins their inputs
//! and splits the outputs back ([`assemble`]), and records the execution ([`stats`]); the
//! handler makes the answer's named outputs ([`outputs`], [`classification`], [`text`]).
//! [`file`] reads the model's bytes.

pub mod admit;
pub mod assemble;
pub mod batcher;
pub mod classification;
pub mod file;
pub mod job;
pub mod outputs;
pub mod queue;
pub mod request;
pub mod stats;
#[cfg(test)]
pub mod testing;
pub mod text;
pub mod version;
pub mod warmup;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use self::admit::AdmitError;
pub use self::version::{Instances, ModelVersion};
use crate::lifecycle::{Lifecycle, State};

/// What a version is doing, when it does not take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionState {
    /// Being made resident.
    Loading,
    /// Its load failed, for this reason; the version served before (if any) serves on.
    Unavailable(String),
    /// Taken out of service (a newer version replaced it, or the model was unloaded).
    Unloaded,
    /// Every instance of it was on GPUs that failed, for this reason.
    OutOfService(String),
}

/// One model, as the request path sees it: its versions that take requests, and what the
/// others are doing. Shared by every handler and the repository thread.
#[derive(Debug)]
pub struct ModelHandle {
    name: String,
    lifecycle: Arc<Lifecycle>,
    versions: RwLock<Versions>,
}

/// The routing table of a model.
#[derive(Debug, Default)]
pub struct Versions {
    /// Versions that take requests, by number.
    serving: BTreeMap<u64, Arc<ModelVersion>>,
    /// Versions that do not, and why.
    others: BTreeMap<u64, VersionState>,
    /// Whether the model should be served (false once unloaded on request, or before its
    /// first load in explicit control).
    wanted: bool,
}

impl Versions {
    /// The version `asked` for (its number as text), or the newest serving when empty.
    fn route(&self, name: &str, asked: &str) -> Result<&Arc<ModelVersion>, AdmitError> {
        let found = if asked.is_empty() {
            self.serving.values().next_back()
        } else {
            asked
                .parse::<u64>()
                .ok()
                .and_then(|version| self.serving.get(&version))
        };
        found.ok_or_else(|| {
            let known = asked
                .parse::<u64>()
                .is_ok_and(|version| self.others.contains_key(&version));
            let loading = self
                .others
                .values()
                .any(|state| *state == VersionState::Loading);
            let lost = match self.others.iter().next_back() {
                Some((version, VersionState::OutOfService(reason))) => {
                    Some(format!("version {version} {reason}"))
                }
                _ => None,
            };
            if self.serving.is_empty() && !known && loading {
                AdmitError::ModelLoading {
                    name: name.to_string(),
                }
            } else if let (true, Some(why)) = (self.serving.is_empty(), lost) {
                AdmitError::OutOfService {
                    name: name.to_string(),
                    why,
                }
            } else if self.serving.is_empty() && !known {
                AdmitError::NotLoaded {
                    name: name.to_string(),
                    why: self.why_not_serving(),
                }
            } else if known {
                AdmitError::VersionUnavailable {
                    name: name.to_string(),
                    version: asked.to_string(),
                    serving: self.serving_list(),
                }
            } else {
                AdmitError::NoSuchVersion {
                    name: name.to_string(),
                    version: asked.to_string(),
                    serving: self.serving_list(),
                }
            }
        })
    }

    /// "version 1", "versions 1, 2", "no version".
    fn serving_list(&self) -> String {
        let numbers: Vec<String> = self.serving.keys().map(u64::to_string).collect();
        match numbers.len() {
            0 => "no version".to_string(),
            1 => format!("version {}", numbers[0]),
            _ => format!("versions {}", numbers.join(", ")),
        }
    }

    fn why_not_serving(&self) -> String {
        if let Some((version, VersionState::Unavailable(reason))) = self.others.iter().next_back() {
            return format!("version {version} failed to load: {reason}");
        }
        if self.wanted {
            "it has no version to load".to_string()
        } else if self
            .others
            .values()
            .any(|state| *state == VersionState::Unloaded)
        {
            "it was unloaded".to_string()
        } else {
            "it was not loaded at start".to_string()
        }
    }

    /// The versions that take requests.
    pub fn serving(&self) -> &BTreeMap<u64, Arc<ModelVersion>> {
        &self.serving
    }

    /// The versions that do not, and why.
    pub fn others(&self) -> &BTreeMap<u64, VersionState> {
        &self.others
    }

    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// Whether the model should be served and has no version that takes requests.
    pub fn missing(&self) -> bool {
        self.wanted && self.serving.is_empty()
    }

    /// Takes requests on `version` from now on.
    pub fn add(&mut self, version: Arc<ModelVersion>) -> Option<Arc<ModelVersion>> {
        let number = version.version;
        self.others.remove(&number);
        self.serving.insert(number, version)
    }

    /// Takes no more requests on `version`; what it has queued still runs.
    pub fn remove(&mut self, version: u64) -> Option<Arc<ModelVersion>> {
        let removed = self.serving.remove(&version);
        if removed.is_some() {
            self.others.insert(version, VersionState::Unloaded);
        }
        removed
    }

    pub fn set_state(&mut self, version: u64, state: VersionState) {
        self.others.insert(version, state);
    }

    /// Forgets what a version not served was doing.
    pub fn forget(&mut self, version: u64) {
        self.others.remove(&version);
    }

    pub fn set_wanted(&mut self, wanted: bool) {
        self.wanted = wanted;
    }
}

impl ModelHandle {
    /// A model with no version yet; `wanted` says whether it should be served.
    pub fn new(name: String, lifecycle: Arc<Lifecycle>, wanted: bool) -> Self {
        ModelHandle {
            name,
            lifecycle,
            versions: RwLock::new(Versions {
                wanted,
                ..Versions::default()
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    // A panic while holding the lock leaves the table as it was before or after one
    // change, so recover from poison.
    /// The routing table, for reading.
    pub fn versions(&self) -> RwLockReadGuard<'_, Versions> {
        self.versions.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The routing table, for changing (the repository thread).
    pub fn versions_mut(&self) -> RwLockWriteGuard<'_, Versions> {
        self.versions.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `admit` on the version `asked` for (the newest when empty) while that version
    /// cannot be taken out of service: a request submitted inside reaches a version that
    /// will run it. Fails without calling `admit` while the sidecar is not READY, or when
    /// no such version takes requests.
    pub fn route<T, E: From<AdmitError>>(
        &self,
        asked: &str,
        admit: impl FnOnce(&Arc<ModelVersion>) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.lifecycle.state() {
            State::Ready => {}
            State::Starting => return Err(AdmitError::Loading.into()),
            State::Draining | State::Stopped => return Err(AdmitError::ShuttingDown.into()),
        }
        let versions = self.versions();
        let version = versions.route(&self.name, asked)?;
        admit(version)
    }

    /// The version `asked` for (the newest when empty), whatever the sidecar's state.
    pub fn version(&self, asked: &str) -> Result<Arc<ModelVersion>, AdmitError> {
        self.versions().route(&self.name, asked).cloned()
    }
}
