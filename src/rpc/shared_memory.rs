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

//! Triton's system shared memory extension, on the completion-queue threads: regions of
//! `/dev/shm` that a client on the same host registers (`SystemSharedMemoryRegister`, by
//! name, key, offset and size), inputs read from a region instead of the message, and outputs
//! written into one. A region's file is opened once, at registration, and read and written
//! with positioned reads and writes (no mapping): an input's bytes are read once, into the
//! request, as if they had come in `raw_input_contents`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::proto::grpc_service as pb;
use pb::infer_parameter::Parameter_choice;

/// Where POSIX shared memory objects live.
const SHM_FOLDER: &str = "/dev/shm";

/// The request parameters that place a tensor in a region.
const REGION: &str = "shared_memory_region";
const OFFSET: &str = "shared_memory_offset";
const BYTE_SIZE: &str = "shared_memory_byte_size";

/// Why a region could not be registered, read or written. The messages begin with Triton's
/// words where it has some.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedMemoryError {
    #[error("Unable to find system shared memory region: '{name}': register it first (SystemSharedMemoryRegister)")]
    NotFound { name: String },
    #[error("shared memory region '{name}' already in manager: unregister it first, or register under another name")]
    AlreadyRegistered { name: String },
    #[error("system shared memory is for clients on this host, and this call comes from {peer}: use the Unix socket or a loopback address, or send the tensors in the request")]
    NotLocal { peer: String },
    #[error("Unable to open system shared memory region: '{key}' ({reason}): create it (shm_open, or tritonclient's create_shared_memory_region) before registering it")]
    Open { key: String, reason: String },
    #[error("Invalid offset + byte size for shared memory region: '{name}': {detail}")]
    Bounds { name: String, detail: String },
    #[error("{tensor} {name:?}: {reason}")]
    Parameters {
        tensor: &'static str,
        name: String,
        reason: String,
    },
    #[error("shared memory region '{region}' ({byte_size} bytes) is too small for output {output:?} of {needed} bytes: register a larger region")]
    TooSmall {
        region: String,
        byte_size: u64,
        output: String,
        needed: usize,
    },
    #[error("system shared memory region '{name}': {reason}")]
    Io { name: String, reason: String },
    #[error("the inputs in shared memory come to {size} bytes or more, over sidecar.rpc.max-message-size ({limit} bytes): send fewer rows per request, or raise the limit")]
    TooLarge { size: u64, limit: usize },
}

/// One registered region: its file, open, and the window of it the client named.
#[derive(Debug)]
struct Region {
    key: String,
    offset: u64,
    byte_size: u64,
    file: File,
}

/// The regions registered, by name.
#[derive(Debug, Default)]
pub struct SharedMemory {
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
}

/// Outputs a request wants written into regions: (output, region's name, region, offset in
/// it, bytes there).
#[derive(Debug, Default)]
pub struct OutputPlacements(Vec<(String, String, Arc<Region>, u64, u64)>);

impl SharedMemory {
    fn regions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `SystemSharedMemoryRegister` from `peer` (gRPC's address of the caller): opens
    /// `/dev/shm/KEY` and checks that `offset` and `byte_size` lie within it. Only a caller on
    /// this host (the Unix socket, a loopback address) may register a region.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
        peer: &str,
    ) -> Result<(), SharedMemoryError> {
        if !is_local(peer) {
            return Err(SharedMemoryError::NotLocal {
                peer: peer.to_string(),
            });
        }
        if self.regions().contains_key(name) {
            return Err(SharedMemoryError::AlreadyRegistered {
                name: name.to_string(),
            });
        }
        let path = PathBuf::from(SHM_FOLDER).join(key.trim_start_matches('/'));
        let open = |reason: String| SharedMemoryError::Open {
            key: key.to_string(),
            reason,
        };
        if key.trim_start_matches('/').contains('/') || key.trim_start_matches('/').is_empty() {
            return Err(open(
                "a key names one object of /dev/shm, such as \"/input_simple\"".to_string(),
            ));
        }
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| open(e.to_string()))?;
        let size = file.metadata().map_err(|e| open(e.to_string()))?.len();
        if offset.checked_add(byte_size).is_none_or(|end| end > size) || byte_size == 0 {
            return Err(SharedMemoryError::Bounds {
                name: name.to_string(),
                detail: format!(
                    "offset {offset} + byte size {byte_size} does not lie within the object's {size} bytes (and the size must be more than 0)"
                ),
            });
        }
        self.regions().insert(
            name.to_string(),
            Arc::new(Region {
                key: key.to_string(),
                offset,
                byte_size,
                file,
            }),
        );
        log::info!(
            "system shared memory region {name:?} registered: {key} at {offset}, {byte_size} bytes"
        );
        Ok(())
    }

    /// `SystemSharedMemoryUnregister`: the region `name`, or every region when `name` is
    /// empty. A request reading or writing one meanwhile finishes with it.
    pub fn unregister(&self, name: &str) -> Result<(), SharedMemoryError> {
        let mut regions = self.regions();
        if name.is_empty() {
            regions.clear();
        } else if regions.remove(name).is_none() {
            return Err(SharedMemoryError::NotFound {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// `SystemSharedMemoryStatus`: the region `name`, or every region when `name` is empty.
    pub fn status(
        &self,
        name: &str,
    ) -> Result<Vec<pb::system_shared_memory_status_response::RegionStatus>, SharedMemoryError>
    {
        let regions = self.regions();
        let status = |(name, region): (&String, &Arc<Region>)| {
            pb::system_shared_memory_status_response::RegionStatus {
                name: name.clone(),
                key: region.key.clone(),
                offset: region.offset,
                byte_size: region.byte_size,
                ..Default::default()
            }
        };
        if name.is_empty() {
            return Ok(regions.iter().map(status).collect());
        }
        regions
            .get_key_value(name)
            .map(|found| vec![status(found)])
            .ok_or_else(|| SharedMemoryError::NotFound {
                name: name.to_string(),
            })
    }

    /// Reads the inputs of `request` that name a region into its `raw_input_contents` (in
    /// their place among the others' raw contents, as Triton's clients send them), and takes
    /// out the outputs it wants written into a region.
    pub fn place(
        &self,
        request: &mut pb::ModelInferRequest,
        limit: usize,
    ) -> Result<OutputPlacements, SharedMemoryError> {
        let mut placements = OutputPlacements::default();
        for output in &mut request.outputs {
            if let Some((name, region, offset, size)) =
                self.placement("output", &output.name, &mut output.parameters)?
            {
                placements
                    .0
                    .push((output.name.clone(), name, region, offset, size));
            }
        }
        let in_memory: Vec<bool> = request
            .inputs
            .iter()
            .map(|input| input.parameters.contains_key(REGION))
            .collect();
        if !in_memory.contains(&true) {
            return Ok(placements);
        }
        let mut given = std::mem::take(&mut request.raw_input_contents).into_iter();
        let others_raw = given.len() > 0;
        let mut raw = Vec::with_capacity(request.inputs.len());
        // Counted before anything is read: the request's limit bounds what a read allocates.
        let mut read = 0u64;
        for (input, shared) in request.inputs.iter_mut().zip(in_memory) {
            match self.placement("input", &input.name, &mut input.parameters)? {
                Some((name, region, offset, size)) => {
                    read = read.saturating_add(size);
                    if read > limit as u64 {
                        return Err(SharedMemoryError::TooLarge { size: read, limit });
                    }
                    let mut bytes = vec![0; size as usize];
                    region
                        .file
                        .read_exact_at(&mut bytes, region.offset + offset)
                        .map_err(|e| SharedMemoryError::Io {
                            name,
                            reason: format!("reading input {:?}: {e}", input.name),
                        })?;
                    raw.push(bytes);
                }
                None if !shared && others_raw => raw.push(given.next().unwrap_or_default()),
                None => {
                    return Err(SharedMemoryError::Parameters {
                        tensor: "input",
                        name: input.name.clone(),
                        reason: "comes in typed contents beside inputs in shared memory: send it raw (raw_input_contents), or in shared memory too".to_string(),
                    })
                }
            }
        }
        request.raw_input_contents = raw;
        Ok(placements)
    }

    /// The region, offset and size that `parameters` (of the tensor `name`) name, taken out
    /// of them; `None` when they name none.
    #[allow(clippy::type_complexity)]
    fn placement(
        &self,
        tensor: &'static str,
        name: &str,
        parameters: &mut std::collections::HashMap<String, pb::InferParameter>,
    ) -> Result<Option<(String, Arc<Region>, u64, u64)>, SharedMemoryError> {
        let Some(region_name) = parameters.remove(REGION) else {
            return Ok(None);
        };
        let refused = |reason: String| SharedMemoryError::Parameters {
            tensor,
            name: name.to_string(),
            reason,
        };
        let Some(Parameter_choice::StringParam(region_name)) = region_name.parameter_choice else {
            return Err(refused(format!("{REGION} is not a string")));
        };
        let mut number = |key: &str, default: Option<u64>| -> Result<u64, SharedMemoryError> {
            match parameters.remove(key).and_then(|p| p.parameter_choice) {
                Some(Parameter_choice::Int64Param(n)) if n >= 0 => Ok(n as u64),
                Some(Parameter_choice::Uint64Param(n)) => Ok(n),
                None => default.ok_or_else(|| {
                    refused(format!(
                        "{key} is missing: give the bytes it takes in the region"
                    ))
                }),
                Some(other) => Err(refused(format!("{key} is {other:?}, not a byte count"))),
            }
        };
        let size = number(BYTE_SIZE, None)?;
        let offset = number(OFFSET, Some(0))?;
        let region = self.regions().get(&region_name).cloned().ok_or_else(|| {
            SharedMemoryError::NotFound {
                name: region_name.clone(),
            }
        })?;
        if offset
            .checked_add(size)
            .is_none_or(|end| end > region.byte_size)
        {
            return Err(SharedMemoryError::Bounds {
                name: region_name,
                detail: format!(
                    "{tensor} {name:?} takes {size} bytes at offset {offset}, past the region's {} bytes",
                    region.byte_size
                ),
            });
        }
        Ok(Some((region_name, region, offset, size)))
    }
}

/// Whether gRPC's `peer` (`unix:...`, `ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`, the brackets
/// possibly percent-encoded) is on this host.
fn is_local(peer: &str) -> bool {
    peer.starts_with("unix:")
        || peer.starts_with("ipv4:127.")
        || peer.starts_with("ipv6:[::1]")
        || peer.starts_with("ipv6:%5B::1%5D")
        || peer.starts_with("ipv6:[::ffff:127.")
        || peer.starts_with("ipv6:%5B::ffff:127.")
}

impl OutputPlacements {
    /// Writes the outputs placed in regions there, and empties their raw contents in the
    /// answer (the entries stay, so that the others keep their places, as Triton's clients
    /// read them); their tensors say where they are, as Triton's do.
    pub fn write(&self, response: &mut pb::ModelInferResponse) -> Result<(), SharedMemoryError> {
        for (output, name, region, offset, size) in &self.0 {
            let Some(index) = response.outputs.iter().position(|o| &o.name == output) else {
                continue;
            };
            let data = response
                .raw_output_contents
                .get_mut(index)
                .map(std::mem::take)
                .unwrap_or_default();
            if data.len() as u64 > *size {
                return Err(SharedMemoryError::TooSmall {
                    region: name.clone(),
                    byte_size: *size,
                    output: output.clone(),
                    needed: data.len(),
                });
            }
            region
                .file
                .write_all_at(&data, region.offset + offset)
                .map_err(|e| SharedMemoryError::Io {
                    name: name.clone(),
                    reason: format!("writing output {output:?}: {e}"),
                })?;
            let parameters = &mut response.outputs[index].parameters;
            let string = |s: &str| pb::InferParameter {
                parameter_choice: Some(Parameter_choice::StringParam(s.to_string())),
                ..Default::default()
            };
            let number = |n: u64| pb::InferParameter {
                parameter_choice: Some(Parameter_choice::Int64Param(n as i64)),
                ..Default::default()
            };
            parameters.insert(REGION.to_string(), string(name));
            parameters.insert(BYTE_SIZE.to_string(), number(data.len() as u64));
            if *offset > 0 {
                parameters.insert(OFFSET.to_string(), number(*offset));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_caller_on_this_host_registers_a_region() {
        for peer in [
            "unix:",
            "unix:/tmp/s.sock",
            "ipv4:127.0.0.1:4000",
            "ipv6:[::1]:4000",
            "ipv6:%5B::1%5D:4000",
        ] {
            assert!(is_local(peer), "{peer}");
        }
        for peer in ["ipv4:10.0.0.7:4000", "ipv6:[fe80::1]:4000", ""] {
            assert!(!is_local(peer), "{peer}");
        }
        let refused = SharedMemory::default()
            .register("in", "/any", 0, 8, "ipv4:10.0.0.7:4000")
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("comes from ipv4:10.0.0.7:4000"),
            "{refused}"
        );
    }

    #[test]
    fn inputs_in_shared_memory_count_against_the_message_limit_before_they_are_read() {
        let key = format!("gpu-sidecar-test-{}-limit", std::process::id());
        let path = PathBuf::from(SHM_FOLDER).join(&key);
        std::fs::write(&path, [7u8; 64]).unwrap();
        let memory = SharedMemory::default();
        let registered = memory.register("in", &format!("/{key}"), 0, 64, "unix:");
        let request = || {
            let parameter = |choice| pb::InferParameter {
                parameter_choice: Some(choice),
                ..Default::default()
            };
            let mut input = pb::model_infer_request::InferInputTensor {
                name: "x".to_string(),
                ..Default::default()
            };
            input.parameters.insert(
                REGION.to_string(),
                parameter(Parameter_choice::StringParam("in".to_string())),
            );
            input.parameters.insert(
                BYTE_SIZE.to_string(),
                parameter(Parameter_choice::Int64Param(64)),
            );
            pb::ModelInferRequest {
                inputs: vec![input],
                ..Default::default()
            }
        };
        let (mut over, mut within) = (request(), request());
        let refused = memory.place(&mut over, 32);
        let placed = memory.place(&mut within, 64);
        std::fs::remove_file(&path).unwrap();
        registered.unwrap();
        let refused = refused.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("come to 64 bytes or more, over sidecar.rpc.max-message-size (32 bytes)"),
            "{refused}"
        );
        assert!(over.raw_input_contents.is_empty(), "nothing was read");
        placed.unwrap();
        assert_eq!(within.raw_input_contents, [vec![7u8; 64]]);
    }
}
