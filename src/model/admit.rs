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

//! Why a request was not admitted to a model's queue: [`AdmitError`], from routing (the
//! sidecar's state, the model and version asked for) or from the queue (full, closed). The
//! routing errors begin with Triton's own words, which its clients and tools match, and go
//! on with the sidecar's detail.

/// Why a request was not admitted to a model's queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The sidecar is starting and the model is not resident yet.
    #[error("the model is still loading; retry when the sidecar is READY")]
    Loading,
    /// The sidecar is draining or stopped.
    #[error("the sidecar is shutting down and takes no new requests")]
    ShuttingDown,
    /// No model of that name is served or known.
    #[error("Request for unknown model: '{name}' is not found: this sidecar serves {served}")]
    UnknownModel { name: String, served: String },
    /// The model's first version is being loaded: worth a retry.
    #[error("Request for unknown model: '{name}' has no available versions: model {name:?} is loading and takes requests once a version of it is warmed up: retry shortly")]
    ModelLoading { name: String },
    /// The model is known but no version of it is loaded.
    #[error("Request for unknown model: '{name}' has no available versions: model {name:?} is not loaded ({why}); load it with RepositoryModelLoad, or see RepositoryIndex")]
    NotLoaded { name: String, why: String },
    /// The model's versions were taken out of service (their GPUs failed).
    #[error("Request for unknown model: '{name}' has no available versions: model {name:?} is out of service: {why}")]
    OutOfService { name: String, why: String },
    /// The model has no such version.
    #[error("Request for unknown model: '{name}' version {version} is not found: model {name:?} has no version {version:?}: it serves {serving}; leave the version out for the newest")]
    NoSuchVersion {
        name: String,
        version: String,
        serving: String,
    },
    /// The version asked for is known and does not take requests.
    #[error("Request for unknown model: '{name}' version {version} is not at ready state: version {version:?} of model {name:?} is not available: it serves {serving}; leave the version out for the newest")]
    VersionUnavailable {
        name: String,
        version: String,
        serving: String,
    },
    /// `max-queue-size` requests wait already.
    #[error("the inference queue is full ({capacity} requests wait, sidecar.batching.max-queue-size): back off and retry on this connection; do not reconnect")]
    QueueFull { capacity: usize },
}
