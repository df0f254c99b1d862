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

//! Model backends: what the loader and the GPU-owner thread need of a runtime, and nothing
//! more. A [`Backend`] loads a model's bytes into a [`Session`] (on the loader's thread); a
//! session describes its signature and runs one batch of tensors at a time (on the GPU-owner
//! thread, once adopted). [`external`] finds a model's external data files.
//! [`onnx`] is ONNX Runtime's; a second backend (or a fake in tests) is one more file.

pub mod external;
pub mod onnx;
mod positions;
mod values;
mod zipmap;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::CudaOptions;
use crate::serving::ModelLocation;
use crate::tensor::{DataType, Signature, Tensor};

/// How to get ONNX Runtime when none is configured: the `onnxruntime` wheel's library.
const INSTALL_HINT: &str = "install ONNX Runtime and point sidecar.model.runtime-library (or ORT_DYLIB_PATH) at its libonnxruntime.so: the `onnxruntime` PyPI wheel carries the CPU library and `onnxruntime-gpu` the CUDA one, in onnxruntime/capi/ (`bin/dev.sh runtime` fetches the CPU one)";

/// The runtime could not be loaded, or the model not served by it; exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No ONNX Runtime library could be loaded.
    #[error("cannot load ONNX Runtime: {tried}; {INSTALL_HINT}")]
    Library { tried: String },
    /// The runtime refused the model or its options.
    #[error("ONNX Runtime cannot load model {}: {message}", path.display())]
    Session { path: PathBuf, message: String },
    /// The CUDA execution provider could not be set up.
    #[error(
        "the CUDA execution provider of ONNX Runtime is not usable on GPU {ordinal}: {message}"
    )]
    CudaProvider { ordinal: i32, message: String },
    /// The runtime's process-wide environment could not be created.
    #[error("cannot set up ONNX Runtime: {0}")]
    Environment(String),
    /// An input or output of the model is of a value type that is not served.
    #[error("model {}: {what} {name:?} is a {kind}, which is not served: inputs must be tensors, outputs tensors or a classifier's ZipMap (Sequence<Map<int64 or string, float>>); export a tensor instead (skl2onnx: options={{id(model): {{'zipmap': False}}}}; onnxmltools: zipmap=False)", path.display())]
    NotATensor {
        path: PathBuf,
        what: &'static str,
        name: String,
        kind: String,
    },
    /// An input's element type is not one the sidecar serves.
    #[error("model {}: input {name:?} is {datatype}, which is not served yet (served: {served})", path.display())]
    UnservedInput {
        path: PathBuf,
        name: String,
        datatype: DataType,
        served: String,
    },
    /// The warm-up execution failed.
    #[error("the warm-up execution of model {} failed: {source}; give the model a warmup it accepts (\"zeros\", \"random\", or a file of sample data per input)", path.display())]
    WarmUp { path: PathBuf, source: RunError },
}

impl LoadError {
    /// Whether the runtime refused the model itself (not ONNX, unsupported types), rather than
    /// failing to load or to reach the device.
    pub fn is_model_refusal(&self) -> bool {
        matches!(
            self,
            LoadError::Session { .. }
                | LoadError::NotATensor { .. }
                | LoadError::UnservedInput { .. }
                | LoadError::WarmUp { .. }
        )
    }
}

/// Why one execution produced no outputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// An input could not be handed to the runtime.
    #[error("{message}")]
    Input { message: String },
    /// The runtime failed while running: its own message.
    #[error("{message}")]
    Runtime { message: String },
    /// The runtime did not return an output the model declares.
    #[error("the runtime returned no output {name:?}")]
    MissingOutput { name: String },
    /// An output could not be read back.
    #[error("output {name:?}: {message}")]
    Output { name: String, message: String },
    /// An output does not have one row per row of the batch, so it cannot be split.
    #[error("model output {index} has shape {shape:?}, not the {rows} rows of the batch")]
    OutputRows {
        index: usize,
        shape: Vec<i64>,
        rows: usize,
    },
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// The CUDA execution provider on this device ordinal.
    Cuda(i32),
    Cpu,
}

impl Provider {
    /// Where the weights of a session on this provider live.
    pub fn location(self) -> ModelLocation {
        match self {
            Provider::Cuda(_) => ModelLocation::DeviceMemory,
            Provider::Cpu => ModelLocation::HostMemory,
        }
    }
}

/// What a session is created with.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub provider: Provider,
    pub intra_op_threads: usize,
    /// The configured `max-batch-size`; 0 turns batching off.
    pub max_batch_size: u32,
    /// The CUDA provider's options, with [`Provider::Cuda`].
    pub cuda: CudaOptions,
}

/// A runtime that turns a model's bytes into sessions.
pub trait Backend: Send + Sync {
    /// Creates a session from the model's bytes where `options` say; `path` is for messages.
    /// With the CUDA provider, failure to set it up is a [`LoadError::CudaProvider`].
    fn load(
        &self,
        path: &Path,
        model: &[u8],
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, LoadError>;
}

/// A model loaded into a backend, ready to run batches.
pub trait Session: fmt::Debug + Send {
    /// Its inputs and outputs, and how many rows one execution takes.
    fn signature(&self) -> &Arc<Signature>;

    /// Where it runs.
    fn provider(&self) -> Provider;

    /// Runs once on `inputs` (one per model input, in order) and returns every output in the
    /// model's order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError>;

    /// A handle that ends this session's executions from another thread.
    fn interrupter(&self) -> Interrupter;
}

/// Ends the execution in progress, and every later one, of a [`Session`]; used by the main
/// thread when the grace period is over.
#[derive(Clone)]
pub struct Interrupter(Arc<dyn Fn() + Send + Sync>);

impl Interrupter {
    pub fn new(interrupt: impl Fn() + Send + Sync + 'static) -> Self {
        Interrupter(Arc::new(interrupt))
    }

    pub fn interrupt(&self) {
        (self.0)()
    }
}

impl fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interrupter")
    }
}
