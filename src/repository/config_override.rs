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

//! `RepositoryModelLoad`'s `config` parameter, Triton's config override on load: the JSON of
//! a Triton ModelConfig (as `tritonclient`'s `load_model(name, config=...)` sends it, or as
//! `get_model_config(as_json=True)` gives it back). The fields the sidecar has are applied to
//! the model's settings for that load: `max_batch_size`, `dynamic_batching` (the queue delay,
//! size and default timeout), `version_policy` and one `instance_group` (`count`, `gpus`).
//! Parsed on the gRPC handler, so that a malformed override is refused before anything
//! changes; applied on the repository thread.

use std::time::Duration;

use serde_json::{Map, Value};

use super::RepositoryError;
use crate::config::{
    ModelSpec, VersionPolicy, MAX_BATCH_SIZE_LIMIT, MAX_INSTANCES, MAX_QUEUE_DELAY_LIMIT,
    MAX_QUEUE_SIZE_LIMIT,
};

/// Fields of a Triton ModelConfig that the sidecar accepts and leaves as the model has them:
/// its inputs and outputs, what it says of itself, its warm-up and parameters (class labels,
/// CUDA options), and batching hints it has no use for.
const KEPT: [&str; 6] = [
    "input",
    "output",
    "parameters",
    "model_warmup",
    "default_model_filename",
    "optimization",
];

/// What a config override changes, each field only when given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOverride {
    max_batch_size: Option<u32>,
    max_queue_delay: Option<Duration>,
    max_queue_size: Option<u32>,
    default_timeout: Option<Duration>,
    version_policy: Option<VersionPolicy>,
    instances: Option<u32>,
    devices: Option<Vec<i32>>,
}

impl ConfigOverride {
    /// Reads the override of model `name` from its JSON `text`. Fails, naming the field and
    /// what to do, on JSON that is not a ModelConfig the sidecar can apply.
    pub fn parse(name: &str, text: &str) -> Result<Self, RepositoryError> {
        let refused = |reason: String| RepositoryError::ConfigOverride {
            name: name.to_string(),
            reason,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| refused(format!("is not JSON: {e}")))?;
        let Value::Object(config) = value else {
            return Err(refused(
                "is not a JSON object (a Triton ModelConfig)".to_string(),
            ));
        };
        let mut parsed = ConfigOverride::default();
        for (field, value) in &config {
            match field.as_str() {
                "name" if value.as_str() == Some(name) => {}
                "name" => return Err(refused(format!("names model {value}, not {name:?}"))),
                "platform" if value.as_str() == Some("onnxruntime_onnx") => {}
                "backend" if value.as_str() == Some("onnxruntime") => {}
                "platform" | "backend" => {
                    return Err(refused(format!(
                        "asks for {field} {value}: this sidecar serves ONNX models with ONNX Runtime (platform \"onnxruntime_onnx\", backend \"onnxruntime\")"
                    )))
                }
                "max_batch_size" => {
                    parsed.max_batch_size =
                        Some(number(value, field, 0, MAX_BATCH_SIZE_LIMIT.into()).map_err(refused)? as u32)
                }
                "dynamic_batching" => parsed.dynamic_batching(value).map_err(refused)?,
                "version_policy" => {
                    parsed.version_policy = Some(version_policy(value).map_err(refused)?)
                }
                "instance_group" => parsed.instance_group(value).map_err(refused)?,
                kept if KEPT.contains(&kept) => {}
                other => {
                    return Err(refused(format!(
                        "sets {other:?}, which this sidecar does not apply: it applies max_batch_size, dynamic_batching, version_policy and instance_group"
                    )))
                }
            }
        }
        Ok(parsed)
    }

    /// `dynamic_batching`: the queue delay, and the default queue policy's size and timeout.
    fn dynamic_batching(&mut self, value: &Value) -> Result<(), String> {
        let batching = object(value, "dynamic_batching")?;
        for (field, value) in batching {
            match field.as_str() {
                "max_queue_delay_microseconds" => {
                    let limit = MAX_QUEUE_DELAY_LIMIT.as_micros() as i64;
                    self.max_queue_delay =
                        Some(Duration::from_micros(number(value, field, 0, limit)? as u64));
                }
                "default_queue_policy" => {
                    for (field, value) in object(value, "default_queue_policy")? {
                        match field.as_str() {
                            "max_queue_size" => {
                                self.max_queue_size = Some(
                                    number(value, field, 1, MAX_QUEUE_SIZE_LIMIT.into())? as u32,
                                )
                            }
                            "default_timeout_microseconds" => {
                                let micros = number(value, field, 0, 3_600_000_000)?;
                                self.default_timeout =
                                    (micros > 0).then(|| Duration::from_micros(micros as u64));
                            }
                            "timeout_action" | "allow_timeout_override" => {}
                            other => {
                                return Err(format!(
                                    "sets default_queue_policy.{other}, which this sidecar does not apply"
                                ))
                            }
                        }
                    }
                }
                "preferred_batch_size" | "preserve_ordering" => {}
                other => {
                    return Err(format!(
                        "sets dynamic_batching.{other}, which this sidecar does not apply"
                    ))
                }
            }
        }
        Ok(())
    }

    /// `instance_group`: one group, its `count` and `gpus`.
    fn instance_group(&mut self, value: &Value) -> Result<(), String> {
        let groups = value
            .as_array()
            .ok_or("has an instance_group that is not a list")?;
        let [group] = groups.as_slice() else {
            return Err(format!(
                "has {} instance groups: this sidecar places a model with one (count instances on each of its gpus)",
                groups.len()
            ));
        };
        for (field, value) in object(group, "instance_group")? {
            match field.as_str() {
                "count" => {
                    self.instances = Some(number(value, field, 1, MAX_INSTANCES.into())? as u32)
                }
                "gpus" => {
                    let gpus = value.as_array().ok_or("has gpus that are not a list")?;
                    let gpus = gpus
                        .iter()
                        .map(|gpu| number(gpu, "gpus", 0, i32::MAX.into()).map(|n| n as i32))
                        .collect::<Result<Vec<_>, _>>()?;
                    self.devices = (!gpus.is_empty()).then_some(gpus);
                }
                "name" | "kind" => {}
                other => {
                    return Err(format!(
                        "sets instance_group.{other}, which this sidecar does not apply"
                    ))
                }
            }
        }
        Ok(())
    }

    /// `spec` with the override applied.
    pub fn apply(&self, mut spec: ModelSpec) -> ModelSpec {
        let batching = &mut spec.batching;
        if let Some(rows) = self.max_batch_size {
            batching.max_batch_size = rows;
        }
        if let Some(delay) = self.max_queue_delay {
            batching.max_queue_delay = delay;
        }
        if let Some(size) = self.max_queue_size {
            batching.max_queue_size = size;
        }
        if self.default_timeout.is_some() {
            batching.default_timeout = self.default_timeout;
        }
        if let Some(policy) = &self.version_policy {
            spec.version_policy = policy.clone();
        }
        if let Some(instances) = self.instances {
            spec.placement.instances = instances;
        }
        if let Some(devices) = &self.devices {
            spec.placement.devices = Some(devices.clone());
        }
        spec
    }
}

/// `value` as a JSON object, or why not.
fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("has a {field} that is not an object"))
}

/// `value` as a whole number from `min` to `max`: a JSON number, or a string of one (as
/// protobuf's JSON writes 64-bit integers).
fn number(value: &Value, field: &str, min: i64, max: i64) -> Result<i64, String> {
    let n = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("has {field} {value}, not a whole number from {min} to {max}"))
}

/// Triton's `version_policy`: `{"all": {}}`, `{"latest": {"num_versions": N}}` or
/// `{"specific": {"versions": [..]}}`.
fn version_policy(value: &Value) -> Result<VersionPolicy, String> {
    let policy = object(value, "version_policy")?;
    match (policy.get("all"), policy.get("latest"), policy.get("specific")) {
        (Some(_), None, None) => Ok(VersionPolicy::All),
        (None, Some(latest), None) => {
            let n = latest.get("num_versions").unwrap_or(&Value::Null);
            Ok(VersionPolicy::Latest(
                number(n, "version_policy.latest.num_versions", 1, 1_000_000)? as u32,
            ))
        }
        (None, None, Some(specific)) => {
            let versions = specific
                .get("versions")
                .and_then(Value::as_array)
                .filter(|versions| !versions.is_empty())
                .ok_or("has a version_policy.specific without versions")?;
            versions
                .iter()
                .map(|v| number(v, "version_policy.specific.versions", 1, i64::MAX).map(|n| n as u64))
                .collect::<Result<Vec<_>, _>>()
                .map(VersionPolicy::Specific)
        }
        _ => Err(format!(
            "has version_policy {value}: use {{\"all\": {{}}}}, {{\"latest\": {{\"num_versions\": N}}}} or {{\"specific\": {{\"versions\": [..]}}}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigOverride, String> {
        ConfigOverride::parse("simple", text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_fields_the_sidecar_has_are_read_and_others_refused_by_name() {
        let parsed = parse(
            r#"{"name": "simple", "backend": "onnxruntime", "max_batch_size": 16,
                "dynamic_batching": {"max_queue_delay_microseconds": "500",
                    "default_queue_policy": {"max_queue_size": 8}},
                "version_policy": {"specific": {"versions": [2]}},
                "instance_group": [{"count": 2, "kind": "KIND_CPU"}], "input": []}"#,
        )
        .unwrap();
        assert_eq!(parsed.max_batch_size, Some(16));
        assert_eq!(parsed.max_queue_delay, Some(Duration::from_micros(500)));
        assert_eq!(parsed.max_queue_size, Some(8));
        assert_eq!(
            parsed.version_policy,
            Some(VersionPolicy::Specific(vec![2]))
        );
        assert_eq!(parsed.instances, Some(2));
        for (text, words) in [
            ("{\"backend\":", "is not JSON"),
            ("[1]", "is not a JSON object"),
            ("{\"name\": \"other\"}", "names model \"other\""),
            (
                "{\"backend\": \"tensorflow\"}",
                "asks for backend \"tensorflow\"",
            ),
            ("{\"max_batch_size\": -1}", "has max_batch_size -1"),
            ("{\"sequence_batching\": {}}", "sets \"sequence_batching\""),
            (
                "{\"version_policy\": {\"specific\": {\"versions\": [0]}}}",
                "versions 0",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(
                error.starts_with("failed to load 'simple': its config override")
                    && error.contains(words),
                "{text}: {error}"
            );
        }
    }
}
