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

//! What the other threads send the GPU-owner thread: its commands (heartbeats, versions to
//! adopt, retirements, the stop), and the [`LoadOrder`] of one model version that the loader
//! takes; plain data that the handles and the owner's loop share.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::served::Served;
use crate::backend::Interrupter;
use crate::config::{BatchingConfig, CudaOptions, Placement, ThreadCount, Warmup};
use crate::model::text::TextStage;
use crate::model::ModelVersion;
use crate::serving::DeviceSample;

/// What ends the execution in progress of each resident session, by its load's number.
pub type Interrupters = std::collections::BTreeMap<u64, Interrupter>;

/// The GPU-owner thread's answer to a heartbeat: a memory sample when a GPU is in use.
pub type HeartbeatReply = Option<DeviceSample>;

/// Messages to a GPU-owner thread.
pub enum GpuCommand {
    /// Answer on the channel, to show the thread is not stuck.
    Heartbeat(Sender<HeartbeatReply>),
    /// Serve an instance of a version the loader made (the flag: `auto` mode found no usable CUDA
    /// provider, so the context may go); answers once it takes requests.
    Adopt(Box<Served>, bool, Sender<()>),
    /// Serve this copy of a version's queue until nothing of it waits or runs, then free it.
    Retire(Arc<ModelVersion>),
    /// Answer what is queued without running it, free everything and end the thread.
    Stop,
}

/// A model version left without an instance: every one of its instances was on GPUs that
/// failed. The repository takes it out of its routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostVersion {
    pub name: String,
    pub version: u64,
    /// The GPU whose failure took its last instance.
    pub device: i32,
}

/// One model version to make resident, as configured.
#[derive(Debug)]
pub struct LoadOrder {
    pub name: String,
    pub version: u64,
    pub path: PathBuf,
    pub intra_op_threads: Option<ThreadCount>,
    pub batching: BatchingConfig,
    /// The tokenizer, when the model serves text in: bound to the model as it is built.
    pub text: Option<TextStage>,
    /// ONNX Runtime's CUDA provider options, when it runs on a GPU.
    pub cuda: CudaOptions,
    /// Its devices and instances.
    pub placement: Placement,
    /// What its warm-up execution runs.
    pub warmup: Warmup,
}

impl std::fmt::Debug for GpuCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuCommand::Heartbeat(_) => f.write_str("Heartbeat"),
            GpuCommand::Adopt(served, _, _) => {
                write!(f, "Adopt({} {})", served.model.name, served.model.version)
            }
            GpuCommand::Retire(model) => write!(f, "Retire({} {})", model.name, model.version),
            GpuCommand::Stop => f.write_str("Stop"),
        }
    }
}
