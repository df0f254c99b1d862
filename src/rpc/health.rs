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

//! `grpc.health.v1.Health`: Check and Watch, for the whole server ("") and each service the
//! server reports on, answered on the completion-queue threads from the lifecycle state.

use std::sync::Arc;

use futures_util::{future, FutureExt, SinkExt, StreamExt};
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, UnarySink, WriteFlags};

use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{GaugeGuard, Metrics};
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::health_grpc::Health;

/// The name under which the Sidecar service reports its health (its full proto name).
pub const SIDECAR_SERVICE_NAME: &str = "flink.sidecar.v1.Sidecar";
/// The name under which the inference service reports its health.
pub const INFERENCE_SERVICE_NAME: &str = "inference.GRPCInferenceService";

/// `grpc.health.v1.Health`, for the whole server ("") and the Sidecar service.
#[derive(Clone)]
pub(super) struct HealthService {
    pub(super) lifecycle: Arc<Lifecycle>,
    pub(super) metrics: Arc<Metrics>,
}

/// Whether `service` is one this server reports on.
fn is_known_service(service: &str) -> bool {
    service.is_empty() || service == SIDECAR_SERVICE_NAME || service == INFERENCE_SERVICE_NAME
}

fn health_status(state: State) -> ServingStatus {
    match state {
        State::Ready => ServingStatus::SERVING,
        State::Starting | State::Draining | State::Stopped => ServingStatus::NOT_SERVING,
    }
}

fn health_response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
        ..HealthCheckResponse::default()
    }
}

impl Health for HealthService {
    fn check(
        &mut self,
        ctx: RpcContext,
        request: HealthCheckRequest,
        sink: UnarySink<HealthCheckResponse>,
    ) {
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        self.metrics.health_check_received("Check");
        let reply = if is_known_service(&request.service) {
            // As /health/ready: every model that should be served is.
            let status = if self.lifecycle.is_ready() {
                ServingStatus::SERVING
            } else {
                ServingStatus::NOT_SERVING
            };
            sink.success(health_response(status))
        } else {
            sink.fail(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("unknown service {:?}", request.service),
            ))
        };
        ctx.spawn(reply.map(move |result| {
            if let Err(e) = result {
                log::debug!("Health.Check: reply not delivered: {e}");
            }
            drop(call);
        }));
    }

    fn watch(
        &mut self,
        ctx: RpcContext,
        request: HealthCheckRequest,
        mut sink: ServerStreamingSink<HealthCheckResponse>,
    ) {
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        self.metrics.health_check_received("Watch");
        let known = is_known_service(&request.service);
        let mut last_sent = None;
        // The current status first, then one message per change of status. An unknown
        // service gets SERVICE_UNKNOWN and the call stays open, as the protocol says.
        let lifecycle = Arc::clone(&self.lifecycle);
        let mut updates = self
            .lifecycle
            .subscribe()
            .map(move |state| {
                if !known {
                    ServingStatus::SERVICE_UNKNOWN
                } else if state == State::Ready && !lifecycle.is_ready() {
                    // READY, with a model that should be served and has no version.
                    ServingStatus::NOT_SERVING
                } else {
                    health_status(state)
                }
            })
            .filter(move |status| future::ready(last_sent.replace(*status) != Some(*status)))
            .map(|status| Ok((health_response(status), WriteFlags::default())));
        let forward = async move {
            sink.send_all(&mut updates).await?;
            // The lifecycle ended the stream: the server is shutting down, and NOT_SERVING
            // was the last message. End with OK: some clients (grpcio's among them) drop
            // messages still buffered when a call ends with an error status.
            sink.close().await
        };
        ctx.spawn(forward.map(move |result: grpcio::Result<()>| {
            if let Err(e) = result {
                log::debug!("Health.Watch ended: {e}");
            }
            drop(call);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_services() {
        assert!(is_known_service(""));
        assert!(is_known_service("flink.sidecar.v1.Sidecar"));
        assert!(is_known_service("inference.GRPCInferenceService"));
        assert!(!is_known_service("flink.sidecar.v1.Other"));
    }
}
