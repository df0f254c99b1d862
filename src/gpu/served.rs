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

//! A resident model version as the GPU-owner thread holds it: the shared version, its session,
//! its queue's receiving end and what its batches wait on.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::Session;
use crate::model::batcher::BatchPolicy;
use crate::model::job::Job;
use crate::model::ModelVersion;

/// A resident model version, with its session and its queue's receiving end, on the
/// GPU-owner thread.
pub struct Served {
    /// The version, as everyone shares it.
    pub model: Arc<ModelVersion>,
    /// Which load made it resident: a version unloaded and loaded again before it was freed
    /// is resident twice for a while, once retiring.
    pub load_number: u64,
    pub session: Box<dyn Session>,
    pub queue: Receiver<Job>,
    /// Where jobs taken and not run now go back, when the version has other instances.
    pub requeue: Option<Sender<Job>>,
    pub policy: BatchPolicy,
    /// Jobs taken off the queue that have not run yet, oldest first.
    pub pending: VecDeque<Job>,
    /// Requests ever submitted, as the previous batch began to form.
    pub arrived_before: u64,
    /// Taken out of the routing table: freed once nothing of it waits.
    pub retiring: bool,
}

impl Served {
    /// Whether a request waits to run.
    pub fn has_work(&self) -> bool {
        !self.pending.is_empty() || !self.queue.is_empty()
    }

    /// Whether it may be freed: retired, and nothing of it waits or runs.
    pub fn finished(&self) -> bool {
        self.retiring && self.pending.is_empty() && self.model.queue_counts().waiting() == 0
    }
}
