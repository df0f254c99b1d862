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
//! it, on the completion-queue threads: the service's wiring and its calls. Metadata calls
//! answer from what the model reported ([`super::metadata`]); `ModelInfer` and each
//! `ModelStreamInfer` message are decoded ([`super::kserve`]), submitted through the model's
//! handle without blocking, and answered when the GPU-owner thread replies. Failures are
//! mapped to gRPC in [`super::status`]. Each request is routed to a model of the
//! [`Repository`] and one of its versions, whose queue takes it. The repository extension's
//! calls (`RepositoryIndex`, `RepositoryModelLoad`, `RepositoryModelUnload`) are answered from
//! the repository, loads and unloads once the repository thread has carried them out.
//!
//! `ModelInfer` is registered as a server-streaming method that sends exactly one message: on
//! the wire that is a unary call, and unlike grpcio's unary sink, the streaming sink tells
//! when the client cancels or goes away, so a request whose caller is gone is never run. The
//! methods not served here (shared memory, trace, logging) answer UNIMPLEMENTED.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_channel::{mpsc, oneshot};
use futures_util::future::{self, Either};
use futures_util::{stream, FutureExt, SinkExt, StreamExt};
use grpcio::{
    DuplexSink, Method, MethodType, RequestStream, RpcContext, ServerStreamingSink, Service,
    ServiceBuilder, UnarySink, WriteFlags,
};

use super::kserve::{self, Answering};
use super::metadata::{model_config, model_metadata, model_statistics};
use super::status::{error_answer, Failure};
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{GaugeGuard, Metrics, Outcome};
use crate::model::job::{JobResult, Reply};
use crate::model::{AdmitError, VersionHandle};
use crate::proto::grpc_service as pb;
use crate::repository::control::RepositoryOrders;
use crate::repository::{Repository, RepositoryError};

/// The protocol extensions this server implements.
const EXTENSIONS: [&str; 4] = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
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
}

impl InferenceService {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        repository: Arc<Repository>,
        orders: RepositoryOrders,
        max_message_size: usize,
    ) -> Self {
        InferenceService {
            lifecycle,
            metrics,
            repository,
            orders,
            max_message_size,
        }
    }
}

impl InferenceService {
    /// The repository the service routes requests through.
    pub fn repository(&self) -> Arc<Repository> {
        Arc::clone(&self.repository)
    }
}

/// A request refused, and the version it was routed to, if it got that far.
struct Refusal {
    failure: Failure,
    version: Option<Arc<VersionHandle>>,
}

impl From<AdmitError> for Refusal {
    fn from(e: AdmitError) -> Self {
        Refusal {
            failure: e.into(),
            version: None,
        }
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
                model_metadata(version.model(), &versions)
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
                    config: Some(model_config(
                        version.model(),
                        s.lifecycle
                            .serving()
                            .and_then(|serving| serving.gpu.as_ref()),
                        version.batching(),
                    ))
                    .into(),
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
            "RepositoryModelLoad",
            RepositoryModelLoadRequest,
            RepositoryModelLoadResponse
        ),
        move |ctx, req: RepositoryModelLoadRequest, sink| {
            let done =
                s.repository_order(&req.model_name, &req.parameters, |name| s.orders.load(name));
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
            let done = s.repository_order(&req.model_name, &req.parameters, |name| {
                s.orders.unload(name)
            });
            s.answer_later(ctx, sink, done);
        },
    );
    let mut s = service.clone();
    builder = builder.add_server_streaming_handler(
        &method!(
            MethodType::ServerStreaming,
            "ModelInfer",
            ModelInferRequest,
            ModelInferResponse
        ),
        move |ctx, req, sink| s.model_infer(ctx, req, sink),
    );
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
        order: impl FnOnce(&str) -> oneshot::Receiver<Result<(), RepositoryError>>,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send + 'static {
        // `unload_dependents` (Triton's client always sends it) concerns ensembles, which
        // are not served here: there is nothing else to unload.
        let refused = if let Some(key) = parameters
            .keys()
            .find(|key| key.as_str() != "unload_dependents")
        {
            Some(Failure::Request(kserve::RequestError::Invalid(format!(
                "the parameter {key:?} is not supported: this sidecar loads models only as they are in its repository (no config override or files in the request)"
            ))))
        } else if self.lifecycle.state() != State::Ready {
            Some(Failure::Admission(
                if self.lifecycle.state() == State::Starting {
                    AdmitError::Loading
                } else {
                    AdmitError::ShuttingDown
                },
            ))
        } else {
            None
        };
        let answered = refused.is_none().then(|| order(name));
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
    fn version(&self, name: &str, version: &str) -> Result<Arc<VersionHandle>, Failure> {
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
                    statistics.push(model_statistics(version.model(), version.stats()));
                }
            } else {
                let version = self.version(model.name(), version)?;
                statistics.push(model_statistics(version.model(), version.stats()));
            }
        }
        Ok(statistics)
    }

    /// Decodes a request against the version it is routed to (tokenizing its texts, if it
    /// sends texts) and submits it to that version's queue; the reply that `reply` makes,
    /// knowing the version and how the answer is made from the outputs, gets its answer.
    /// Refuses without queueing when the model takes no requests, the request is bad or the
    /// queue is full.
    fn admit(
        &self,
        request: &mut pb::ModelInferRequest,
        abandoned: Arc<AtomicBool>,
        reply: impl FnOnce(Arc<VersionHandle>, Answering) -> Reply,
    ) -> Result<Arc<VersionHandle>, Refusal> {
        let model = self.repository.model(&request.model_name)?;
        let asked = request.model_version.clone();
        model.route(&asked, |version| {
            let refuse = |failure: Failure| Refusal {
                failure,
                version: Some(Arc::clone(version)),
            };
            kserve::check_size("request", request, self.max_message_size)
                .map_err(|e| refuse(e.into()))?;
            let mut checked =
                kserve::check_request(version.model(), request).map_err(|e| refuse(e.into()))?;
            if let Some(texts) = &checked.texts {
                // The codec takes texts only for a version whose tokenizer is bound.
                let text = version
                    .text()
                    .ok_or_else(|| refuse(AdmitError::Loading.into()))?;
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                let tokens = text.tokenize(&texts).map_err(|e| refuse(e.into()))?;
                checked.request.inputs = tokens.inputs;
                checked.answering.mask = Some(tokens.mask);
            }
            version
                .submit(
                    checked.request,
                    abandoned,
                    reply(Arc::clone(version), checked.answering),
                )
                .map_err(|e| refuse(e.into()))?;
            Ok(Arc::clone(version))
        })
    }

    /// Records a request's end in the metrics and, once routed, its version's statistics.
    fn finish(&self, outcome: Outcome, received: Instant, version: Option<&VersionHandle>) {
        match version {
            Some(version) => {
                version.metrics().inference_finished(outcome);
                version
                    .stats()
                    .record_request(outcome == Outcome::Ok, received.elapsed());
            }
            None => self.metrics.unrouted_inference_finished(outcome),
        }
    }

    /// `ModelInfer`: one request, one answer (see the module comment on the registration).
    fn model_infer(
        &mut self,
        ctx: RpcContext,
        mut request: pb::ModelInferRequest,
        mut sink: ServerStreamingSink<pb::ModelInferResponse>,
    ) {
        let received = Instant::now();
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        let deadline = ctx.deadline();
        let abandoned = Arc::new(AtomicBool::new(false));
        let (answer, answered) = oneshot::channel::<(Arc<VersionHandle>, Answering, JobResult)>();
        let admitted = self.admit(
            &mut request,
            Arc::clone(&abandoned),
            |version, answering| {
                Box::new(move |result| {
                    let _ = answer.send((version, answering, result));
                })
            },
        );
        let service = self.clone();
        let id = std::mem::take(&mut request.id);
        let task = async move {
            let routed = match admitted {
                Ok(version) => version,
                Err(refusal) => {
                    service.finish(
                        refusal.failure.outcome(),
                        received,
                        refusal.version.as_deref(),
                    );
                    return sink.fail(refusal.failure.status()).await;
                }
            };
            // Wait for the answer, or for the caller to go (cancel, disconnect, deadline).
            let result = {
                let gone = future::poll_fn(|cx| match sink.poll_ready_unpin(cx) {
                    Poll::Ready(Err(_)) => Poll::Ready(()),
                    _ => Poll::Pending,
                });
                match future::select(answered, pin!(gone)).await {
                    Either::Left((result, _)) => result.ok(),
                    Either::Right(((), _)) => None,
                }
            };
            let Some((version, answering, result)) = result else {
                abandoned.store(true, Ordering::Relaxed);
                let outcome = if deadline.exceeded() {
                    Outcome::Deadline
                } else {
                    Outcome::Cancelled
                };
                service.finish(outcome, received, Some(&routed));
                return Ok(());
            };
            match result {
                Ok((outputs, indices)) => {
                    let response =
                        kserve::response(version.model(), id, &indices, &answering, outputs);
                    if let Err(e) =
                        kserve::check_size("answer", &response, service.max_message_size)
                    {
                        let failure = Failure::from(e);
                        service.finish(failure.outcome(), received, Some(&version));
                        return sink.fail(failure.status()).await;
                    }
                    service.finish(Outcome::Ok, received, Some(&version));
                    sink.send((response, WriteFlags::default())).await?;
                    sink.close().await
                }
                Err(failure) => {
                    let failure = Failure::from(failure);
                    service.finish(failure.outcome(), received, Some(&version));
                    sink.fail(failure.status()).await
                }
            }
        };
        ctx.spawn(task.map(move |result: grpcio::Result<()>| {
            if let Err(e) = result {
                log::debug!("ModelInfer: reply not delivered: {e}");
            }
            drop(call);
        }));
    }

    /// `ModelStreamInfer`: requests in, answers out in the order they finish, each with its
    /// request's `id`; a bad request gets an `error_message` answer and the stream stays open.
    /// The stream ends (OK) when the client has half-closed and every answer is sent, or when
    /// the sidecar drains (after the answers of what was queued). A client that goes away
    /// abandons its queued requests.
    fn model_stream_infer(
        &mut self,
        ctx: RpcContext,
        requests: RequestStream<pb::ModelInferRequest>,
        mut sink: DuplexSink<pb::ModelStreamInferResponse>,
    ) {
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        let open = GaugeGuard::begin(self.metrics.streams_open());
        let service = self.clone();
        let abandoned = Arc::new(AtomicBool::new(false));
        let (answers_in, answers) = mpsc::unbounded::<StreamAnswer>();
        let draining = self
            .lifecycle
            .subscribe()
            .filter(|state| future::ready(matches!(state, State::Draining | State::Stopped)))
            .map(|_| StreamEvent::Draining)
            .chain(stream::once(future::ready(StreamEvent::Draining)));
        let incoming = requests
            .map(StreamEvent::Request)
            .chain(stream::once(future::ready(StreamEvent::RequestsEnded)));
        let mut events = stream::select(
            incoming,
            stream::select(answers.map(StreamEvent::Answer), draining),
        );
        let gone = Arc::clone(&abandoned);
        let task = async move {
            let mut pending = 0usize;
            let mut reading = true;
            let mut draining = false;
            loop {
                // The next event, unless the client goes away first (a cancelled call can
                // look like a clean end of its requests; the sink tells the difference).
                let event = {
                    let gone = future::poll_fn(|cx| match sink.poll_ready_unpin(cx) {
                        Poll::Ready(Err(_)) => Poll::Ready(()),
                        _ => Poll::Pending,
                    });
                    match future::select(events.next(), pin!(gone)).await {
                        Either::Left((Some(event), _)) => event,
                        Either::Left((None, _)) => {
                            log::debug!("ModelStreamInfer: events ended");
                            break;
                        }
                        Either::Right(((), _)) => {
                            log::debug!("ModelStreamInfer: the client went away");
                            abandoned.store(true, Ordering::Relaxed);
                            return Ok(());
                        }
                    }
                };
                let message = match event {
                    StreamEvent::Request(Ok(mut request)) => {
                        let received = Instant::now();
                        let id = std::mem::take(&mut request.id);
                        let answers_in = answers_in.clone();
                        let unsent = service.clone();
                        let model_version = request.model_version.clone();
                        let reply_id = id.clone();
                        let refused = if draining {
                            Err(Refusal::from(AdmitError::ShuttingDown))
                        } else {
                            service.admit(
                                &mut request,
                                Arc::clone(&abandoned),
                                |version, answering| {
                                    Box::new(move |result| {
                                        let answer = StreamAnswer {
                                            id: reply_id,
                                            received,
                                            version,
                                            answering,
                                            result,
                                        };
                                        // The stream has ended (its client went away): the
                                        // answer is counted here, as no one will send it.
                                        if let Err(e) = answers_in.unbounded_send(answer) {
                                            let answer = e.into_inner();
                                            let outcome = match answer.result {
                                                Ok(_) => Outcome::Cancelled,
                                                Err(failure) => Failure::from(failure).outcome(),
                                            };
                                            unsent.finish(
                                                outcome,
                                                answer.received,
                                                Some(&answer.version),
                                            );
                                        }
                                    })
                                },
                            )
                        };
                        match refused {
                            Ok(_) => {
                                pending += 1;
                                continue;
                            }
                            Err(refusal) => {
                                let failure = refusal.failure;
                                service.finish(
                                    failure.outcome(),
                                    received,
                                    refusal.version.as_deref(),
                                );
                                error_answer(&request.model_name, &model_version, id, &failure)
                            }
                        }
                    }
                    StreamEvent::Request(Err(e)) => {
                        log::debug!("ModelStreamInfer: the client went away: {e}");
                        abandoned.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    StreamEvent::RequestsEnded => {
                        log::debug!("ModelStreamInfer: the client has sent its last request ({pending} pending)");
                        reading = false;
                        if pending == 0 {
                            break;
                        }
                        continue;
                    }
                    StreamEvent::Draining => {
                        log::debug!("ModelStreamInfer: draining ({pending} pending)");
                        draining = true;
                        if pending == 0 {
                            break;
                        }
                        continue;
                    }
                    StreamEvent::Answer(answer) => {
                        pending -= 1;
                        service.stream_answer(answer)
                    }
                };
                sink.send((message, WriteFlags::default())).await?;
                if pending == 0 && (!reading || draining) {
                    break;
                }
            }
            sink.close().await
        };
        ctx.spawn(task.map(move |result: grpcio::Result<()>| {
            if let Err(e) = result {
                log::debug!("ModelStreamInfer ended: {e}");
            }
            // Requests of this stream still queued are not run.
            gone.store(true, Ordering::Relaxed);
            drop(open);
            drop(call);
        }));
    }

    /// The stream message for a finished request.
    fn stream_answer(&self, answer: StreamAnswer) -> pb::ModelStreamInferResponse {
        let version = answer.version;
        let model = version.model();
        let version_name = model.version.to_string();
        match answer.result {
            Ok((tensors, indices)) => {
                let id = answer.id.clone();
                let response =
                    kserve::response(model, answer.id, &indices, &answer.answering, tensors);
                if let Err(e) = kserve::check_size("answer", &response, self.max_message_size) {
                    let failure = Failure::from(e);
                    self.finish(failure.outcome(), answer.received, Some(&version));
                    return error_answer(&model.name, &version_name, id, &failure);
                }
                self.finish(Outcome::Ok, answer.received, Some(&version));
                pb::ModelStreamInferResponse {
                    infer_response: Some(response).into(),
                    ..Default::default()
                }
            }
            Err(failure) => {
                let failure = Failure::from(failure);
                self.finish(failure.outcome(), answer.received, Some(&version));
                error_answer(&model.name, &version_name, answer.id, &failure)
            }
        }
    }
}

/// What a stream's task reacts to.
enum StreamEvent {
    Request(grpcio::Result<pb::ModelInferRequest>),
    RequestsEnded,
    Answer(StreamAnswer),
    Draining,
}

/// A finished request of a stream.
struct StreamAnswer {
    id: String,
    received: Instant,
    /// The version that ran it.
    version: Arc<VersionHandle>,
    /// How the answer is made from the outputs.
    answering: Answering,
    result: JobResult,
}
