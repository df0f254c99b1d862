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

//! The GPU-owner thread: the only code that touches CUDA, and the only module with `unsafe`.
//!
//! The thread decides whether a GPU is used (`sidecar.gpu.mode`), initialises the driver,
//! retains the device's primary context, reads the model and copies it into device memory,
//! where it stays for the life of the process; at shutdown it frees the memory and releases
//! the context on itself. Without a GPU the model stays in host memory instead. CUDA comes
//! through cudarc's raw `result`/`sys` layer, loaded at run time: the binary neither links nor
//! needs libcuda, and `is_culib_present()` is asked before any other call (which would panic
//! without the library).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError};
use cudarc::driver::result::{self as cuda, DriverError};
use cudarc::driver::sys::{self as cuda_sys, CUdevice, CUdevice_attribute, CUdeviceptr};

use crate::config::{GpuConfig, GpuMode};
use crate::model::{self, LoadControl, ModelBytes, ModelError};
use crate::shutdown::{ComponentThread, Event, ShutdownError};

/// Why the GPU or the model could not be brought up; exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `gpu.mode = "required"`, but no usable GPU.
    #[error("sidecar.gpu.mode is \"required\" but no GPU can be used: {reason}")]
    Required { reason: String },
    /// The configured device ordinal does not exist.
    #[error("sidecar.gpu.device is {ordinal} but the driver sees {count} device(s) (ordinals 0 to {})", count - 1)]
    NoSuchDevice { ordinal: i32, count: i32 },
    /// A CUDA driver call failed.
    #[error("CUDA call {call} failed: {source}")]
    Driver {
        call: &'static str,
        source: DriverError,
    },
    /// The model does not fit in the device's free memory.
    #[error("model {} needs {} but GPU {ordinal} has only {} free", path.display(), ByteSize(*needed), ByteSize(*free))]
    ModelTooLarge {
        path: PathBuf,
        ordinal: i32,
        needed: u64,
        free: u64,
    },
    /// The model file could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Attaches the name of the failed call to a driver error.
trait DriverCall<T> {
    fn call(self, call: &'static str) -> Result<T, GpuError>;
}

impl<T> DriverCall<T> for Result<T, DriverError> {
    fn call(self, call: &'static str) -> Result<T, GpuError> {
        self.map_err(|source| GpuError::Driver { call, source })
    }
}

/// The GPU in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: i32,
    pub name: String,
    pub total_memory_bytes: u64,
    /// (major, minor).
    pub compute_capability: (i32, i32),
    /// The CUDA version the driver supports, (major, minor).
    pub driver_cuda_version: (i32, i32),
}

/// Where the model's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLocation {
    DeviceMemory,
    HostMemory,
}

/// The model being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub location: ModelLocation,
    pub load_time: Duration,
}

/// What the sidecar serves once READY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingInfo {
    /// `None` when running without a GPU.
    pub gpu: Option<DeviceInfo>,
    pub model: ModelInfo,
}

impl ServingInfo {
    #[cfg(test)]
    pub fn for_tests() -> Self {
        ServingInfo {
            gpu: None,
            model: ModelInfo {
                path: PathBuf::from("/m"),
                size_bytes: 1,
                sha256: String::new(),
                location: ModelLocation::HostMemory,
                load_time: Duration::ZERO,
            },
        }
    }
}

/// The device's memory as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySample {
    pub ordinal: i32,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// The GPU-owner thread's answer to a heartbeat: a memory sample when a GPU is in use.
pub type HeartbeatReply = Option<MemorySample>;

/// Messages to the GPU-owner thread.
#[derive(Debug)]
enum GpuCommand {
    /// Answer on the channel, to show the thread is not stuck.
    Heartbeat(Sender<HeartbeatReply>),
    /// Free everything and end the thread.
    Stop,
}

/// The main thread's handle on the GPU-owner thread.
#[derive(Debug)]
pub struct GpuOwner {
    thread: ComponentThread,
    commands: Sender<GpuCommand>,
    load: Arc<LoadControl>,
    /// The reply to the last heartbeat, while it is awaited, and when it was sent.
    heartbeat: Option<(Receiver<HeartbeatReply>, Instant)>,
    /// Receives, once, the outcome of start-up.
    pub ready: Receiver<Result<ServingInfo, GpuError>>,
}

impl GpuOwner {
    /// Starts the `gpu-owner` thread, which brings up the GPU per `config`, loads the model at
    /// `model_path` and reports on [`GpuOwner::ready`].
    pub fn start(
        config: &GpuConfig,
        model_path: PathBuf,
        events: Sender<Event>,
    ) -> Result<Self, ShutdownError> {
        let (commands, command_receiver) = unbounded();
        let (ready_sender, ready) = bounded(1);
        let load_control = Arc::new(LoadControl::default());
        let control = Arc::clone(&load_control);
        let config = config.clone();
        let thread = ComponentThread::spawn("gpu-owner", events, move || {
            let resident = match load(&config, model_path, &control) {
                Ok(resident) => resident,
                Err(e) => {
                    let _ = ready_sender.send(Err(e));
                    return Ok(());
                }
            };
            let _ = ready_sender.send(Ok(resident.info()));
            #[cfg(feature = "failpoints")]
            fail::fail_point!("gpu::after_ready");
            // Later issues add inference requests here; for now the thread keeps the context
            // and the model alive, answering heartbeats, until it is told to stop (or the main
            // thread is gone).
            loop {
                match command_receiver.recv() {
                    Ok(GpuCommand::Heartbeat(reply)) => {
                        // Test builds only: makes the thread stop answering for a while.
                        #[cfg(feature = "failpoints")]
                        fail::fail_point!("gpu::heartbeat");
                        let _ = reply.send(resident.memory_sample());
                    }
                    Ok(GpuCommand::Stop) => {
                        log::debug!("asked to stop");
                        break;
                    }
                    Err(_) => {
                        log::warn!("the main thread is gone; releasing the GPU");
                        break;
                    }
                }
            }
            resident.release();
            Ok(())
        })?;
        Ok(GpuOwner {
            thread,
            commands,
            load: load_control,
            heartbeat: None,
            ready,
        })
    }

    /// How far the model load has got: (bytes read, file size if known).
    pub fn load_progress(&self) -> (u64, Option<u64>) {
        (self.load.bytes_read(), self.load.size_hint())
    }

    /// Collects the answer to the previous heartbeat and sends the next one. Returns how long
    /// the thread has left a heartbeat unanswered (zero when it answered) and the memory
    /// sample of its answer. Call only after start-up: until then the thread does not read
    /// its commands.
    pub fn heartbeat(&mut self) -> (Duration, Option<MemorySample>) {
        let mut sample = None;
        if let Some((pending, sent_at)) = &self.heartbeat {
            match pending.try_recv() {
                Ok(reply) => sample = reply,
                // Still waiting: do not pile up heartbeats behind a stuck thread.
                Err(TryRecvError::Empty) => return (sent_at.elapsed(), None),
                // The thread has ended; the main thread hears of that as an event.
                Err(TryRecvError::Disconnected) => {}
            }
        }
        self.heartbeat = None;
        let (reply, pending) = bounded(1);
        if self.commands.send(GpuCommand::Heartbeat(reply)).is_ok() {
            self.heartbeat = Some((pending, Instant::now()));
        }
        (Duration::ZERO, sample)
    }

    /// Tells the thread to free everything and waits up to `timeout` for it to end.
    pub fn stop(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.load.request_stop();
        let _ = self.commands.send(GpuCommand::Stop);
        self.thread.join_within(timeout)
    }
}

/// The model, resident where it is served from, with what it runs on.
enum ResidentModel {
    Device {
        buffer: DeviceBuffer,
        // Declared after `buffer`: fields drop in order, so memory is freed before the
        // context is released.
        context: PrimaryContext,
        info: ServingInfo,
    },
    Host {
        bytes: ModelBytes,
        info: ServingInfo,
    },
}

impl ResidentModel {
    fn info(&self) -> ServingInfo {
        match self {
            ResidentModel::Device { info, .. } | ResidentModel::Host { info, .. } => info.clone(),
        }
    }

    /// The device's memory now, when the model is on a GPU and the driver answers.
    fn memory_sample(&self) -> Option<MemorySample> {
        let ResidentModel::Device { context, .. } = self else {
            return None;
        };
        match cuda::mem_get_info() {
            Ok((free, total)) => Some(MemorySample {
                ordinal: context.ordinal,
                free_bytes: free as u64,
                total_bytes: total as u64,
            }),
            Err(e) => {
                log::warn!("cuMemGetInfo failed: {e}");
                None
            }
        }
    }

    /// Frees the model and the context, logging what was released.
    fn release(self) {
        match self {
            ResidentModel::Device {
                buffer, context, ..
            } => {
                let freed = buffer.bytes;
                drop(buffer);
                let ordinal = context.ordinal;
                drop(context);
                log::info!(
                    "freed {} of device memory and released the context of GPU {ordinal}",
                    ByteSize(freed as u64)
                );
            }
            ResidentModel::Host { bytes, .. } => {
                let freed = bytes.bytes.len();
                drop(bytes);
                log::info!("freed {} of host memory", ByteSize(freed as u64));
            }
        }
    }
}

/// Brings up the GPU (if one is to be used), reads the model and makes it resident.
fn load(
    config: &GpuConfig,
    model_path: PathBuf,
    control: &LoadControl,
) -> Result<ResidentModel, GpuError> {
    let started = Instant::now();
    let context = open_device(config)?;
    if let Some(context) = &context {
        // A regular file tells its size: refuse a model that cannot fit before reading it.
        if let Ok(metadata) = std::fs::metadata(&model_path) {
            if metadata.is_file() {
                check_fits(context, &model_path, metadata.len())?;
            }
        }
    }
    log::info!("loading model {}", model_path.display());
    let bytes = model::read_model(&model_path, control)?;
    let size_bytes = bytes.bytes.len() as u64;
    let Some(context) = context else {
        let info = ServingInfo {
            gpu: None,
            model: ModelInfo {
                path: bytes.path.clone(),
                size_bytes,
                sha256: bytes.sha256.clone(),
                location: ModelLocation::HostMemory,
                load_time: started.elapsed(),
            },
        };
        log::info!(
            "model resident in host memory: {} (sha256 {}) in {:.3} s",
            ByteSize(size_bytes),
            bytes.sha256,
            info.model.load_time.as_secs_f64()
        );
        return Ok(ResidentModel::Host { bytes, info });
    };
    check_fits(&context, &bytes.path, size_bytes)?;
    let buffer = DeviceBuffer::upload(&bytes.bytes)?;
    let info = ServingInfo {
        gpu: Some(context.info.clone()),
        model: ModelInfo {
            path: bytes.path,
            size_bytes,
            sha256: bytes.sha256,
            location: ModelLocation::DeviceMemory,
            load_time: started.elapsed(),
        },
    };
    log::info!(
        "model resident in GPU {} memory: {} (sha256 {}) in {:.3} s",
        context.ordinal,
        ByteSize(size_bytes),
        info.model.sha256,
        info.model.load_time.as_secs_f64()
    );
    // The host copy is dropped here: the device copy is the one served.
    Ok(ResidentModel::Device {
        buffer,
        context,
        info,
    })
}

/// Fails unless `size_bytes` fit in the free memory of the device whose context is current.
fn check_fits(
    context: &PrimaryContext,
    path: &std::path::Path,
    size_bytes: u64,
) -> Result<(), GpuError> {
    let (free, _total) = cuda::mem_get_info().call("cuMemGetInfo")?;
    if size_bytes > free as u64 {
        return Err(GpuError::ModelTooLarge {
            path: path.to_path_buf(),
            ordinal: context.ordinal,
            needed: size_bytes,
            free: free as u64,
        });
    }
    Ok(())
}

/// Opens the configured device and makes its primary context current on this thread, or
/// returns `None` when no GPU is to be used. Fails in `required` mode without a GPU.
fn open_device(config: &GpuConfig) -> Result<Option<PrimaryContext>, GpuError> {
    if config.mode == GpuMode::Off {
        log::info!("sidecar.gpu.mode is \"off\": running without a GPU");
        return Ok(None);
    }
    // SAFETY: only tries to dlopen the driver library under its known names; no CUDA call is
    // made, and nothing is kept loaded if it fails.
    if !unsafe { cuda_sys::is_culib_present() } {
        return no_gpu(
            config.mode,
            "no NVIDIA driver: libcuda.so.1 could not be loaded".to_string(),
        );
    }
    if let Err(e) = cuda::init() {
        return no_gpu(
            config.mode,
            format!("the CUDA driver did not initialise: {e}"),
        );
    }
    let count = cuda::device::get_count().call("cuDeviceGetCount")?;
    if count == 0 {
        return no_gpu(config.mode, "the driver sees no CUDA device".to_string());
    }
    let ordinal = config.device.0;
    if ordinal >= count {
        return Err(GpuError::NoSuchDevice { ordinal, count });
    }
    PrimaryContext::retain(ordinal).map(Some)
}

/// The outcome when no GPU is found: an error in `required` mode, else host mode.
fn no_gpu(mode: GpuMode, reason: String) -> Result<Option<PrimaryContext>, GpuError> {
    if mode == GpuMode::Required {
        return Err(GpuError::Required { reason });
    }
    log::warn!("sidecar.gpu.mode is \"{mode}\": {reason}; running without a GPU, the model stays in host memory");
    Ok(None)
}

/// A retained primary context, current on the GPU-owner thread; released on drop.
struct PrimaryContext {
    device: CUdevice,
    ordinal: i32,
    info: DeviceInfo,
    /// Not `Send`: the context is created, used and released on the GPU-owner thread alone.
    _owner_thread: PhantomData<*const ()>,
}

impl PrimaryContext {
    /// Retains the primary context of device `ordinal`, makes it current and logs the device.
    fn retain(ordinal: i32) -> Result<Self, GpuError> {
        let device = cuda::device::get(ordinal).call("cuDeviceGet")?;
        let name = cuda::device::get_name(device).call("cuDeviceGetName")?;
        // SAFETY: `device` was returned by cuDeviceGet.
        let total_memory = unsafe { cuda::device::total_mem(device) }.call("cuDeviceTotalMem")?;
        let attribute = |attribute: CUdevice_attribute| {
            // SAFETY: `device` was returned by cuDeviceGet; the attribute is a valid enum value.
            unsafe { cuda::device::get_attribute(device, attribute) }.call("cuDeviceGetAttribute")
        };
        let compute_capability = (
            attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let mut version: std::ffi::c_int = 0;
        // SAFETY: the driver writes one int through a pointer to a live local.
        unsafe { cuda_sys::cuDriverGetVersion(&mut version) }
            .result()
            .call("cuDriverGetVersion")?;
        let info = DeviceInfo {
            ordinal,
            name,
            total_memory_bytes: total_memory as u64,
            compute_capability,
            driver_cuda_version: (version / 1000, (version % 1000) / 10),
        };
        // SAFETY: `device` was returned by cuDeviceGet; the matching release is in `Drop`.
        let context =
            unsafe { cuda::primary_ctx::retain(device) }.call("cuDevicePrimaryCtxRetain")?;
        let retained = PrimaryContext {
            device,
            ordinal,
            info,
            _owner_thread: PhantomData,
        };
        // SAFETY: `context` is the live primary context just retained.
        unsafe { cuda::ctx::set_current(context) }.call("cuCtxSetCurrent")?;
        let (free, _) = cuda::mem_get_info().call("cuMemGetInfo")?;
        log::info!("using {}", retained.info);
        log::info!("GPU {ordinal}: {} free", ByteSize(free as u64));
        Ok(retained)
    }
}

impl Drop for PrimaryContext {
    fn drop(&mut self) {
        // SAFETY: `device` came from cuDeviceGet and its primary context was retained once, by
        // `retain`, on this thread.
        if let Err(e) = unsafe { cuda::primary_ctx::release(self.device) } {
            log::warn!("releasing the context of GPU {} failed: {e}", self.ordinal);
        }
    }
}

/// Device memory holding a copy of host bytes; freed on drop.
struct DeviceBuffer {
    pointer: CUdeviceptr,
    bytes: usize,
    _owner_thread: PhantomData<*const ()>,
}

impl DeviceBuffer {
    /// Allocates device memory in the current context and copies `host` into it.
    fn upload(host: &[u8]) -> Result<Self, GpuError> {
        // SAFETY: a context is current on this thread (PrimaryContext::retain made it so) and
        // `host` is not empty (read_model refuses empty models).
        let pointer = unsafe { cuda::malloc_sync(host.len()) }.call("cuMemAlloc")?;
        let buffer = DeviceBuffer {
            pointer,
            bytes: host.len(),
            _owner_thread: PhantomData,
        };
        // SAFETY: `pointer` holds `host.len()` bytes, allocated just above as bytes, and
        // `host` stays borrowed for the whole synchronous copy.
        unsafe { cuda::memcpy_htod_sync(buffer.pointer, host) }.call("cuMemcpyHtoD")?;
        Ok(buffer)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: `pointer` came from cuMemAlloc in the context that is still current on this
        // thread, is freed only here, and no asynchronous work uses it.
        if let Err(e) = unsafe { cuda::free_sync(self.pointer) } {
            log::warn!(
                "freeing {} of device memory failed: {e}",
                ByteSize(self.bytes as u64)
            );
        }
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GPU {}: {}, {} total, compute capability {}.{}, driver supports CUDA {}.{}",
            self.ordinal,
            self.name,
            ByteSize(self.total_memory_bytes),
            self.compute_capability.0,
            self.compute_capability.1,
            self.driver_cuda_version.0,
            self.driver_cuda_version.1
        )
    }
}

/// A byte count shown with a binary unit: "512 B", "1.50 MiB".
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_well() {
        assert_eq!(ByteSize(0).to_string(), "0 B");
        assert_eq!(ByteSize(1023).to_string(), "1023 B");
        assert_eq!(ByteSize(1536).to_string(), "1.50 KiB");
        assert_eq!(ByteSize(80 << 30).to_string(), "80.00 GiB");
    }
}
