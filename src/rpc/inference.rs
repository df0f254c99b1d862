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
//! mapped to gRPC in [`super::status`].
//!
//! `ModelInfer` is registered as a server-streaming method that sends exactly one message: on
//! the wire that is a unary call, and unlike grpcio's unary sink, the streaming sink tells
//! when the client cancels or goes away, so a request whose caller is gone is never run. The
//! methods not served here (repository, shared memory, trace, logging) answer UNIMPLEMENTED.

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

use super::kserve::{self, Answering, MODEL_VERSION};
use super::metadata::{model_config, model_metadata, model_statistics};
use super::status::{error_answer, Failure};
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{GaugeGuard, Metrics, Outcome};
use crate::model::job::{JobResult, Reply};
use crate::model::{AdmitError, ModelHandle};
use crate::proto::grpc_service as pb;
use crate::serving::{LoadedModel, ServingInfo};

/// The protocol extensions this server implements.
const EXTENSIONS: [&str; 3] = ["classification", "model_configuration", "statistics"];

/// The service's shared state; cloned into each handler.
#[derive(Clone, Debug)]
pub struct InferenceService {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    model: Arc<ModelHandle>,
    /// `sidecar.rpc.max-message-size`, for requests and answers alike.
    max_message_size: usize,
}

impl InferenceService {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        model: Arc<ModelHandle>,
        max_message_size: usize,
    ) -> Self {
        InferenceService {
            lifecycle,
            metrics,
            model,
            max_message_size,
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
                ready: s.lifecycle.state() == State::Ready,
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
            s.model(&req.name, &req.version, false)
                .map(|_| ModelReadyResponse {
                    ready: s.lifecycle.state() == State::Ready,
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
        |s, req| { s.model(&req.name, &req.version, true).map(model_metadata) }
    );
    unary!(
        builder,
        service,
        "ModelConfig",
        ModelConfigRequest,
        ModelConfigResponse,
        |s, req| {
            s.serving(&req.name, &req.version)
                .map(|serving| ModelConfigResponse {
                    config: Some(model_config(serving, s.model.batching())).into(),
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
            // An empty name asks for every model: here, the one.
            let name = if req.name.is_empty() {
                s.served_name()
            } else {
                req.name.clone()
            };
            s.model(&name, &req.version, true)
                .map(|model| ModelStatisticsResponse {
                    model_stats: vec![model_statistics(model, s.model.stats())],
                    ..Default::default()
                })
        }
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

    fn served_name(&self) -> String {
        self.model
            .loaded()
            .map_or_else(String::new, |model| model.name.clone())
    }

    /// What is served, once the model is resident.
    fn serving(&self, name: &str, version: &str) -> Result<&ServingInfo, Failure> {
        let serving = self.lifecycle.serving().ok_or(AdmitError::Loading)?;
        kserve::check_model(&serving.model, name, version)?;
        Ok(serving)
    }

    /// The served model if `name` and `version` name it. Before the model is resident, a
    /// call that needs it (`loaded`) is UNAVAILABLE, one that asks about it NOT_FOUND.
    fn model(&self, name: &str, version: &str, loaded: bool) -> Result<&LoadedModel, Failure> {
        match self.serving(name, version) {
            Ok(serving) => Ok(&serving.model),
            Err(Failure::Admission(AdmitError::Loading)) if !loaded => {
                Err(Failure::NotLoaded(name.to_string()))
            }
            Err(failure) => Err(failure),
        }
    }

    /// Decodes a request against the model (tokenizing its texts, if it sends texts) and
    /// submits it through the model's handle; the reply that `reply` makes, knowing how the
    /// answer is made from the outputs, gets its answer. Refuses without queueing when the
    /// model takes no requests, the request is bad or the queue is full.
    fn admit(
        &self,
        request: &mut pb::ModelInferRequest,
        abandoned: Arc<AtomicBool>,
        reply: impl FnOnce(Answering) -> Reply,
    ) -> Result<(), Failure> {
        let model = self.model.ready()?;
        kserve::check_size("request", request, self.max_message_size)?;
        let mut checked = kserve::check_request(model, request)?;
        if let Some(texts) = &checked.texts {
            // The codec takes texts only once the tokenizer is bound, before READY.
            let text = self.model.text().ok_or(AdmitError::Loading)?;
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tokens = text.tokenize(&texts)?;
            checked.request.inputs = tokens.inputs;
            checked.answering.mask = Some(tokens.mask);
        }
        self.model
            .submit(checked.request, abandoned, reply(checked.answering))?;
        Ok(())
    }

    /// Records a request's end in the metrics and the model statistics.
    fn finish(&self, outcome: Outcome, received: Instant) {
        self.metrics.inference_finished(outcome);
        self.model
            .stats()
            .record_request(outcome == Outcome::Ok, received.elapsed());
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
        let (answer, answered) = oneshot::channel::<(Answering, JobResult)>();
        let admitted = self.admit(&mut request, Arc::clone(&abandoned), |answering| {
            Box::new(move |result| {
                let _ = answer.send((answering, result));
            })
        });
        let service = self.clone();
        let id = std::mem::take(&mut request.id);
        let task = async move {
            if let Err(failure) = admitted {
                service.finish(failure.outcome(), received);
                return sink.fail(failure.status()).await;
            }
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
            let Some((answering, result)) = result else {
                abandoned.store(true, Ordering::Relaxed);
                let outcome = if deadline.exceeded() {
                    Outcome::Deadline
                } else {
                    Outcome::Cancelled
                };
                service.finish(outcome, received);
                return Ok(());
            };
            match result {
                Ok((outputs, indices)) => {
                    let Some(model) = service.model.loaded() else {
                        unreachable!("an answer comes only after READY")
                    };
                    let response = kserve::response(model, id, &indices, &answering, outputs);
                    if let Err(e) =
                        kserve::check_size("answer", &response, service.max_message_size)
                    {
                        let failure = Failure::from(e);
                        service.finish(failure.outcome(), received);
                        return sink.fail(failure.status()).await;
                    }
                    service.finish(Outcome::Ok, received);
                    sink.send((response, WriteFlags::default())).await?;
                    sink.close().await
                }
                Err(failure) => {
                    let failure = Failure::from(failure);
                    service.finish(failure.outcome(), received);
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
                            Err(Failure::from(AdmitError::ShuttingDown))
                        } else {
                            service.admit(&mut request, Arc::clone(&abandoned), |answering| {
                                Box::new(move |result| {
                                    let answer = StreamAnswer {
                                        id: reply_id,
                                        received,
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
                                        unsent.finish(outcome, answer.received);
                                    }
                                })
                            })
                        };
                        match refused {
                            Ok(_) => {
                                pending += 1;
                                continue;
                            }
                            Err(failure) => {
                                service.finish(failure.outcome(), received);
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
        let model = self.model.loaded();
        match (answer.result, model) {
            (Ok((tensors, indices)), Some(model)) => {
                let id = answer.id.clone();
                let response =
                    kserve::response(model, answer.id, &indices, &answer.answering, tensors);
                if let Err(e) = kserve::check_size("answer", &response, self.max_message_size) {
                    let failure = Failure::from(e);
                    self.finish(failure.outcome(), answer.received);
                    return error_answer(&model.name, MODEL_VERSION, id, &failure);
                }
                self.finish(Outcome::Ok, answer.received);
                pb::ModelStreamInferResponse {
                    infer_response: Some(response).into(),
                    ..Default::default()
                }
            }
            (Err(failure), model) => {
                let failure = Failure::from(failure);
                self.finish(failure.outcome(), answer.received);
                let name = model.map(|m| m.name.as_str()).unwrap_or_default();
                error_answer(name, MODEL_VERSION, answer.id, &failure)
            }
            (Ok(_), None) => unreachable!("an answer comes only after READY"),
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
    /// How the answer is made from the outputs.
    answering: Answering,
    result: JobResult,
}
