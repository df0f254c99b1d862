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

//! `inference.GRPCInferenceService`, the Open Inference Protocol (KServe v2) as Triton speaks
//! it, on the completion-queue threads: the service's wiring and its unary calls. Metadata
//! calls answer from the version served ([`super::metadata`]); `ModelInfer` ([`infer`]) and
//! each `ModelStreamInfer` message ([`stream`]) are decoded ([`super::kserve`]), checked and
//! submitted through the model's version without blocking, and answered when the GPU-owner
//! thread replies. Failures are mapped to gRPC in [`super::status`]. Each request is routed
//! to a model of the [`Repository`] and one of its versions, whose queue takes it. The
//! repository extension's calls (`RepositoryIndex`, `RepositoryModelLoad`,
//! `RepositoryModelUnload`) are answered from the repository, loads and unloads once the
//! repository thread has carried them out. The methods not served here (shared memory,
//! trace, logging) answer UNIMPLEMENTED.

mod infer;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use futures_util::FutureExt;
use grpcio::{Method, MethodType, RpcContext, Service, ServiceBuilder, UnarySink};

use super::kserve;
use super::metadata::{model_config, model_metadata, model_statistics};
use super::status::Failure;
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{GaugeGuard, Metrics, Outcome};
use crate::model::{AdmitError, ModelVersion};
use crate::proto::grpc_service as pb;
use crate::repository::config_override::ConfigOverride;
use crate::repository::control::RepositoryOrders;
use crate::repository::{Repository, RepositoryError};
use crate::rpc::shared_memory::SharedMemory;

/// The protocol extensions this server implements.
const EXTENSIONS: [&str; 5] = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
    "system_shared_memory",
];

/// The service's shared state; cloned into each handler.
#[derive(Clone, Debug)]
pub struct InferenceService {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    repository: Arc<Repository>,
    orders: RepositoryOrders,
    /// `sidecar.rpc.max-message-size`, for requests and answers alike.
    max_message_size: usize,
    /// `sidecar.rpc.watch-unary-cancellation`: `ModelInfer` answers through a streaming sink
    /// that tells when the caller goes (see [`infer`]).
    watch_unary_cancellation: bool,
    /// The system shared memory regions clients registered.
    shared_memory: Arc<SharedMemory>,
}

impl InferenceService {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        repository: Arc<Repository>,
        orders: RepositoryOrders,
        max_message_size: usize,
        watch_unary_cancellation: bool,
    ) -> Self {
        InferenceService {
            lifecycle,
            metrics,
            repository,
            orders,
            max_message_size,
            watch_unary_cancellation,
            shared_memory: Arc::default(),
        }
    }
}

impl InferenceService {
    /// The repository the service routes requests through.
    pub fn repository(&self) -> Arc<Repository> {
        Arc::clone(&self.repository)
    }
}

/// Declares a method of `inference.GRPCInferenceService` with the protobuf codec.
macro_rules! method {
    ($ty:expr, $name:literal, $req:ty, $resp:ty) => {
        Method::<$req, $resp> {
            ty: $ty,
            name: concat!("/inference.GRPCInferenceService/", $name),
            req_mar: grpcio::Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
            resp_mar: grpcio::Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
        }
    };
}

/// Adds a unary method to `$builder` whose reply (a `Result<$resp, Failure>`) is `$reply`,
/// computed from a clone of the service, `$s`, and the request, `$req`.
macro_rules! unary {
    ($builder:ident, $service:ident, $name:literal, $req_ty:ty, $resp_ty:ty,
     |$s:ident, $req:ident| $reply:expr) => {
        let $s = $service.clone();
        $builder = $builder.add_unary_handler(
            &method!(MethodType::Unary, $name, $req_ty, $resp_ty),
            move |ctx, $req: $req_ty, sink| {
                let reply = $reply;
                $s.answer(ctx, sink, reply);
            },
        );
    };
}

/// Registers the served methods of `inference.GRPCInferenceService`.
pub fn create_service(service: InferenceService) -> Service {
    use pb::*;
    let mut builder = ServiceBuilder::new();
    unary!(
        builder,
        service,
        "ServerLive",
        ServerLiveRequest,
        ServerLiveResponse,
        |s, _req| {
            Ok(ServerLiveResponse {
                live: s.lifecycle.is_live(),
                ..Default::default()
            })
        }
    );
    unary!(
        builder,
        service,
        "ServerReady",
        ServerReadyRequest,
        ServerReadyResponse,
        |s, _req| {
            Ok(ServerReadyResponse {
                ready: s.lifecycle.is_ready(),
                ..Default::default()
            })
        }
    );
    unary!(
        builder,
        service,
        "ModelReady",
        ModelReadyRequest,
        ModelReadyResponse,
        |s, req| {
            // A model known and not loaded, or a version not loaded, is not ready: not an
            // error, as Triton answers.
            s.repository
                .model(&req.name)
                .map_err(Failure::from)
                .map(|model| ModelReadyResponse {
                    ready: s.lifecycle.state() == State::Ready
                        && model.version(&req.version).is_ok(),
                    ..Default::default()
                })
        }
    );
    unary!(
        builder,
        service,
        "ServerMetadata",
        ServerMetadataRequest,
        ServerMetadataResponse,
        |s, _req| {
            Ok(ServerMetadataResponse {
                name: "gpu-sidecar".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            })
        }
    );
    unary!(
        builder,
        service,
        "ModelMetadata",
        ModelMetadataRequest,
        ModelMetadataResponse,
        |s, req| {
            s.version(&req.name, &req.version).map(|version| {
                let model = s.repository.model(&req.name).ok();
                let versions: Vec<u64> = model
                    .map(|model| model.versions().serving().keys().copied().collect())
                    .unwrap_or_default();
                model_metadata(&version, &versions)
            })
        }
    );
    unary!(
        builder,
        service,
        "ModelConfig",
        ModelConfigRequest,
        ModelConfigResponse,
        |s, req| {
            s.version(&req.name, &req.version)
                .map(|version| ModelConfigResponse {
                    config: Some(model_config(&version)).into(),
                    ..Default::default()
                })
        }
    );
    unary!(
        builder,
        service,
        "ModelStatistics",
        ModelStatisticsRequest,
        ModelStatisticsResponse,
        |s, req| {
            s.statistics(&req.name, &req.version)
                .map(|model_stats| ModelStatisticsResponse {
                    model_stats,
                    ..Default::default()
                })
        }
    );
    unary!(
        builder,
        service,
        "RepositoryIndex",
        RepositoryIndexRequest,
        RepositoryIndexResponse,
        |s, req| {
            use repository_index_response::ModelIndex;
            Ok(RepositoryIndexResponse {
                models: s
                    .repository
                    .index(req.ready)
                    .into_iter()
                    .map(|entry| ModelIndex {
                        name: entry.name,
                        version: entry.version.map_or_else(String::new, |v| v.to_string()),
                        state: entry.state.to_string(),
                        reason: entry.reason,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
    );
    let s = service.clone();
    builder = builder.add_unary_handler(
        &method!(
            MethodType::Unary,
            "SystemSharedMemoryRegister",
            SystemSharedMemoryRegisterRequest,
            SystemSharedMemoryRegisterResponse
        ),
        move |ctx, req: SystemSharedMemoryRegisterRequest, sink| {
            // A region is this host's memory: a client elsewhere (TCP on another interface)
            // may not read or overwrite it.
            let peer = ctx.peer();
            let reply = s
                .shared_memory
                .register(&req.name, &req.key, req.offset, req.byte_size, &peer)
                .map(|()| SystemSharedMemoryRegisterResponse::default())
                .map_err(Failure::from);
            s.answer(ctx, sink, reply);
        },
    );
    unary!(
        builder,
        service,
        "SystemSharedMemoryUnregister",
        SystemSharedMemoryUnregisterRequest,
        SystemSharedMemoryUnregisterResponse,
        |s, req| {
            s.shared_memory
                .unregister(&req.name)
                .map(|()| SystemSharedMemoryUnregisterResponse::default())
                .map_err(Failure::from)
        }
    );
    unary!(
        builder,
        service,
        "SystemSharedMemoryStatus",
        SystemSharedMemoryStatusRequest,
        SystemSharedMemoryStatusResponse,
        |s, req| {
            s.shared_memory
                .status(&req.name)
                .map(|regions| SystemSharedMemoryStatusResponse {
                    regions: regions
                        .into_iter()
                        .map(|region| (region.name.clone(), region))
                        .collect(),
                    ..Default::default()
                })
                .map_err(Failure::from)
        }
    );
    let s = service.clone();
    builder = builder.add_unary_handler(
        &method!(
            MethodType::Unary,
            "RepositoryModelLoad",
            RepositoryModelLoadRequest,
            RepositoryModelLoadResponse
        ),
        move |ctx, req: RepositoryModelLoadRequest, sink| {
            let done = s.repository_order(
                &req.model_name,
                &req.parameters,
                |name, config| s.orders.load(name, config),
                true,
            );
            s.answer_later(ctx, sink, done);
        },
    );
    let s = service.clone();
    builder = builder.add_unary_handler(
        &method!(
            MethodType::Unary,
            "RepositoryModelUnload",
            RepositoryModelUnloadRequest,
            RepositoryModelUnloadResponse
        ),
        move |ctx, req: RepositoryModelUnloadRequest, sink| {
            let done = s.repository_order(
                &req.model_name,
                &req.parameters,
                |name, _| s.orders.unload(name),
                false,
            );
            s.answer_later(ctx, sink, done);
        },
    );
    let mut s = service.clone();
    builder = if service.watch_unary_cancellation {
        builder.add_server_streaming_handler(
            &method!(
                MethodType::ServerStreaming,
                "ModelInfer",
                ModelInferRequest,
                ModelInferResponse
            ),
            move |ctx, req, sink| s.model_infer_watched(ctx, req, sink),
        )
    } else {
        builder.add_unary_handler(
            &method!(
                MethodType::Unary,
                "ModelInfer",
                ModelInferRequest,
                ModelInferResponse
            ),
            move |ctx, req, sink| s.model_infer_unary(ctx, req, sink),
        )
    };
    let mut s = service;
    builder = builder.add_duplex_streaming_handler(
        &method!(
            MethodType::Duplex,
            "ModelStreamInfer",
            ModelInferRequest,
            ModelStreamInferResponse
        ),
        move |ctx, requests, sink| s.model_stream_infer(ctx, requests, sink),
    );
    builder.build()
}

impl InferenceService {
    /// Completes a unary metadata call.
    fn answer<T>(&self, ctx: RpcContext, sink: UnarySink<T>, reply: Result<T, Failure>) {
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        let sent = match reply {
            Ok(reply) => sink.success(reply),
            Err(failure) => sink.fail(failure.status()),
        };
        ctx.spawn(sent.map(move |result| {
            if let Err(e) = result {
                log::debug!("inference metadata reply not delivered: {e}");
            }
            drop(call);
        }));
    }

    /// Completes a unary call once `reply` is ready, without blocking the thread.
    fn answer_later<T: Default + Send + 'static>(
        &self,
        ctx: RpcContext,
        sink: UnarySink<T>,
        reply: impl std::future::Future<Output = Result<(), Failure>> + Send + 'static,
    ) {
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        ctx.spawn(async move {
            let sent = match reply.await {
                Ok(()) => sink.success(T::default()).await,
                Err(failure) => sink.fail(failure.status()).await,
            };
            if let Err(e) = sent {
                log::debug!("repository reply not delivered: {e}");
            }
            drop(call);
        });
    }

    /// Orders a load or unload of `name` from the repository thread; the future ends when it
    /// is carried out. Parameters (a config override, files) are not taken.
    fn repository_order(
        &self,
        name: &str,
        parameters: &std::collections::HashMap<String, pb::ModelRepositoryParameter>,
        order: impl FnOnce(
            &str,
            Option<ConfigOverride>,
        ) -> oneshot::Receiver<Result<(), RepositoryError>>,
        load: bool,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send + 'static {
        let mut config = None;
        let mut refused = None;
        for (key, value) in parameters {
            use pb::model_repository_parameter::Parameter_choice;
            match (key.as_str(), &value.parameter_choice) {
                // `unload_dependents` (Triton's client always sends it) concerns ensembles,
                // which are not served here: there is nothing else to unload.
                ("unload_dependents", _) => {}
                ("config", Some(Parameter_choice::StringParam(json))) if load => {
                    match ConfigOverride::parse(name, json) {
                        Ok(parsed) => config = Some(parsed),
                        Err(e) => refused = Some(Failure::Repository(e)),
                    }
                }
                (file, _) if load && file.starts_with("file:") => {
                    refused = Some(Failure::Repository(RepositoryError::FilesInRequest {
                        name: name.to_string(),
                        parameter: file.to_string(),
                    }))
                }
                (other, _) => {
                    refused = Some(Failure::Decode(kserve::DecodeError::Invalid(format!(
                        "the parameter {other:?} is not supported: this sidecar takes a config override (\"config\", Triton's ModelConfig as JSON, on a load) and no other"
                    ))))
                }
            }
            if refused.is_some() {
                break;
            }
        }
        if refused.is_none() && self.lifecycle.state() != State::Ready {
            refused = Some(Failure::Admission(
                if self.lifecycle.state() == State::Starting {
                    AdmitError::Loading
                } else {
                    AdmitError::ShuttingDown
                },
            ));
        }
        let answered = refused.is_none().then(|| order(name, config));
        async move {
            if let Some(failure) = refused {
                return Err(failure);
            }
            match answered.expect("ordered").await {
                Ok(outcome) => outcome.map_err(Failure::from),
                Err(_) => Err(Failure::Repository(RepositoryError::Stopped)),
            }
        }
    }

    /// The version `version` of model `name` (the newest ready when empty), whatever the
    /// sidecar's state. Before anything is resident a call that needs it is UNAVAILABLE.
    fn version(&self, name: &str, version: &str) -> Result<Arc<ModelVersion>, Failure> {
        let model = self.repository.model(name)?;
        match model.version(version) {
            Ok(version) => Ok(version),
            Err(AdmitError::NotLoaded { .. }) if self.lifecycle.state() == State::Starting => {
                Err(AdmitError::Loading.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `ModelStatistics` of model `name`'s `version` (all its ready versions when empty), or
    /// of every model when `name` is empty.
    fn statistics(&self, name: &str, version: &str) -> Result<Vec<pb::ModelStatistics>, Failure> {
        let models = if name.is_empty() {
            self.repository.models()
        } else {
            vec![self.repository.model(name)?]
        };
        let mut statistics = Vec::new();
        for model in models {
            if version.is_empty() {
                for version in model.versions().serving().values() {
                    statistics.push(model_statistics(version));
                }
            } else {
                let version = self.version(model.name(), version)?;
                statistics.push(model_statistics(&version));
            }
        }
        Ok(statistics)
    }

    /// Records a request's end in the metrics and, once routed, its version's statistics.
    fn finish(&self, outcome: Outcome, received: Instant, version: Option<&ModelVersion>) {
        match version {
            Some(version) => version
                .recorder()
                .request_finished(outcome, received.elapsed()),
            None => self.metrics.unrouted_inference_finished(outcome),
        }
    }
}
