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

//! Why an inference call, or one request of a stream, got no outputs, and what the caller
//! is told: [`Failure::classify`] is the one place that maps the typed errors of the codec,
//! the model's checks and admission, the job and the repository to a gRPC code and a metrics
//! outcome. Runs on the
//! completion-queue threads.

use grpcio::{RpcStatus, RpcStatusCode};

use super::kserve::DecodeError;
use super::shared_memory::SharedMemoryError;
use crate::gpu::GpuError;
use crate::metrics::Outcome;
use crate::model::job::JobFailure;
use crate::model::request::RequestError;
use crate::model::AdmitError;
use crate::proto::grpc_service as pb;
use crate::repository::RepositoryError;

/// The gRPC code of a failed repository load or unload, as Triton answers them.
fn repository_code(error: &RepositoryError) -> RpcStatusCode {
    use RpcStatusCode as Code;
    match error {
        RepositoryError::NotExplicit { .. } | RepositoryError::Stopped => Code::UNAVAILABLE,
        RepositoryError::UnknownModel { .. } => Code::NOT_FOUND,
        RepositoryError::Load { source, .. } => match **source {
            GpuError::ModelTooLarge { .. } => Code::RESOURCE_EXHAUSTED,
            GpuError::Stopped => Code::UNAVAILABLE,
            _ => Code::INVALID_ARGUMENT,
        },
        RepositoryError::Unreadable { .. }
        | RepositoryError::NoVersion { .. }
        | RepositoryError::Text { .. }
        | RepositoryError::ConfigOverride { .. }
        | RepositoryError::FilesInRequest { .. } => Code::INVALID_ARGUMENT,
        RepositoryError::Folder { .. } => Code::INTERNAL,
    }
}

/// Every way an inference request can fail; its message is what the caller reads.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The message breaks the protocol, or is too large.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The request does not fit the model version it was routed to (its texts included).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The model did not take it.
    #[error(transparent)]
    Admission(#[from] AdmitError),
    /// It was queued but got no outputs.
    #[error(transparent)]
    Job(#[from] JobFailure),
    /// A repository load or unload was refused or failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// A shared memory region could not be registered, read or written.
    #[error(transparent)]
    SharedMemory(#[from] SharedMemoryError),
}

impl Failure {
    /// The gRPC code the caller gets, and the `outcome` label it is counted under.
    pub fn classify(&self) -> (RpcStatusCode, Outcome) {
        use RpcStatusCode as Code;
        match self {
            Failure::Admission(
                AdmitError::UnknownModel { .. }
                | AdmitError::NotLoaded { .. }
                | AdmitError::NoSuchVersion { .. },
            ) => (Code::NOT_FOUND, Outcome::Invalid),
            Failure::Admission(
                AdmitError::VersionUnavailable { .. }
                | AdmitError::ModelLoading { .. }
                | AdmitError::OutOfService { .. },
            ) => (Code::UNAVAILABLE, Outcome::Unavailable),
            Failure::Repository(e) => (repository_code(e), Outcome::Invalid),
            Failure::Decode(_) | Failure::Request(_) => (Code::INVALID_ARGUMENT, Outcome::Invalid),
            Failure::Admission(AdmitError::Loading | AdmitError::ShuttingDown) => {
                (Code::UNAVAILABLE, Outcome::Unavailable)
            }
            Failure::Admission(AdmitError::QueueFull { .. }) => {
                (Code::RESOURCE_EXHAUSTED, Outcome::ResourceExhausted)
            }
            Failure::Job(JobFailure::DeadlineExceeded) => {
                (Code::DEADLINE_EXCEEDED, Outcome::Deadline)
            }
            Failure::Job(JobFailure::Cancelled) => (Code::CANCELLED, Outcome::Cancelled),
            // A stop is not a failure: the caller may retry elsewhere or later.
            Failure::Job(JobFailure::NotRun | JobFailure::Stopped) => {
                (Code::UNAVAILABLE, Outcome::Unavailable)
            }
            // Nor is a device that failed under it: another instance, or a later load, serves.
            Failure::Job(JobFailure::DeviceFailed { .. } | JobFailure::NoInstance) => {
                (Code::UNAVAILABLE, Outcome::Unavailable)
            }
            Failure::Job(JobFailure::Execution(_)) => (Code::INTERNAL, Outcome::Internal),
            Failure::SharedMemory(SharedMemoryError::AlreadyRegistered { .. }) => {
                (Code::ALREADY_EXISTS, Outcome::Invalid)
            }
            Failure::SharedMemory(SharedMemoryError::NotLocal { .. }) => {
                (Code::PERMISSION_DENIED, Outcome::Invalid)
            }
            Failure::SharedMemory(SharedMemoryError::Io { .. }) => {
                (Code::INTERNAL, Outcome::Internal)
            }
            Failure::SharedMemory(_) => (Code::INVALID_ARGUMENT, Outcome::Invalid),
        }
    }

    /// The metrics outcome alone (repository calls are not counted as inferences).
    pub fn outcome(&self) -> Outcome {
        self.classify().1
    }

    /// The status for the caller: the code and this failure's message.
    pub fn status(&self) -> RpcStatus {
        RpcStatus::with_message(self.classify().0, self.to_string())
    }
}

/// A stream message carrying an error for one request, with its `id`.
pub fn error_answer(
    model_name: &str,
    model_version: &str,
    id: String,
    failure: &Failure,
) -> pb::ModelStreamInferResponse {
    let (code, _) = failure.classify();
    pb::ModelStreamInferResponse {
        error_message: format!("{}: {failure}", code_name(code)),
        infer_response: Some(pb::ModelInferResponse {
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            id,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// The name of a status code, as gRPC spells it.
fn code_name(code: RpcStatusCode) -> &'static str {
    match code {
        RpcStatusCode::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        RpcStatusCode::NOT_FOUND => "NOT_FOUND",
        RpcStatusCode::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        RpcStatusCode::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        RpcStatusCode::CANCELLED => "CANCELLED",
        RpcStatusCode::UNAVAILABLE => "UNAVAILABLE",
        RpcStatusCode::INTERNAL => "INTERNAL",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RunError;

    #[test]
    fn each_failure_has_its_code_and_outcome() {
        let cases: [(Failure, RpcStatusCode, Outcome); 16] = [
            (
                DecodeError::Invalid("d".into()).into(),
                RpcStatusCode::INVALID_ARGUMENT,
                Outcome::Invalid,
            ),
            (
                RequestError::Invalid("x".into()).into(),
                RpcStatusCode::INVALID_ARGUMENT,
                Outcome::Invalid,
            ),
            (
                RequestError::Text(crate::model::text::TextError::NoTokenIds).into(),
                RpcStatusCode::INVALID_ARGUMENT,
                Outcome::Invalid,
            ),
            (
                AdmitError::Loading.into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
            ),
            (
                AdmitError::VersionUnavailable {
                    name: "m".into(),
                    version: "3".into(),
                    serving: "version 4".into(),
                }
                .into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
            ),
            (
                RepositoryError::NotExplicit {
                    control: crate::config::RepositoryControl::None,
                }
                .into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Invalid,
            ),
            (
                AdmitError::QueueFull { capacity: 2 }.into(),
                RpcStatusCode::RESOURCE_EXHAUSTED,
                Outcome::ResourceExhausted,
            ),
            (
                JobFailure::DeadlineExceeded.into(),
                RpcStatusCode::DEADLINE_EXCEEDED,
                Outcome::Deadline,
            ),
            (
                JobFailure::Cancelled.into(),
                RpcStatusCode::CANCELLED,
                Outcome::Cancelled,
            ),
            (
                JobFailure::Stopped.into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
            ),
            (
                JobFailure::DeviceFailed {
                    device: 1,
                    reason: "CUDA error".into(),
                }
                .into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
            ),
            (
                JobFailure::NoInstance.into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
            ),
            (
                JobFailure::Execution(RunError::Runtime {
                    message: "boom".into(),
                })
                .into(),
                RpcStatusCode::INTERNAL,
                Outcome::Internal,
            ),
            (
                AdmitError::ModelLoading { name: "m".into() }.into(),
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
            ),
            (
                AdmitError::NoSuchVersion {
                    name: "m".into(),
                    version: "7".into(),
                    serving: "version 4".into(),
                }
                .into(),
                RpcStatusCode::NOT_FOUND,
                Outcome::Invalid,
            ),
            (
                AdmitError::NotLoaded {
                    name: "m".into(),
                    why: "unloaded".into(),
                }
                .into(),
                RpcStatusCode::NOT_FOUND,
                Outcome::Invalid,
            ),
        ];
        for (failure, code, outcome) in cases {
            assert_eq!(failure.classify(), (code, outcome), "{failure:?}");
            assert_eq!(failure.status().message(), failure.to_string());
        }
        let answer = error_answer("m", "1", "7".into(), &AdmitError::ShuttingDown.into());
        assert_eq!(
            answer.error_message,
            "UNAVAILABLE: the sidecar is shutting down and takes no new requests"
        );
        assert_eq!(answer.infer_response.id, "7");
    }
}
