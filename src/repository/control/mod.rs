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

//! The `repository` thread: the one writer of the [`Repository`]. At start it loads what
//! should be served; then it carries out `RepositoryModelLoad` and `Unload` (explicit
//! control), or rescans the repository every poll interval and on SIGHUP (poll control).
//!
//! Bringing a model to what it should serve: the versions its policy picks that are not
//! resident are loaded, one by one, on this thread (the GPU loader), beside those serving; each
//! takes requests once warmed up. Then the versions the policy no longer picks are taken out of
//! the routing table, and the GPU-owner threads free each once it has run what it queued. A
//! version whose every instance was on GPUs that failed is taken out too, out of service. A load
//! that fails leaves what serves untouched: the versions going out stay until a version the
//! policy picks is ready. A version whose load failed is not tried again by a poll until its
//! file changes. How a model is brought to its policy is [`policy`]'s.

mod policy;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, never, select, tick, unbounded, Receiver, Sender};
use futures_channel::oneshot;

use super::config_override::ConfigOverride;
use super::scan::{self, FileStamp};
use super::{names, Repository, RepositoryError};
use crate::config::{BatchingConfig, Config, ModelSpec, RepositoryControl};
use crate::gpu::{GpuLoader, LostVersion};
use crate::metrics::Metrics;
use crate::model::{AdmitError, ModelHandle, VersionState};
use crate::shutdown::{ComponentThread, Event, ShutdownError};

/// What a load or unload request is answered with.
pub type Answer = oneshot::Sender<Result<(), RepositoryError>>;

/// Orders for the repository thread.
#[derive(Debug)]
enum Order {
    /// Load (or reload: pick up new versions of) a model.
    Load {
        name: String,
        config: Option<ConfigOverride>,
        answer: Answer,
    },
    /// Stop serving a model; what it has queued still runs.
    Unload { name: String, answer: Answer },
    /// Rescan the repository (poll control; SIGHUP).
    Rescan,
}

/// What the repository thread works from.
#[derive(Debug, Clone)]
pub struct RepositoryPlan {
    /// The models configured by file.
    pub specs: Vec<ModelSpec>,
    /// The repository folder, if models come from one.
    pub folder: Option<PathBuf>,
    pub control: RepositoryControl,
    /// The models loaded at start; `None`: all.
    pub startup_models: Option<Vec<String>>,
    pub poll_interval: Duration,
    /// `[sidecar.batching]`, for models that set none.
    pub batching: BatchingConfig,
}

impl RepositoryPlan {
    pub fn from_config(config: &Config) -> Self {
        RepositoryPlan {
            specs: config.model_specs(),
            folder: config.repository.clone(),
            control: config.repository_control,
            startup_models: config
                .startup_models
                .as_ref()
                .map(|names| names.iter().map(|name| name.0.clone()).collect()),
            poll_interval: config.repository_poll_interval,
            batching: config.batching.clone(),
        }
    }
}

/// The handle the gRPC handlers and the main thread order the repository thread through.
#[derive(Debug, Clone)]
pub struct RepositoryOrders {
    orders: Sender<Order>,
}

impl RepositoryOrders {
    /// A handle and the receiving end for the thread (which starts later).
    fn new() -> (Self, Receiver<Order>) {
        let (orders, receiver) = unbounded();
        (RepositoryOrders { orders }, receiver)
    }

    /// Asks for model `name` to be loaded, with its settings changed by `config` if given
    /// (each version then loaded afresh); the answer comes once it is (or is not).
    pub fn load(
        &self,
        name: &str,
        config: Option<ConfigOverride>,
    ) -> oneshot::Receiver<Result<(), RepositoryError>> {
        log::info!(
            "RepositoryModelLoad {name:?}: ordered{}",
            if config.is_some() {
                ", with a config override"
            } else {
                ""
            }
        );
        let (answer, answered) = oneshot::channel();
        let _ = self.orders.send(Order::Load {
            name: name.to_string(),
            config,
            answer,
        });
        answered
    }

    /// Asks for model `name` to be unloaded; the answer comes once it takes no requests.
    pub fn unload(&self, name: &str) -> oneshot::Receiver<Result<(), RepositoryError>> {
        let (answer, answered) = oneshot::channel();
        let _ = self.orders.send(Order::Unload {
            name: name.to_string(),
            answer,
        });
        answered
    }

    /// Asks for a rescan (SIGHUP).
    pub fn rescan(&self) {
        let _ = self.orders.send(Order::Rescan);
    }
}

/// The main thread's handle on the `repository` thread.
#[derive(Debug)]
pub struct RepositoryThread {
    thread: ComponentThread,
    stop: Sender<()>,
    /// Receives, once, the outcome of the start-up loads.
    pub started: Receiver<Result<(), RepositoryError>>,
}

/// The orders handle, to give the gRPC service before the thread starts, and the receiving
/// end to start the thread with.
pub fn orders() -> (RepositoryOrders, OrderReceiver) {
    let (orders, receiver) = RepositoryOrders::new();
    (orders, OrderReceiver(receiver))
}

/// The receiving end of the repository's orders.
#[derive(Debug)]
pub struct OrderReceiver(Receiver<Order>);

impl RepositoryThread {
    /// Starts the `repository` thread: it loads what `plan` says should be served at start,
    /// reports on [`RepositoryThread::started`], then takes `orders` until stopped.
    pub fn start(
        plan: RepositoryPlan,
        repository: Arc<Repository>,
        gpu: GpuLoader,
        metrics: Arc<Metrics>,
        orders: OrderReceiver,
        events: Sender<Event>,
    ) -> Result<Self, ShutdownError> {
        let (started_sender, started) = bounded(1);
        let (stop, stop_receiver) = bounded(1);
        let thread = ComponentThread::spawn("repository", events, move || {
            let mut keeper = Keeper {
                plan,
                repository,
                gpu,
                metrics,
                failed: HashMap::new(),
            };
            let outcome = keeper.start_up();
            let failed = outcome.is_err();
            let _ = started_sender.send(outcome);
            if failed {
                return Ok(());
            }
            keeper.run(&orders.0, &stop_receiver);
            Ok(())
        })?;
        Ok(RepositoryThread {
            thread,
            stop,
            started,
        })
    }

    /// Tells the thread to stop once the order it is carrying out is done (a load in
    /// progress ends when the GPU-owner thread stops).
    pub fn ask_to_stop(&self) {
        let _ = self.stop.try_send(());
    }

    /// Waits up to `timeout` for the thread to end (after [`RepositoryThread::ask_to_stop`]).
    pub fn join(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.ask_to_stop();
        self.thread.join_within(timeout)
    }
}

/// The repository thread's state.
struct Keeper {
    plan: RepositoryPlan,
    repository: Arc<Repository>,
    gpu: GpuLoader,
    metrics: Arc<Metrics>,
    /// Versions whose load failed, and their file then: not retried by a poll until it
    /// changes.
    failed: HashMap<(String, u64), Option<FileStamp>>,
}

impl Keeper {
    /// Loads what should be served at start; any failure fails the start.
    fn start_up(&mut self) -> Result<(), RepositoryError> {
        let (known, unreadable) = self.known()?;
        let startup: Vec<String> = match &self.plan.startup_models {
            Some(names) => {
                if let Some(name) = names
                    .iter()
                    .find(|name| !known.contains_key(*name) && !unreadable.contains_key(*name))
                {
                    return Err(RepositoryError::UnknownModel {
                        name: name.clone(),
                        known: format!(
                            "sidecar.startup-models names it, but the repository holds {}",
                            names_of(&known)
                        ),
                    });
                }
                names.clone()
            }
            None => known.keys().cloned().collect(),
        };
        let wanted = |name: &String| {
            self.plan
                .startup_models
                .as_ref()
                .is_none_or(|names| names.contains(name))
        };
        if let Some((name, reason)) = unreadable.iter().find(|(name, _)| wanted(name)) {
            return Err(RepositoryError::Unreadable {
                name: name.clone(),
                reason: reason.clone(),
            });
        }
        for (name, found) in &known {
            self.repository.model_or_new(name);
            if !startup.contains(name) {
                log::info!("model {name:?} is in the repository and not loaded at start (sidecar.startup-models)");
                continue;
            }
            self.bring_to_policy(found, false, false)?;
        }
        self.repository.update_readiness();
        Ok(())
    }

    /// Takes orders until told to stop.
    fn run(&mut self, orders: &Receiver<Order>, stop: &Receiver<()>) {
        let polls = match self.plan.control {
            RepositoryControl::Poll => tick(self.plan.poll_interval),
            _ => never(),
        };
        let lost = self.gpu.lost_versions();
        loop {
            // A stop comes before any order or poll that is ready beside it: once the sidecar
            // drains, no load starts.
            if stop.try_recv().is_ok() {
                break;
            }
            select! {
                recv(stop) -> _ => break,
                recv(orders) -> order => match order {
                    Ok(order) if stop.is_empty() => self.obey(order),
                    Ok(order) => {
                        log::info!("repository: stopping; not carrying out {order:?}");
                        break;
                    }
                    Err(_) => break,
                },
                recv(polls) -> _ => {
                    if stop.is_empty() {
                        self.rescan();
                    }
                }
                recv(lost) -> lost => {
                    if let Ok(lost) = lost {
                        self.version_lost(&lost);
                    }
                }
            }
        }
        log::info!("repository: stopped; no model is loaded or unloaded from now on");
    }

    /// Takes a version whose every instance was on GPUs that failed out of the routing
    /// table: its requests are refused (UNAVAILABLE) rather than queued for nobody, and its
    /// model is NOT_READY unless another version serves.
    fn version_lost(&mut self, lost: &LostVersion) {
        let LostVersion {
            name,
            version,
            device,
        } = lost;
        let Ok(model) = self.repository.model(name) else {
            return;
        };
        let removed = model.versions_mut().remove(*version).is_some();
        if removed {
            model.versions_mut().set_state(
                *version,
                VersionState::OutOfService(format!(
                    "had every instance on GPUs that failed (the last: GPU {device}): place it on others, or restart the sidecar once they are repaired"
                )),
            );
            self.metrics.model_retiring(name, *version);
            log::error!("model {name:?} version {version}: no instance left (GPU {device} failed); taken out of service");
        }
        self.repository.update_readiness();
    }

    fn obey(&mut self, order: Order) {
        match order {
            Order::Load {
                name,
                config,
                answer,
            } => {
                let outcome = self.load(&name, config.as_ref());
                if let Err(e) = &outcome {
                    log::error!("RepositoryModelLoad {name:?}: {e}");
                }
                let _ = answer.send(outcome);
            }
            Order::Unload { name, answer } => {
                let outcome = self.unload(&name);
                if let Err(e) = &outcome {
                    log::warn!("RepositoryModelUnload {name:?}: {e}");
                }
                let _ = answer.send(outcome);
            }
            Order::Rescan => match self.plan.control {
                RepositoryControl::Poll => {
                    log::info!("SIGHUP: rescanning the model repository");
                    self.rescan();
                }
                control => log::info!(
                    "SIGHUP: the model repository is not rescanned, sidecar.repository-control is \"{control}\" (\"poll\" rescans on SIGHUP)"
                ),
            },
        }
    }

    /// `RepositoryModelLoad`: (re)reads the model and brings it to its policy; with a config
    /// override, its settings changed for this load and every version it serves loaded afresh
    /// (the copies serving now run what they hold, then go).
    fn load(&mut self, name: &str, config: Option<&ConfigOverride>) -> Result<(), RepositoryError> {
        if self.plan.control != RepositoryControl::Explicit {
            return Err(RepositoryError::NotExplicit {
                control: self.plan.control,
            });
        }
        let (known, unreadable) = self.known()?;
        if let Some(reason) = unreadable.get(name) {
            return Err(RepositoryError::Unreadable {
                name: name.to_string(),
                reason: reason.clone(),
            });
        }
        let found = known
            .get(name)
            .ok_or_else(|| RepositoryError::UnknownModel {
                name: name.to_string(),
                known: format!("the repository holds {}", names_of(&known)),
            })?;
        let model = self.repository.model_or_new(name);
        let wanted_before = model.versions().wanted();
        let outcome = match config {
            Some(config) => {
                let found = scan::Found {
                    spec: config.apply(found.spec.clone()),
                    versions: found.versions.clone(),
                };
                self.bring_to_policy(&found, false, true)
            }
            None => self.bring_to_policy(found, false, false),
        };
        if outcome.is_err() && !wanted_before {
            // A failed load leaves things as they were: a model that was not served is still
            // not, and does not make the sidecar NOT_READY.
            let mut versions = model.versions_mut();
            if versions.serving().is_empty() {
                versions.set_wanted(false);
            }
        }
        self.repository.update_readiness();
        outcome
    }

    /// `RepositoryModelUnload`: takes every version of the model out of service.
    fn unload(&mut self, name: &str) -> Result<(), RepositoryError> {
        if self.plan.control != RepositoryControl::Explicit {
            return Err(RepositoryError::NotExplicit {
                control: self.plan.control,
            });
        }
        let model = self.repository.model(name).map_err(|e| match e {
            AdmitError::UnknownModel { name, served } => RepositoryError::UnknownModel {
                name,
                known: format!("the repository holds {served}"),
            },
            _ => RepositoryError::Stopped,
        })?;
        self.unload_model(&model);
        self.repository.update_readiness();
        Ok(())
    }

    /// Takes every version of `model` out of service; it is no longer wanted.
    fn unload_model(&mut self, model: &ModelHandle) {
        let retired: Vec<_> = {
            let mut versions = model.versions_mut();
            versions.set_wanted(false);
            let numbers: Vec<u64> = versions.serving().keys().copied().collect();
            numbers
                .into_iter()
                .filter_map(|version| versions.remove(version))
                .collect()
        };
        for version in &retired {
            self.retire(version);
        }
        log::info!(
            "model {:?} unloaded: it takes no new requests",
            model.name()
        );
    }

    /// Poll control: rescans the repository and brings each model to what it holds.
    fn rescan(&mut self) {
        let (known, _) = match self.known() {
            Ok(known) => known,
            Err(e) => {
                log::error!("{e}; what is served stays as it is");
                return;
            }
        };
        for (name, found) in &known {
            self.repository.model_or_new(name);
            if let Err(e) = self.bring_to_policy(found, true, false) {
                log::error!("{e}");
            }
        }
        // A model folder that is gone is unloaded, as Triton does; one that cannot be read
        // serves on as it was.
        for model in self.repository.models() {
            let gone = !known.contains_key(model.name())
                && self.repository.unreadable(model.name()).is_none();
            if gone && model.versions().wanted() {
                log::info!(
                    "model {:?} is no longer in the repository: unloading it",
                    model.name()
                );
                self.unload_model(&model);
            }
        }
        self.repository.update_readiness();
    }
}

/// The models found, by name.
type Known = BTreeMap<String, scan::Found>;

/// "\"a\", \"b\"" of the models found, or "no model".
fn names_of(known: &Known) -> String {
    names(known.keys())
}
