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

//! The driver's utilisation of each GPU, through NVML (`libnvidia-ml.so.1`, which the NVIDIA
//! driver installs beside `libcuda.so.1`), loaded at run time like the driver and absent
//! where it is not there. A GPU-owner thread finds its device in NVML by PCI bus id (NVML
//! numbers devices its own way, blind to `CUDA_VISIBLE_DEVICES`) and samples it with the
//! device's memory, at each heartbeat; nothing else calls it.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::sync::OnceLock;

/// NVML's return code for success.
const NVML_SUCCESS: c_int = 0;

/// `nvmlUtilization_t`: percentages of the last sample period.
#[repr(C)]
#[derive(Default)]
struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

type DeviceHandle = *mut c_void;
type GetHandleByPciBusId = unsafe extern "C" fn(*const c_char, *mut DeviceHandle) -> c_int;
type GetUtilizationRates = unsafe extern "C" fn(DeviceHandle, *mut Utilization) -> c_int;

/// The loaded library and the two calls the sidecar makes.
struct Library {
    _library: libloading::Library,
    handle_by_pci_bus_id: GetHandleByPciBusId,
    utilization_rates: GetUtilizationRates,
}

/// NVML, initialised once per process; `None` where it cannot be loaded or initialised.
fn library() -> Option<&'static Library> {
    static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| match load() {
            Ok(library) => Some(library),
            Err(reason) => {
                log::info!("GPU utilisation is not reported: {reason}");
                None
            }
        })
        .as_ref()
}

fn load() -> Result<Library, String> {
    // SAFETY: loading NVML runs no initialiser of ours; the library is the driver's own and
    // stays loaded for the life of the process (kept in a static).
    let library = unsafe { libloading::Library::new("libnvidia-ml.so.1") }
        .map_err(|e| format!("libnvidia-ml.so.1 could not be loaded ({e})"))?;
    // SAFETY: the symbols have these C signatures in every NVML since CUDA 6 (nvml.h); the
    // function pointers are used only while `library`, which owns them, is alive.
    let (init, handle_by_pci_bus_id, utilization_rates) = unsafe {
        let init = *library
            .get::<unsafe extern "C" fn() -> c_int>(b"nvmlInit_v2\0")
            .map_err(|e| format!("nvmlInit_v2: {e}"))?;
        let by_bus = *library
            .get::<GetHandleByPciBusId>(b"nvmlDeviceGetHandleByPciBusId_v2\0")
            .map_err(|e| format!("nvmlDeviceGetHandleByPciBusId_v2: {e}"))?;
        let rates = *library
            .get::<GetUtilizationRates>(b"nvmlDeviceGetUtilizationRates\0")
            .map_err(|e| format!("nvmlDeviceGetUtilizationRates: {e}"))?;
        (init, by_bus, rates)
    };
    // SAFETY: nvmlInit_v2 takes no arguments; it may be called from any thread.
    let status = unsafe { init() };
    if status != NVML_SUCCESS {
        return Err(format!("nvmlInit_v2 returned {status}"));
    }
    Ok(Library {
        _library: library,
        handle_by_pci_bus_id,
        utilization_rates,
    })
}

/// One device in NVML, sampled by its GPU-owner thread.
pub(super) struct NvmlDevice {
    library: &'static Library,
    handle: DeviceHandle,
}

impl NvmlDevice {
    /// The device at PCI bus id `bus_id` (as `cuDeviceGetPCIBusId` writes it), if NVML is
    /// there and knows it.
    pub(super) fn find(bus_id: &str) -> Option<Self> {
        let library = library()?;
        let bus_id = CString::new(bus_id).ok()?;
        let mut handle: DeviceHandle = std::ptr::null_mut();
        // SAFETY: `bus_id` is a NUL-terminated string and `handle` a live local that NVML
        // writes one handle into.
        let status = unsafe { (library.handle_by_pci_bus_id)(bus_id.as_ptr(), &mut handle) };
        if status != NVML_SUCCESS {
            log::info!(
                "GPU utilisation of {bus_id:?} is not reported: NVML does not find it ({status})"
            );
            return None;
        }
        Some(NvmlDevice { library, handle })
    }

    /// The share of the last sample period in which a kernel ran on the device, in percent.
    pub(super) fn utilization_percent(&self) -> Option<u32> {
        let mut rates = Utilization::default();
        // SAFETY: `handle` came from NVML for this device and stays valid while NVML is
        // initialised (for the process's life); `rates` is a live local NVML writes into.
        let status = unsafe { (self.library.utilization_rates)(self.handle, &mut rates) };
        (status == NVML_SUCCESS).then_some(rates.gpu.min(100))
    }
}
