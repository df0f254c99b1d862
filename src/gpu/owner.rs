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

//! A GPU-owner thread's serving loop: its resident instances ([`Served`]), taking the
//! commands of the repository and main threads between executions, choosing the next version
//! with work (round-robin), gathering its batch from the version's queue (which its other
//! instances, on other threads, drain too), retiring and freeing instances, and at the end
//! answering what is left and releasing everything on this thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};

use super::clock::ExecutionClock;
use super::command::{GpuCommand, Interrupters, LostVersion};
use super::cuda::PrimaryContext;
use super::execute::{execute, refuse_job};
use super::lane::Resident;
use super::nvml::NvmlDevice;
use super::served::Served;
use crate::backend::Provider;
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, ThreadMetrics};
use crate::model::batcher;
use crate::model::job::JobFailure;
use crate::serving::DeviceSample;

/// What the owner shares with its handle ([`super::lane::Lane`]) and the other threads.
pub(super) struct Shared<'a> {
    /// The thread's name.
    pub lane: &'a str,
    pub interrupters: &'a Mutex<Interrupters>,
    /// Set when stopping: a failed execution then means it was ended on purpose.
    pub stopping: &'a AtomicBool,
    /// When the execution in progress began.
    pub execution: &'a ExecutionClock,
    /// Cleared when the context is released early.
    pub context_held: &'a AtomicBool,
    /// Set when the thread's device failed.
    pub failed: &'a AtomicBool,
    /// Copies of each version resident, over every thread.
    pub resident: &'a Mutex<Resident>,
    /// Told of a GPU taken out of service.
    pub lifecycle: &'a Lifecycle,
    /// Where a version left without an instance is told.
    pub lost: &'a Sender<LostVersion>,
}

/// The GPU-owner thread's state while serving.
pub(super) struct Owner<'a> {
    /// Declared before `context`: fields drop in order, so the sessions (and their device
    /// memory) are freed before the context is released.
    pub served: Vec<Served>,
    /// Where the round-robin looks first for work.
    next: usize,
    /// Versions adopted so far.
    adopted: u64,
    /// The device the thread serves on, if any (its context may have been let go since).
    device: Option<i32>,
    /// What the thread counts of its executions.
    counters: ThreadMetrics,
    /// Where a freed version's series are removed.
    metrics: Arc<Metrics>,
    pub shared: Shared<'a>,
    pub context: Option<PrimaryContext>,
    /// The device in NVML (kept when the context is let go: its utilisation is any
    /// process's).
    nvml: Option<NvmlDevice>,
}

impl<'a> Owner<'a> {
    /// An owner serving nothing yet, on `context` (none: the CPU).
    pub fn new(metrics: Arc<Metrics>, shared: Shared<'a>, context: Option<PrimaryContext>) -> Self {
        Owner {
            served: Vec::new(),
            next: 0,
            adopted: 0,
            device: context.as_ref().map(|c| c.ordinal),
            counters: metrics.for_thread(
                shared.lane,
                &context
                    .as_ref()
                    .map_or_else(|| "cpu".to_string(), |c| c.ordinal.to_string()),
            ),
            metrics,
            shared,
            nvml: context.as_ref().and_then(PrimaryContext::find_in_nvml),
            context,
        }
    }

    /// Serves `served`, a version the loader made, beside the others, in a moment. With
    /// `fell_back` (`auto` mode found no usable CUDA provider), the context is let go unless
    /// a session is on it.
    pub fn adopt(&mut self, mut served: Served, fell_back: bool) {
        self.adopted += 1;
        served.load_number = self.adopted;
        let on_gpu = |s: &Served| matches!(s.session.provider(), Provider::Cuda(_));
        if fell_back && self.context.is_some() && !self.served.iter().any(on_gpu) {
            self.context = None;
            self.shared.context_held.store(false, Ordering::Relaxed);
            log::info!("released the GPU context: no model runs on it");
        }
        self.shared
            .interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(served.load_number, served.session.interrupter());
        *self
            .shared
            .resident
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((served.model.name.clone(), served.model.version))
            .or_default() += 1;
        log::debug!(
            "model {:?} version {} adopted",
            served.model.name,
            served.model.version
        );
        self.served.push(served);
    }

    /// Serves the queues and carries out `commands` between executions, until told to stop
    /// (or the main thread is gone); then answers what is still queued without running it.
    pub fn run(&mut self, commands: &Receiver<GpuCommand>) {
        loop {
            // Commands first, so that heartbeats are answered between executions under load.
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.obey(command) {
                            return self.refuse_remaining();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        log::warn!("the main thread is gone; releasing the GPU");
                        return self.refuse_remaining();
                    }
                }
            }
            self.free_finished();
            let Some(index) = self.next_with_work() else {
                // Nothing to run: wait for a command or a request.
                let mut select = Select::new();
                select.recv(commands);
                for served in &self.served {
                    select.recv(&served.queue);
                }
                let ready = select.ready();
                if ready > 0 {
                    let served = &mut self.served[ready - 1];
                    match served.queue.try_recv() {
                        Ok(job) => served.pending.push_back(job),
                        // Every handle on the queue is gone: nothing more will come.
                        Err(TryRecvError::Disconnected) => served.retiring = true,
                        Err(TryRecvError::Empty) => {}
                    }
                }
                continue;
            };
            self.next = index + 1;
            self.serve(index, commands);
        }
    }

    /// The index of the next version with a request waiting, in turn after the last one
    /// served.
    fn next_with_work(&self) -> Option<usize> {
        let count = self.served.len();
        (0..count)
            .map(|offset| (self.next + offset) % count)
            .find(|&index| self.served[index].has_work())
    }

    /// Gathers one batch of version `index` and runs it.
    fn serve(&mut self, index: usize, commands: &Receiver<GpuCommand>) {
        let (this, before, after) = split_one(&mut self.served, index);
        // Company is coming when more than this one request arrived since the previous
        // batch began to form: callers are concurrent.
        let counts = this.model.queue_counts();
        let arrived = counts.arrived();
        let company_coming = arrived.saturating_sub(this.arrived_before) >= 2;
        this.arrived_before = arrived;
        let padding = this.model.signature.padding.clone();
        let batch = batcher::gather(
            &mut this.pending,
            &this.queue,
            this.policy,
            padding.as_ref(),
            company_coming,
            refuse_job,
            // A heartbeat, a stop or another model's request does not wait for a batch to
            // fill.
            || !commands.is_empty() || before.iter().chain(after).any(Served::has_work),
        );
        if let Some(requeue) = &this.requeue {
            // The version's other instances may be free: what this one does not run now goes
            // back to the shared queue (behind what arrived meanwhile) instead of waiting
            // here for this instance.
            while let Some(job) = this.pending.pop_front() {
                if let Err(unsent) = requeue.send(job) {
                    this.pending.push_front(unsent.into_inner());
                    break;
                }
            }
        }
        if batch.is_empty() {
            this.model.recorder().set_queue_depth(counts.waiting());
            return;
        }
        let started = std::time::Instant::now();
        let failure = execute(this, batch, &self.shared, self.device);
        self.counters.executed(started.elapsed());
        if let Some(reason) = failure {
            self.fail_device(&reason);
        }
    }

    /// Takes the thread's device out of service after a failure that ends its context: its
    /// instances no longer serve (what they took and did not run goes back to their queues
    /// for the other instances, or, where none is left, is answered UNAVAILABLE and the
    /// version is reported lost), and the failure shows in the log, the metrics and health.
    fn fail_device(&mut self, reason: &str) {
        let Some(device) = self.device else {
            return;
        };
        self.shared.failed.store(true, Ordering::Relaxed);
        self.metrics.record_gpu_failed(device);
        self.shared.lifecycle.mark_device_failed(device, reason);
        log::error!(
            "GPU {device} failed ({reason}): taken out of service; the {} model instance(s) on it no longer serve, their models' other instances do",
            self.served.len()
        );
        for mut served in std::mem::take(&mut self.served) {
            let last = self.forget_copy(&served);
            let (name, version) = (served.model.name.clone(), served.model.version);
            let requeue = served.requeue.take().filter(|_| !last);
            let mut answered = 0;
            for job in served.pending.drain(..) {
                match &requeue {
                    Some(requeue) => {
                        if let Err(unsent) = requeue.send(job) {
                            unsent.into_inner().answer(Err(JobFailure::NoInstance));
                        }
                    }
                    None => {
                        job.answer(Err(JobFailure::NoInstance));
                        answered += 1;
                    }
                }
            }
            if last {
                // Nothing drains its queue any more: what waits there is answered now, and
                // the repository takes the version out of its routing table.
                for job in served.queue.try_iter() {
                    job.answer(Err(JobFailure::NoInstance));
                    answered += 1;
                }
                served.model.recorder().set_queue_depth(0);
                log::error!(
                    "model {name:?} version {version}: no instance serves it any more; {answered} waiting request(s) answered UNAVAILABLE"
                );
                self.metrics.model_freed(&name, version);
                let _ = self.shared.lost.send(LostVersion {
                    name,
                    version,
                    device,
                });
            }
            // The session goes with the device's context still held by this thread.
            drop(served);
        }
        self.next = 0;
    }

    /// Forgets `served` (its interrupter, its count among the resident copies of its
    /// version); true when it was the version's last copy.
    fn forget_copy(&self, served: &Served) -> bool {
        self.shared
            .interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&served.load_number);
        let mut resident = self
            .shared
            .resident
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (served.model.name.clone(), served.model.version);
        let copies = resident.entry(key.clone()).or_insert(1);
        *copies = copies.saturating_sub(1);
        let last = *copies == 0;
        if last {
            resident.remove(&key);
        }
        last
    }

    /// Handles a command; false when the thread is to stop.
    fn obey(&mut self, command: GpuCommand) -> bool {
        match command {
            GpuCommand::Heartbeat(reply) => {
                // Test builds only: makes the thread stop answering for a while.
                #[cfg(feature = "failpoints")]
                crate::failpoint::hold("gpu::heartbeat");
                // A failed device is not asked.
                let sample = self
                    .device
                    .filter(|_| !self.shared.failed.load(Ordering::Relaxed))
                    .map(|ordinal| DeviceSample {
                        ordinal,
                        memory: self.context.as_ref().and_then(PrimaryContext::memory),
                        utilization_percent: self
                            .nvml
                            .as_ref()
                            .and_then(NvmlDevice::utilization_percent),
                    });
                let _ = reply.send(sample);
                true
            }
            GpuCommand::Adopt(served, fell_back, reply) => {
                if self.shared.failed.load(Ordering::Relaxed) {
                    // Sent before the failure was seen: freed here, the loader not answered.
                    drop(served);
                } else {
                    self.adopt(*served, fell_back);
                    let _ = reply.send(());
                }
                true
            }
            GpuCommand::Retire(model) => {
                // Every instance of this copy here; a thread without one has nothing to do.
                for served in self
                    .served
                    .iter_mut()
                    .filter(|served| Arc::ptr_eq(&served.model, &model))
                {
                    log::debug!(
                        "model {:?} version {}: an instance on {} retires",
                        model.name,
                        model.version,
                        self.shared.lane
                    );
                    served.retiring = true;
                }
                true
            }
            GpuCommand::Stop => {
                log::debug!("asked to stop");
                false
            }
        }
    }

    /// Frees the retired versions that have nothing left to run.
    pub fn free_finished(&mut self) {
        while let Some(index) = self.served.iter().position(Served::finished) {
            let served = self.served.remove(index);
            if self.next > index {
                self.next -= 1;
            }
            // Its other instances, and a copy of the version unloaded and loaded again before
            // this one was freed, share its series: they stay for those that serve.
            let last = self.forget_copy(&served);
            let Served { model, session, .. } = served;
            let (name, version) = (&model.name, model.version);
            drop(session);
            if last {
                self.metrics.model_freed(name, version);
            }
            log::info!(
                "model {name:?} version {version}: freed its session on {}",
                self.shared.lane
            );
        }
    }

    /// Answers every job still queued (or pending) UNAVAILABLE, without running it.
    fn refuse_remaining(&mut self) {
        let mut refused = 0;
        for served in &mut self.served {
            for job in served.pending.drain(..).chain(served.queue.try_iter()) {
                job.answer(Err(JobFailure::NotRun));
                refused += 1;
            }
            served.model.recorder().set_queue_depth(0);
        }
        if refused > 0 {
            log::warn!("{refused} queued request(s) answered UNAVAILABLE without running");
        }
    }

    /// Frees the sessions, then the context, logging what was released.
    pub fn release(self) {
        let Owner {
            served, context, ..
        } = self;
        let count = served.len();
        drop(served);
        match context {
            Some(context) => {
                let ordinal = context.ordinal;
                drop(context);
                log::info!(
                    "freed {count} model session(s) and released the context of GPU {ordinal}"
                );
            }
            None => log::info!("freed {count} model session(s)"),
        }
    }
}

/// The element at `index`, and those before and after it.
fn split_one<T>(items: &mut [T], index: usize) -> (&mut T, &[T], &[T]) {
    let (before, rest) = items.split_at_mut(index);
    let (this, after) = rest.split_first_mut().expect("index in range");
    (this, before, after)
}
