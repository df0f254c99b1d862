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

//! Start-up on the main thread: signal thread, health endpoint (NOT_READY), gRPC bound and
//! serving, the GPU-owner thread bringing up the device and the runtime, then the repository
//! thread loading what is served at start; READY once it has, said in the log, the metrics
//! and to systemd.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{never, select, tick};

use super::error::Error;
use super::notify::{load_status, LOAD_PROGRESS_ALLOWANCE};
use super::{thread_died, Supervisor, STARTUP_CHECK_INTERVAL};
use crate::config::{Config, ModelSource};
use crate::gpu::{GpuError, GpuOwner};
use crate::health::HealthServer;
use crate::repository::control::{self, RepositoryPlan, RepositoryThread};
use crate::repository::Repository;
use crate::rpc::inference::InferenceService;
use crate::rpc::RpcServer;
use crate::serving::{ByteSize, ServingInfo};
use crate::shutdown::{signal_name, Event, SignalThread};

impl Supervisor<'_> {
    /// Starts every component, waits for the GPU thread to bring up the device and the
    /// repository thread to load what should be served at start, telling systemd how the
    /// load goes. Returns `true` if a signal asked to stop before READY.
    pub(super) fn start_up(&mut self) -> Result<bool, Error> {
        let config = self.config;
        self.components.signals = Some(SignalThread::start(self.events.clone())?);
        self.components.health = Some(HealthServer::start(
            &config.health,
            Arc::clone(&self.lifecycle),
            Arc::clone(&self.metrics),
            self.events.clone(),
        )?);
        let repository = Arc::new(Repository::new(
            config.repository_control,
            Arc::clone(&self.lifecycle),
        ));
        let (orders, order_receiver) = control::orders();
        self.orders = Some(orders.clone());
        let inference = InferenceService::new(
            Arc::clone(&self.lifecycle),
            Arc::clone(&self.metrics),
            Arc::clone(&repository),
            orders,
            config.rpc.max_message_size(),
            config.rpc.watch_unary_cancellation(),
        );
        let rpc = RpcServer::start(
            &config.rpc,
            Arc::clone(&self.lifecycle),
            Arc::clone(&self.metrics),
            inference,
        )?;
        self.components.rpc = Some(rpc);
        let gpu = GpuOwner::start(
            config.gpu.clone(),
            config.runtime_library().map(Path::to_path_buf),
            Arc::clone(&self.metrics),
            Arc::clone(&self.lifecycle),
            self.events.clone(),
        )?;
        let mut gpu_ready = gpu.ready.clone();
        let gpu = self.components.gpu.insert(gpu);
        let loader = gpu.loader();
        let mut order_receiver = Some(order_receiver);
        let mut serving: Option<ServingInfo> = None;
        let mut repository_started = never();
        let what = load_subject(config);
        let progress_checks = tick(STARTUP_CHECK_INTERVAL);
        let mut last_bytes_read = 0;
        loop {
            select! {
                recv(gpu_ready) -> outcome => {
                    serving = Some(gpu_outcome(outcome.ok())?);
                    gpu_ready = never();
                    let thread = RepositoryThread::start(
                        RepositoryPlan::from_config(config),
                        Arc::clone(&repository),
                        loader.clone(),
                        Arc::clone(&self.metrics),
                        order_receiver.take().expect("started once"),
                        self.events.clone(),
                    )?;
                    repository_started = thread.started.clone();
                    self.components.repository = Some(thread);
                }
                recv(repository_started) -> outcome => {
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => return Err(Error::ThreadDied {
                            name: "repository".to_string(),
                            reason: "ended before reporting start-up".to_string(),
                        }),
                    }
                    let mut serving = serving.take().expect("the GPU is up before models load");
                    // `auto` fell back to the CPU and released the contexts.
                    let in_use = gpu.devices_in_use();
                    serving.gpus.retain(|device| in_use.contains(&device.ordinal));
                    self.declare_ready(serving, &repository);
                    return Ok(false);
                }
                recv(self.event_receiver) -> event => match event {
                    Ok(Event::Signal(signal)) => {
                        log::info!("{} during start-up: stopping", signal_name(signal));
                        return Ok(true);
                    }
                    Ok(Event::Reload) => log::info!("SIGHUP during start-up: ignored"),
                    // Each of these threads reports its own failure before it ends.
                    Ok(Event::ThreadExited { name, failure }) if name.starts_with("gpu-owner") => {
                        return match gpu_ready.try_recv() {
                            Ok(Err(e)) => Err(e.into()),
                            _ => Err(thread_died(&self.lifecycle, name, failure)),
                        };
                    }
                    Ok(Event::ThreadExited { name, failure }) if name == "repository" => {
                        return match repository_started.try_recv() {
                            Ok(Err(e)) => Err(e.into()),
                            _ => Err(thread_died(&self.lifecycle, name, failure)),
                        };
                    }
                    Ok(Event::ThreadExited { name, failure }) => {
                        return Err(thread_died(&self.lifecycle, name, failure));
                    }
                    Err(_) => unreachable!("the sidecar holds a sender"),
                },
                recv(progress_checks) -> _ => {
                    let (bytes_read, size) = gpu.load_progress();
                    self.notifier.status(&load_status(&what, bytes_read, size));
                    // Only a load that moves earns more time; a stuck one meets the unit's
                    // start timeout.
                    if bytes_read > last_bytes_read {
                        self.notifier.extend_timeout(LOAD_PROGRESS_ALLOWANCE);
                        last_bytes_read = bytes_read;
                    }
                }
            }
        }
    }

    /// Records READY and says so: log, metrics, systemd.
    fn declare_ready(&mut self, serving: ServingInfo, repository: &Repository) {
        let startup = self.started.elapsed();
        // "model \"m\" 1 from /path (4.00 KiB)" for each version serving.
        let models: Vec<String> = repository
            .models()
            .iter()
            .flat_map(|model| {
                let versions = model.versions();
                versions
                    .serving()
                    .values()
                    .map(|version| {
                        let loaded = version;
                        format!(
                            "model {:?} {} from {} ({})",
                            loaded.name,
                            loaded.version,
                            loaded.path.display(),
                            ByteSize(loaded.size_bytes)
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let status = format!(
            "serving {} with ONNX Runtime {} on {}, on {}",
            match models.len() {
                0 => "no model yet".to_string(),
                1 => models[0].clone(),
                n => format!("{n} model versions: {}", models.join(", ")),
            },
            serving.runtime_version,
            match serving.gpus.as_slice() {
                [] => "the CPU, no GPU".to_string(),
                [device] => format!("GPU {}", device.ordinal),
                devices => format!(
                    "GPUs {}",
                    devices
                        .iter()
                        .map(|d| d.ordinal.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            self.components.rpc.as_ref().map_or("", |rpc| rpc.bound())
        );
        self.metrics.record_ready(startup, &serving);
        self.lifecycle.set_ready(serving);
        log::info!("READY in {} ms: {status}", startup.as_millis());
        self.notifier.ready(&status);
    }
}

/// What start-up loads, for systemd's status line: the one model file, or how many.
fn load_subject(config: &Config) -> String {
    match (&config.repository, config.model_specs().as_slice()) {
        (Some(folder), _) => format!("the models of {}", folder.display()),
        (None, [spec]) => match &spec.source {
            ModelSource::File(path) | ModelSource::Folder(path) => {
                format!("model {}", path.display())
            }
        },
        (None, specs) => format!("{} models", specs.len()),
    }
}

/// The GPU thread's start-up report, or an error if it ended without one.
fn gpu_outcome(outcome: Option<Result<ServingInfo, GpuError>>) -> Result<ServingInfo, Error> {
    match outcome {
        Some(Ok(info)) => Ok(info),
        Some(Err(e)) => Err(e.into()),
        None => Err(Error::ThreadDied {
            name: "gpu-owner".to_string(),
            reason: "ended before reporting start-up".to_string(),
        }),
    }
}
