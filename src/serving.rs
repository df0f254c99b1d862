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

//! What the GPU-owner thread reports: the device the models run on, and where a model
//! version's weights live. Plain data (a leaf): the GPU-owner thread builds it, the main
//! thread records the device in the lifecycle, and the gRPC handlers, the metrics and the
//! health endpoint read it.

use std::fmt;

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

/// Where the model's weights live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLocation {
    /// In GPU memory: the session runs on ONNX Runtime's CUDA execution provider.
    DeviceMemory,
    /// In host memory: the session runs on the CPU.
    HostMemory,
}

/// What the models run on, once the GPU-owner thread has brought it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingInfo {
    /// The GPUs served on, one GPU-owner thread each; none when running without a GPU.
    pub gpus: Vec<DeviceInfo>,
    /// The ONNX Runtime version serving every model.
    pub runtime_version: String,
}

impl ServingInfo {
    #[cfg(test)]
    pub fn for_tests() -> Self {
        ServingInfo {
            gpus: Vec::new(),
            runtime_version: "test".to_string(),
        }
    }
}

/// The device's memory as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSample {
    pub ordinal: i32,
    /// Free and total bytes, while the thread holds the device's context.
    pub memory: Option<(u64, u64)>,
    /// The driver's utilisation (NVML, any process's work), in percent, where NVML is there.
    pub utilization_percent: Option<u32>,
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
