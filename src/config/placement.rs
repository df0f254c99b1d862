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

//! Where models run: `sidecar.gpu.devices` (the devices the sidecar serves on, one
//! GPU-owner thread each) and each model's `devices` and `instances` (Triton's instance
//! groups: `gpus` and `count`). Plain values, checked as they are read.

use std::fmt;

use serde::Deserialize;

/// The most instances of a model per device (or on the CPU).
pub const MAX_INSTANCES: u32 = 64;

/// `sidecar.gpu.devices`: the devices the sidecar serves on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum DeviceSelection {
    /// Every device the driver shows (after `CUDA_VISIBLE_DEVICES`).
    All,
    /// These ordinals.
    Listed(Vec<i32>),
}

impl TryFrom<toml::Value> for DeviceSelection {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        match &value {
            toml::Value::String(s) if s == "all" => Ok(DeviceSelection::All),
            toml::Value::Array(items) => ordinals(items).map(DeviceSelection::Listed),
            _ => Err(format!(
                "{value} is not a device selection: use \"all\" or a list of device ordinals such as [0, 1]"
            )),
        }
    }
}

impl fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelection::All => f.write_str("\"all\""),
            DeviceSelection::Listed(list) => write!(f, "{list:?}"),
        }
    }
}

/// A model's `devices`: a non-empty list of distinct device ordinals.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct DeviceList(pub Vec<i32>);

impl TryFrom<toml::Value> for DeviceList {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        match &value {
            toml::Value::Array(items) => ordinals(items).map(DeviceList),
            _ => Err(format!(
                "{value} is not a list of devices: write the ordinals, such as [0, 1]"
            )),
        }
    }
}

/// A non-empty list of distinct ordinals, each 0 to `i32::MAX`.
fn ordinals(items: &[toml::Value]) -> Result<Vec<i32>, String> {
    if items.is_empty() {
        return Err(
            "the list of devices is empty: name at least one ordinal, such as [0]".to_string(),
        );
    }
    let mut list = Vec::with_capacity(items.len());
    for item in items {
        let ordinal = item
            .as_integer()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                format!(
                    "{item} is not a device ordinal: use whole numbers 0 to {}",
                    i32::MAX
                )
            })?;
        if list.contains(&ordinal) {
            return Err(format!("device {ordinal} is listed twice: list each once"));
        }
        list.push(ordinal);
    }
    Ok(list)
}

/// `instances`: how many instances of a model run on each of its devices (on the CPU when
/// there is no GPU), 1 to [`MAX_INSTANCES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct InstanceCount(pub u32);

impl TryFrom<i64> for InstanceCount {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_INSTANCES).contains(n))
            .map(InstanceCount)
            .ok_or_else(|| format!("{n} instances is out of range (1 to {MAX_INSTANCES})"))
    }
}

/// Where a model runs, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its devices; unset: every device of the sidecar.
    pub devices: Option<Vec<i32>>,
    /// Instances on each of them (on the CPU without a GPU).
    pub instances: u32,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            devices: None,
            instances: 1,
        }
    }
}

impl Placement {
    /// From a model table's keys.
    pub fn from_keys(devices: Option<&DeviceList>, instances: Option<InstanceCount>) -> Self {
        Placement {
            devices: devices.map(|list| list.0.clone()),
            instances: instances.map_or(1, |count| count.0),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.devices {
            Some(devices) => write!(
                f,
                "{} instance(s) on each of devices {devices:?}",
                self.instances
            ),
            None => write!(
                f,
                "{} instance(s) on each of the sidecar's devices",
                self.instances
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(text: &str) -> Result<DeviceSelection, String> {
        let value: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
        DeviceSelection::try_from(value["v"].clone())
    }

    #[test]
    fn devices_are_all_or_a_list_of_distinct_ordinals() {
        assert_eq!(selection("\"all\""), Ok(DeviceSelection::All));
        assert_eq!(selection("[1, 0]"), Ok(DeviceSelection::Listed(vec![1, 0])));
        assert!(selection("[]").unwrap_err().contains("is empty"));
        assert!(selection("[0, 0]").unwrap_err().contains("listed twice"));
        assert!(selection("[-1]")
            .unwrap_err()
            .contains("not a device ordinal"));
        assert!(selection("\"most\"")
            .unwrap_err()
            .contains("use \"all\" or a list"));
        assert!(InstanceCount::try_from(0).unwrap_err().contains("1 to 64"));
        assert_eq!(InstanceCount::try_from(4), Ok(InstanceCount(4)));
    }
}
