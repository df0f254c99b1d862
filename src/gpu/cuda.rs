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

//! The CUDA driver, on the GPU-owner thread: deciding whether a GPU is used
//! (`sidecar.gpu.mode`), initialising the driver, retaining the device's primary context and
//! making it current (ONNX Runtime's CUDA execution provider then runs in that same context),
//! reading the device's memory, and releasing the context on this thread at the end. The
//! loader (the repository thread) makes the same primary context current on itself while it
//! builds a session ([`LoaderContext`]), holding a reference of its own so that a shutdown
//! cannot destroy the context under a load. CUDA
//! comes through cudarc's raw `result`/`sys` layer, loaded at run time: the binary neither
//! links nor needs libcuda, and `is_culib_present()` is asked before any other call (which
//! would panic without the library). All of the crate's `unsafe` is here.

use std::marker::PhantomData;

use cudarc::driver::result::{self as cuda, DriverError};
use cudarc::driver::sys::{self as cuda_sys, CUdevice, CUdevice_attribute};

use super::error::GpuError;
use super::nvml::NvmlDevice;
use crate::config::{DeviceSelection, GpuConfig, GpuMode};
use crate::serving::{ByteSize, DeviceInfo};

/// Attaches the name of the failed call to a driver error.
pub(super) trait DriverCall<T> {
    fn call(self, call: &'static str) -> Result<T, GpuError>;
}

impl<T> DriverCall<T> for Result<T, DriverError> {
    fn call(self, call: &'static str) -> Result<T, GpuError> {
        self.map_err(|source| GpuError::Driver { call, source })
    }
}

/// The device's free and total memory, from the context current on this thread.
pub(super) fn memory_info() -> Result<(u64, u64), GpuError> {
    let (free, total) = cuda::mem_get_info().call("cuMemGetInfo")?;
    Ok((free as u64, total as u64))
}

/// Finds the devices to serve on: initialises the driver and resolves `sidecar.gpu.devices`
/// (or `device`) against what it shows; `None` when no GPU is to be used. Fails in
/// `required` mode without a GPU, and for an ordinal the driver lacks.
pub(super) fn find_devices(config: &GpuConfig) -> Result<Option<Vec<i32>>, GpuError> {
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
    let (key, ordinals) = match config.selection() {
        DeviceSelection::All => ("sidecar.gpu.devices", (0..count).collect()),
        DeviceSelection::Listed(list) if config.devices.is_some() => ("sidecar.gpu.devices", list),
        DeviceSelection::Listed(list) => ("sidecar.gpu.device", list),
    };
    if let Some(&ordinal) = ordinals.iter().find(|&&ordinal| ordinal >= count) {
        return Err(GpuError::NoSuchDevice {
            key,
            ordinal,
            count,
        });
    }
    Ok(Some(ordinals))
}

/// The device's PCI bus id (`0000:3b:00.0`), by which NVML finds it.
fn pci_bus_id(device: CUdevice) -> Option<String> {
    let mut buffer = [0 as std::ffi::c_char; 32];
    // SAFETY: the driver writes a NUL-terminated string of at most `len` bytes into the live
    // buffer; `device` was returned by cuDeviceGet.
    let status = unsafe { cuda_sys::cuDeviceGetPCIBusId(buffer.as_mut_ptr(), 32, device) };
    if status != cuda_sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string (zeroed beyond it).
    let id = unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) };
    Some(id.to_string_lossy().into_owned())
}

/// The outcome when no GPU is found: an error in `required` mode, else host mode.
fn no_gpu(mode: GpuMode, reason: String) -> Result<Option<Vec<i32>>, GpuError> {
    if mode == GpuMode::Required {
        return Err(GpuError::Required { reason });
    }
    log::warn!("sidecar.gpu.mode is \"{mode}\": {reason}; running without a GPU, the model stays in host memory");
    Ok(None)
}

/// A retained primary context, current on its device's GPU-owner thread; released on drop.
pub(super) struct PrimaryContext {
    device: CUdevice,
    pub(super) ordinal: i32,
    pub(super) info: DeviceInfo,
    /// Not `Send`: the context is created, used and released on the GPU-owner thread alone.
    _owner_thread: PhantomData<*const ()>,
}

impl PrimaryContext {
    /// Retains the primary context of device `ordinal`, makes it current and logs the device.
    pub(super) fn retain(ordinal: i32) -> Result<Self, GpuError> {
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

/// The device's primary context made current on the loader's thread while it builds a
/// session: one more reference to the context the GPU-owner thread made (not a new one),
/// released on drop, on the same thread.
pub(super) struct LoaderContext {
    device: CUdevice,
    context: cuda_sys::CUcontext,
    pub(super) ordinal: i32,
    /// Not `Send`: made current on, and released from, one thread.
    _loader_thread: PhantomData<*const ()>,
}

impl LoaderContext {
    /// Retains device `ordinal`'s primary context and makes it current on this thread.
    pub(super) fn bind(ordinal: i32) -> Result<Self, GpuError> {
        let device = cuda::device::get(ordinal).call("cuDeviceGet")?;
        // SAFETY: `device` was returned by cuDeviceGet; the matching release is in `Drop`.
        let context =
            unsafe { cuda::primary_ctx::retain(device) }.call("cuDevicePrimaryCtxRetain")?;
        let bound = LoaderContext {
            device,
            context,
            ordinal,
            _loader_thread: PhantomData,
        };
        // SAFETY: `context` is the live primary context just retained.
        unsafe { cuda::ctx::set_current(context) }.call("cuCtxSetCurrent")?;
        Ok(bound)
    }
}

impl LoaderContext {
    /// Makes the context current on this thread again (after another device's was).
    pub(super) fn make_current(&self) -> Result<(), GpuError> {
        // SAFETY: `context` is the primary context this value retained, live until its drop.
        unsafe { cuda::ctx::set_current(self.context) }.call("cuCtxSetCurrent")
    }
}

impl Drop for LoaderContext {
    fn drop(&mut self) {
        // SAFETY: a null context is allowed and makes no context current on this thread;
        // `device` came from cuDeviceGet and its primary context was retained once, by `bind`,
        // on this thread.
        unsafe {
            let _ = cuda_sys::cuCtxSetCurrent(std::ptr::null_mut());
            if let Err(e) = cuda::primary_ctx::release(self.device) {
                log::warn!(
                    "releasing the loader's reference to the context of GPU {} failed: {e}",
                    self.ordinal
                );
            }
        }
    }
}

impl PrimaryContext {
    /// The device's memory now, if the driver answers.
    pub(super) fn memory(&self) -> Option<(u64, u64)> {
        match memory_info() {
            Ok(memory) => Some(memory),
            Err(e) => {
                log::warn!("{e}");
                None
            }
        }
    }

    /// The device in NVML, for its utilisation; `None` without NVML.
    pub(super) fn find_in_nvml(&self) -> Option<NvmlDevice> {
        pci_bus_id(self.device).and_then(|bus_id| NvmlDevice::find(&bus_id))
    }
}
