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

//! `flink.sidecar.v1.Sidecar`: Ping, answered on the completion-queue thread from the shared
//! lifecycle state.

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, UnarySink};

use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{GaugeGuard, Metrics};
use crate::proto::sidecar::{self as pb, PingRequest, PingResponse};
use crate::proto::sidecar_grpc::Sidecar;
use crate::repository::Repository;
use crate::serving::ModelLocation;

/// `flink.sidecar.v1.Sidecar`.
#[derive(Clone)]
pub(super) struct SidecarService {
    pub(super) lifecycle: Arc<Lifecycle>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) repository: Arc<Repository>,
    /// `sidecar.rpc.max-message-size`: a larger payload is refused, as a request would be.
    pub(super) max_message_size: usize,
}

impl Sidecar for SidecarService {
    fn ping(&mut self, ctx: RpcContext, request: PingRequest, sink: UnarySink<PingResponse>) {
        let received = Instant::now();
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        self.metrics.ping_received();
        log::debug!("Ping: {} byte payload", request.payload.len());
        // Test builds only: holds the call in flight, for the shutdown tests.
        #[cfg(feature = "failpoints")]
        crate::failpoint::hold("rpc::ping");
        let metrics = Arc::clone(&self.metrics);
        // A call whose deadline has passed gets no work done: the client has given up.
        let expired = ctx.deadline().exceeded();
        let too_large = request.payload.len() > self.max_message_size;
        let reply = if expired {
            sink.fail(RpcStatus::with_message(
                RpcStatusCode::DEADLINE_EXCEEDED,
                "the deadline passed before the call was handled".to_string(),
            ))
        } else if too_large {
            sink.fail(RpcStatus::with_message(
                RpcStatusCode::INVALID_ARGUMENT,
                format!(
                    "the Ping payload is {} bytes, over sidecar.rpc.max-message-size ({} bytes)",
                    request.payload.len(),
                    self.max_message_size
                ),
            ))
        } else {
            sink.success(ping_response(request, &self.lifecycle, &self.repository))
        };
        ctx.spawn(reply.map(move |result| {
            if let Err(e) = &result {
                log::debug!("Ping: reply not delivered: {e}");
            }
            metrics.ping_finished(received.elapsed(), !expired && !too_large && result.is_ok());
            drop(call);
        }));
    }
}

/// The answer to a Ping: the payload back, with what the sidecar serves: the device, and the
/// newest ready version of the first model by name (`RepositoryIndex` lists them all).
fn ping_response(
    request: PingRequest,
    lifecycle: &Lifecycle,
    repository: &Repository,
) -> PingResponse {
    let mut response = PingResponse {
        payload: request.payload,
        state: serving_state(lifecycle.state()).into(),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: u64::try_from(lifecycle.uptime().as_millis()).unwrap_or(u64::MAX),
        ..PingResponse::default()
    };
    let first = repository.models().iter().find_map(|model| {
        let versions = model.versions();
        versions.serving().values().next_back().cloned()
    });
    if let Some(model) = first {
        response.model_loaded = true;
        response.model = protobuf::MessageField::some(pb::Model {
            path: model.path.display().to_string(),
            size_bytes: model.size_bytes,
            sha256: model.sha256.clone(),
            location: match model.location {
                ModelLocation::DeviceMemory => pb::ModelLocation::MODEL_LOCATION_DEVICE_MEMORY,
                ModelLocation::HostMemory => pb::ModelLocation::MODEL_LOCATION_HOST_MEMORY,
            }
            .into(),
            ..pb::Model::default()
        });
    }
    if let Some(serving) = lifecycle.serving() {
        // The first of the GPUs served on; the metrics list them all.
        if let Some(device) = serving.gpus.first() {
            response.gpu_in_use = true;
            response.gpu = protobuf::MessageField::some(pb::GpuDevice {
                ordinal: device.ordinal.unsigned_abs(),
                name: device.name.clone(),
                total_memory_bytes: device.total_memory_bytes,
                compute_capability: format!(
                    "{}.{}",
                    device.compute_capability.0, device.compute_capability.1
                ),
                driver_version: format!(
                    "{}.{}",
                    device.driver_cuda_version.0, device.driver_cuda_version.1
                ),
                ..pb::GpuDevice::default()
            });
        }
    }
    response
}

fn serving_state(state: State) -> pb::ServingState {
    match state {
        State::Starting => pb::ServingState::SERVING_STATE_STARTING,
        State::Ready => pb::ServingState::SERVING_STATE_READY,
        State::Draining => pb::ServingState::SERVING_STATE_DRAINING,
        State::Stopped => pb::ServingState::SERVING_STATE_STOPPED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_echoes_payload_and_reports_state() {
        let lifecycle = Lifecycle::new();
        let request = PingRequest {
            payload: vec![0, 1, 2, 255],
            ..PingRequest::default()
        };
        let repository = Repository::new(
            crate::config::RepositoryControl::None,
            Arc::new(Lifecycle::new()),
        );
        let response = ping_response(request.clone(), &lifecycle, &repository);
        assert_eq!(response.payload, request.payload);
        assert_eq!(
            response.state.enum_value(),
            Ok(pb::ServingState::SERVING_STATE_STARTING)
        );
        assert!(!response.model_loaded);
        lifecycle.set_ready(crate::serving::ServingInfo::for_tests());
        repository.serve_for_tests(crate::model::ModelVersion::for_tests(Default::default()));
        let response = ping_response(request, &lifecycle, &repository);
        assert_eq!(
            response.state.enum_value(),
            Ok(pb::ServingState::SERVING_STATE_READY)
        );
        assert!(response.model_loaded);
        assert!(!response.gpu_in_use);
        assert_eq!(
            response.model.location.enum_value(),
            Ok(pb::ModelLocation::MODEL_LOCATION_HOST_MEMORY)
        );
    }
}
