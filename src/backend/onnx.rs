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

//! ONNX Runtime as a [`Backend`]: loading the runtime's shared library at run time (nothing is
//! linked or downloaded at build time; on the GPU-owner thread), creating sessions with the
//! CUDA execution provider on the device whose primary context is current on the calling
//! thread (the loader's), or on the CPU, reading the model's signature, and running one
//! execution on tensors of raw bytes (on the GPU-owner thread).
//! `gpu-sidecar-bench --runtime-only` uses the same session in process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::{RunOptions, Session as OrtSession};
use ort::value::DynValue;

use super::positions;
use super::values::{from_value, output_specs, tensor_specs, to_value};
use super::zipmap::{self, ClassKeys};
use super::{Backend, Interrupter, LoadError, Provider, RunError, Session, SessionOptions};
use crate::config::{ArenaExtendStrategy, ConvAlgoSearch};
use crate::tensor::{DataType, Signature, Tensor};

#[cfg(not(target_endian = "little"))]
compile_error!(
    "tensors are exchanged as little-endian bytes: only little-endian targets are supported"
);

/// ONNX Runtime, once its library is loaded: creates [`OnnxSession`]s.
#[derive(Debug, Clone, Copy)]
pub struct OnnxRuntime(());

/// Where a release tarball (and an install into a Flink distribution) puts the runtime,
/// relative to the folder of the `gpu-sidecar` binary.
const SHIPPED_LIBRARY: &str = "../lib/onnxruntime/libonnxruntime.so";

/// Loads ONNX Runtime's library: `configured` if set, else `ORT_DYLIB_PATH`, else the one
/// shipped beside the binary (`../lib/onnxruntime/`), else `libonnxruntime.so` through the
/// loader's search path. Returns the runtime, where it came from and its version. Fails
/// naming every place tried and how to install the runtime.
pub fn load_library(configured: Option<&Path>) -> Result<(OnnxRuntime, String, String), LoadError> {
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if let Some(path) = configured {
        candidates.push((
            format!("sidecar.model.runtime-library = {}", path.display()),
            path.to_path_buf(),
        ));
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        candidates.push((format!("ORT_DYLIB_PATH = {}", path.display()), path));
    }
    let shipped = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(SHIPPED_LIBRARY)))
        .filter(|path| path.exists());
    if let Some(path) = shipped {
        let path = path.canonicalize().unwrap_or(path);
        candidates.push((
            format!("the runtime beside the binary, {}", path.display()),
            path,
        ));
    }
    candidates.push((
        "libonnxruntime.so on the loader's path".to_string(),
        PathBuf::from("libonnxruntime.so"),
    ));
    if ENVIRONMENT.get().is_some() {
        return Ok((
            OnnxRuntime(()),
            "the library loaded earlier".to_string(),
            runtime_version(None),
        ));
    }
    let mut tried = Vec::new();
    for (source, path) in candidates {
        match ort::init_from(&path) {
            Ok(builder) => {
                let environment = builder
                    .with_name("gpu-sidecar")
                    .with_logger(Arc::new(forward_runtime_log))
                    .build()
                    .map_err(|e| LoadError::Environment(e.to_string()))?;
                let _ = ENVIRONMENT.set(environment);
                if !tried.is_empty() {
                    log::warn!("ONNX Runtime: {}", tried.join("; "));
                }
                return Ok((OnnxRuntime(()), source, version_of(&path)));
            }
            Err(e) => tried.push(format!("{source}: {e}")),
        }
    }
    Err(LoadError::Library {
        tried: tried.join("; "),
    })
}

/// The process's one ONNX Runtime environment, created by [`load_library`].
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Logs a message of the runtime's through this process's logger.
fn forward_runtime_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    let level = match level {
        LogLevel::Fatal | LogLevel::Error => log::Level::Error,
        // An output whose declared first dimension is not its real one (probed at load, and
        // said once then) would warn at every execution of a batched model.
        LogLevel::Warning if location.contains("VerifyOutputSizes") => log::Level::Debug,
        LogLevel::Warning => log::Level::Warn,
        LogLevel::Info => log::Level::Debug,
        LogLevel::Verbose => log::Level::Trace,
    };
    log::log!(level, "onnxruntime {category} {location}: {message}");
}

/// The loaded runtime's version ("1.32.0"): from the library's versioned file name (what
/// `libonnxruntime.so` links to), else from its build string.
fn version_of(path: &Path) -> String {
    let resolved = std::fs::canonicalize(path).ok();
    let from_name = resolved
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix("libonnxruntime.so."))
        .map(str::to_string);
    runtime_version(from_name)
}

fn runtime_version(from_name: Option<String>) -> String {
    from_name.unwrap_or_else(|| {
        let info = ort::info();
        info.split(", ")
            .find_map(|part| part.strip_prefix("git-branch=rel-"))
            .map_or_else(|| format!("({info})"), str::to_string)
    })
}

/// A model loaded into ONNX Runtime, ready to run.
pub struct OnnxSession {
    session: OrtSession,
    /// Shared with [`Interrupter`]s: lets another thread end the execution in progress.
    run_options: Arc<RunOptions>,
    signature: Arc<Signature>,
    /// Per output, in order: the classes of a ZipMap output (served as a tensor), else none.
    zipmaps: Vec<Option<ClassKeys>>,
    provider: Provider,
    path: PathBuf,
}

impl Backend for OnnxRuntime {
    fn load(
        &self,
        path: &Path,
        model: &[u8],
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, LoadError> {
        Ok(Box::new(OnnxSession::create(path, model, options)?))
    }
}

impl OnnxSession {
    /// Creates the session from the model's bytes; `path` is for messages. With the CUDA
    /// provider, failure to set it up is a [`LoadError::CudaProvider`].
    pub fn create(path: &Path, model: &[u8], options: &SessionOptions) -> Result<Self, LoadError> {
        let session_error = |message: String| LoadError::Session {
            path: path.to_path_buf(),
            message,
        };
        let environment = ENVIRONMENT.get().ok_or_else(|| {
            LoadError::Environment("the runtime library is not loaded".to_string())
        })?;
        let builder_error =
            |e: ort::Error<ort::session::builder::SessionBuilder>| session_error(e.to_string());
        let mut builder = OrtSession::builder(environment)
            .map_err(|e| session_error(e.to_string()))?
            .with_intra_threads(options.intra_op_threads)
            .map_err(builder_error)?
            // Idle runtime threads sleep instead of spinning: the gRPC threads share the cores.
            .with_intra_op_spinning(false)
            .map_err(builder_error)?
            .with_inter_op_spinning(false)
            .map_err(builder_error)?
            // Memory patterns are planned per input shape and kept for each one seen: with
            // token sequences every batch is a new shape, and they only grow the memory held
            // (the arena serves fixed shapes as well without them).
            .with_memory_pattern(false)
            .map_err(builder_error)?;
        // The model is handed over as bytes; its external data files (if it has any) are read
        // by the runtime from the model's folder, as their locations are relative to it.
        if let Some(folder) = path
            .parent()
            .and_then(Path::to_str)
            .filter(|f| !f.is_empty())
        {
            builder = builder
                .with_config_entry(
                    "session.model_external_initializers_file_folder_path",
                    folder,
                )
                .map_err(builder_error)?;
        }
        if let Provider::Cuda(ordinal) = options.provider {
            let settings = &options.cuda;
            let mut cuda = ort::ep::CUDA::default()
                .with_device_id(ordinal)
                .with_arena_extend_strategy(match settings.arena_extend_strategy {
                    ArenaExtendStrategy::SameAsRequested => {
                        ort::ep::ArenaExtendStrategy::SameAsRequested
                    }
                    ArenaExtendStrategy::NextPowerOfTwo => {
                        ort::ep::ArenaExtendStrategy::NextPowerOfTwo
                    }
                })
                .with_conv_algorithm_search(match settings.cudnn_conv_algo_search {
                    ConvAlgoSearch::Exhaustive => ort::ep::cuda::ConvAlgorithmSearch::Exhaustive,
                    ConvAlgoSearch::Heuristic => ort::ep::cuda::ConvAlgorithmSearch::Heuristic,
                    ConvAlgoSearch::Default => ort::ep::cuda::ConvAlgorithmSearch::Default,
                });
            if let Some(limit) = settings.gpu_memory_limit {
                cuda = cuda.with_memory_limit(usize::try_from(limit).unwrap_or(usize::MAX));
            }
            let cuda = cuda.build().error_on_failure();
            builder =
                builder
                    .with_execution_providers([cuda])
                    .map_err(|e| LoadError::CudaProvider {
                        ordinal,
                        message: e.to_string(),
                    })?;
        }
        let session = builder
            .commit_from_memory(model)
            .map_err(|e| session_error(e.to_string()))?;
        let inputs = tensor_specs(path, "input", session.inputs())?;
        if let Some(spec) = inputs.iter().find(|spec| !spec.datatype.is_served()) {
            return Err(LoadError::UnservedInput {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                datatype: spec.datatype,
                served: DataType::SERVED.map(DataType::name).join(", "),
            });
        }
        let (outputs, zipmaps) = output_specs(path, model, session.outputs())?;
        let dynamic_shapes = inputs
            .iter()
            .any(|spec| spec.dims.iter().skip(1).any(|&d| d == -1));
        let signature = Signature {
            inputs,
            outputs,
            max_batch_size: options.max_batch_size,
            padding: None,
            max_positions: positions::position_rows(model),
        };
        let mut run_options = RunOptions::new().map_err(|e| session_error(e.to_string()))?;
        if dynamic_shapes {
            // Each execution's shape is new: hand back to the system what the arena grew for
            // it, so that the memory held stays that of the largest execution, not of all.
            let arenas = match options.provider {
                Provider::Cuda(ordinal) => format!("cpu:0;gpu:{ordinal}"),
                Provider::Cpu => "cpu:0".to_string(),
            };
            run_options
                .set("memory.enable_memory_arena_shrinkage", arenas)
                .map_err(|e| session_error(e.to_string()))?;
        }
        let mut created = OnnxSession {
            session,
            run_options: Arc::new(run_options),
            signature: Arc::new(signature),
            zipmaps,
            provider: options.provider,
            path: path.to_path_buf(),
        };
        if options.max_batch_size > 0 {
            created.decide_batching();
        }
        Ok(created)
    }

    /// Decides whether requests can be batched: every input needs a dynamic first dimension.
    /// An output that declares a fixed one (as onnxmltools' LightGBM declares its `label`
    /// `[1]`) is probed: the model runs once on 2 rows of zeros, and if every output then
    /// has 2 rows, the model is batched after all, those outputs' first dimension served as
    /// dynamic. Says why at INFO, or at WARN where batching is off for an output.
    fn decide_batching(&mut self) {
        let path = self.path.display().to_string();
        let mut signature = (*self.signature).clone();
        if let Some(input) = signature
            .inputs
            .iter()
            .find(|s| s.dims.first() != Some(&-1))
        {
            log::info!(
                "model {path}: input {:?} has the fixed shape {:?}, so requests are not batched (each runs alone)",
                input.name,
                input.dims
            );
            signature.max_batch_size = 0;
            self.signature = Arc::new(signature);
            return;
        }
        let fixed: Vec<usize> = (0..signature.outputs.len())
            .filter(|&i| signature.outputs[i].dims.first() != Some(&-1))
            .collect();
        if fixed.is_empty() {
            return;
        }
        const PROBE_ROWS: i64 = 2;
        let probe = signature.zero_inputs(PROBE_ROWS as usize);
        let outcome = self.run(probe);
        for &index in &fixed {
            let spec = &signature.outputs[index];
            let rows = outcome
                .as_ref()
                .ok()
                .and_then(|outputs| outputs[index].shape.first().copied());
            if rows == Some(PROBE_ROWS) {
                log::info!(
                    "model {path}: output {:?} declares the shape {:?} but gives one row per input row (probed with {PROBE_ROWS} rows): requests are batched, its first dimension served as -1",
                    spec.name,
                    spec.dims
                );
            } else {
                let gave = match &outcome {
                    Ok(outputs) => format!("gave the shape {:?}", outputs[index].shape),
                    Err(e) => format!("could not run: {e}"),
                };
                log::warn!(
                    "model {path}: output {:?} declares the shape {:?} and {gave} for {PROBE_ROWS} input rows, so requests are not batched (each runs alone); batching needs a dynamic first dimension on every input and output",
                    spec.name,
                    spec.dims
                );
                signature.max_batch_size = 0;
                self.signature = Arc::new(signature);
                return;
            }
        }
        for index in fixed {
            signature.outputs[index].dims[0] = -1;
        }
        self.signature = Arc::new(signature);
    }
}

impl Session for OnnxSession {
    fn signature(&self) -> &Arc<Signature> {
        &self.signature
    }

    fn provider(&self) -> Provider {
        self.provider
    }

    fn interrupter(&self) -> Interrupter {
        let run_options = Arc::clone(&self.run_options);
        Interrupter::new(move || {
            if let Err(e) = run_options.terminate() {
                log::warn!("cannot stop the execution in progress: {e}");
            }
        })
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for (spec, tensor) in self.signature.inputs.iter().zip(inputs) {
            values.push((spec.name.clone(), to_value(spec, tensor)?));
        }
        let outputs = self
            .session
            .run_with_options(values, &*self.run_options)
            .map_err(|e| RunError::Runtime {
                message: e.to_string(),
            })?;
        self.signature
            .outputs
            .iter()
            .zip(&self.zipmaps)
            .map(|(spec, zipmap)| {
                if !spec.datatype.is_served() {
                    // Never asked for (requests for it are refused): nothing to convert.
                    return Ok(Tensor::default());
                }
                let value =
                    outputs
                        .get(spec.name.as_str())
                        .ok_or_else(|| RunError::MissingOutput {
                            name: spec.name.clone(),
                        })?;
                match zipmap {
                    Some(classes) => {
                        zipmap::to_tensor(classes, value).map_err(|message| RunError::Output {
                            name: spec.name.clone(),
                            message,
                        })
                    }
                    None => from_value(spec, value),
                }
            })
            .collect()
    }
}

impl fmt::Debug for OnnxSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxSession")
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}
