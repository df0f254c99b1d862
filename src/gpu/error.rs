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

//! Why the GPU, the runtime or a model version could not be brought up: [`GpuError`], what
//! the GPU-owner thread reports to the main thread and the repository, and whether a model is
//! one the sidecar cannot serve (exit code 2).

use std::path::PathBuf;

use cudarc::driver::result::DriverError;

use crate::backend::LoadError;
use crate::model::file::ModelError;
use crate::model::text::TextError;
use crate::model::warmup::WarmupError;
use crate::serving::ByteSize;
use crate::shutdown::ShutdownError;

/// Why the GPU or a model could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `gpu.mode = "required"`, but no usable GPU.
    #[error("sidecar.gpu.mode is \"required\" but no GPU can be used: {reason}")]
    Required { reason: String },
    /// The configured device ordinal does not exist.
    #[error("{key} {} {ordinal} but the driver sees {count} device(s) (ordinals 0 to {}): name devices it shows (after CUDA_VISIBLE_DEVICES), or use \"all\"", if key.ends_with('s') { "lists" } else { "is" }, count - 1)]
    NoSuchDevice {
        key: &'static str,
        ordinal: i32,
        count: i32,
    },
    /// A model names a device the sidecar does not serve on.
    #[error("model {name:?} names device {ordinal} in its devices, but the sidecar serves on {served:?}: add the device to sidecar.gpu.devices, or leave the model's devices out to use all of them")]
    NotServedDevice {
        name: String,
        ordinal: i32,
        served: Vec<i32>,
    },
    /// Every device a model is placed on is out of service.
    #[error("model {name:?} runs on GPUs {devices:?}, and each of them failed and is out of service: place it on others (its devices), or restart the sidecar once they are repaired")]
    DevicesFailed { name: String, devices: Vec<i32> },
    /// A GPU-owner thread could not be started.
    #[error(transparent)]
    Thread(#[from] ShutdownError),
    /// A CUDA driver call failed.
    #[error("CUDA call {call} failed: {source}")]
    Driver {
        call: &'static str,
        source: DriverError,
    },
    /// The model does not fit in the device's free memory.
    #[error("model {} needs {} but GPU {ordinal} has only {} free: free memory (unload a model) or use a larger device", path.display(), ByteSize(*needed), ByteSize(*free))]
    ModelTooLarge {
        path: PathBuf,
        ordinal: i32,
        needed: u64,
        free: u64,
    },
    /// The model file could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// ONNX Runtime could not be loaded or refused the model.
    #[error(transparent)]
    Runtime(#[from] LoadError),
    /// The model's tokenizer does not fit the model.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The model's warm-up inputs could not be made.
    #[error("model {}: {source}", path.display())]
    Warmup { path: PathBuf, source: WarmupError },
    /// The thread stopped (shutdown) before the order was carried out.
    #[error("the GPU-owner thread stopped before the model was loaded")]
    Stopped,
}

impl GpuError {
    /// Whether the model itself cannot be served (not a model, or of types the sidecar does
    /// not serve): a matter of configuration, which no restart fixes.
    pub fn is_unservable_model(&self) -> bool {
        match self {
            GpuError::Model(e) => e.is_not_a_model(),
            GpuError::Runtime(e) => e.is_model_refusal(),
            GpuError::Text(_) | GpuError::NotServedDevice { .. } | GpuError::Warmup { .. } => true,
            _ => false,
        }
    }
}
