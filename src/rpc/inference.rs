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
//! it, on the completion-queue threads. Metadata calls answer from the lifecycle state;
//! `ModelInfer` and each `ModelStreamInfer` message are checked ([`super::tensors`]), handed
//! to the batcher's queue without blocking, and answered when the GPU-owner thread replies.
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
    DuplexSink, Method, MethodType, RequestStream, RpcContext, RpcStatus, RpcStatusCode,
    ServerStreamingSink, Service, ServiceBuilder, UnarySink, WriteFlags,
};

use super::tensors::{self, RequestError, MODEL_VERSION};
use super::InFlightCall;
use crate::batcher::stats::ModelStats;
use crate::batcher::{Job, JobFailure, JobResult, SubmitError, Submitter};
use crate::config::BatchingConfig;
use crate::gpu::{ModelInfo, ServingInfo};
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{Metrics, Outcome};
use crate::proto::grpc_service as pb;
use crate::proto::model_config as config_pb;

/// The platform name Triton gives ONNX models.
const PLATFORM: &str = "onnxruntime_onnx";
/// The protocol extensions this server implements.
const EXTENSIONS: [&str; 2] = ["model_configuration", "statistics"];

/// The service's shared state; cloned into each handler.
#[derive(Clone, Debug)]
pub struct InferenceService {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    stats: Arc<ModelStats>,
    queue: Submitter,
    batching: BatchingConfig,
}

impl InferenceService {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        stats: Arc<ModelStats>,
        queue: Submitter,
        batching: BatchingConfig,
    ) -> Self {
        InferenceService {
            lifecycle,
            metrics,
            stats,
            queue,
            batching,
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

/// Adds a unary method to `$builder` whose reply (a `Result<$resp, Refusal>`) is `$reply`,
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
                    config: Some(model_config(serving, &s.batching)).into(),
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
                    model_stats: vec![model_statistics(model, &s.stats)],
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

/// A request refused before it was queued: the status for the caller, the metrics outcome.
#[derive(Debug)]
struct Refusal {
    status: RpcStatus,
    outcome: Outcome,
}

impl Refusal {
    fn new(code: RpcStatusCode, outcome: Outcome, message: String) -> Self {
        Refusal {
            status: RpcStatus::with_message(code, message),
            outcome,
        }
    }
}

impl From<RequestError> for Refusal {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::NotFound(m) => {
                Refusal::new(RpcStatusCode::NOT_FOUND, Outcome::Invalid, m)
            }
            RequestError::Invalid(m) => {
                Refusal::new(RpcStatusCode::INVALID_ARGUMENT, Outcome::Invalid, m)
            }
        }
    }
}

/// The status and metrics outcome for a job that got no outputs.
fn failure_status(failure: JobFailure) -> (RpcStatus, Outcome) {
    match failure {
        JobFailure::DeadlineExceeded => (
            RpcStatus::with_message(
                RpcStatusCode::DEADLINE_EXCEEDED,
                "the request's timeout passed before it ran; it was not run".to_string(),
            ),
            Outcome::Deadline,
        ),
        JobFailure::Cancelled => (
            RpcStatus::with_message(
                RpcStatusCode::CANCELLED,
                "the request was cancelled before it ran".to_string(),
            ),
            Outcome::Cancelled,
        ),
        JobFailure::Unavailable(message) => (
            RpcStatus::with_message(RpcStatusCode::UNAVAILABLE, message),
            Outcome::Unavailable,
        ),
        JobFailure::Internal(message) => (
            RpcStatus::with_message(
                RpcStatusCode::INTERNAL,
                format!("ONNX Runtime failed to run the batch: {message}"),
            ),
            Outcome::Internal,
        ),
    }
}

impl InferenceService {
    /// Completes a unary metadata call.
    fn answer<T>(&self, ctx: RpcContext, sink: UnarySink<T>, reply: Result<T, Refusal>) {
        let call = InFlightCall::begin(&self.metrics);
        let sent = match reply {
            Ok(reply) => sink.success(reply),
            Err(refusal) => sink.fail(refusal.status),
        };
        ctx.spawn(sent.map(move |result| {
            if let Err(e) = result {
                log::debug!("inference metadata reply not delivered: {e}");
            }
            drop(call);
        }));
    }

    fn served_name(&self) -> String {
        self.lifecycle
            .serving()
            .map_or_else(String::new, |serving| serving.model.name.clone())
    }

    /// What is served, once the model is resident.
    fn serving(&self, name: &str, version: &str) -> Result<&ServingInfo, Refusal> {
        let Some(serving) = self.lifecycle.serving() else {
            return Err(Refusal::new(
                RpcStatusCode::UNAVAILABLE,
                Outcome::Unavailable,
                "the model is still loading; retry when the sidecar is READY".to_string(),
            ));
        };
        tensors::check_model(&serving.model, name, version)?;
        Ok(serving)
    }

    /// The served model if `name` and `version` name it. Before the model is resident, a
    /// call that needs it (`loaded`) is UNAVAILABLE.
    fn model(&self, name: &str, version: &str, loaded: bool) -> Result<&ModelInfo, Refusal> {
        match self.serving(name, version) {
            Ok(serving) => Ok(&serving.model),
            Err(refusal) if !loaded && refusal.status.code() == RpcStatusCode::UNAVAILABLE => {
                Err(Refusal::new(
                    RpcStatusCode::NOT_FOUND,
                    Outcome::Invalid,
                    format!("model {name:?} is not loaded yet"),
                ))
            }
            Err(refusal) => Err(refusal),
        }
    }

    /// Checks a request and queues it; `reply` gets its answer. Refuses without queueing
    /// when the sidecar is not READY, the request is bad or the queue is full.
    fn admit(
        &self,
        request: &mut pb::ModelInferRequest,
        abandoned: Arc<AtomicBool>,
        reply: crate::batcher::Reply,
    ) -> Result<(), Refusal> {
        match self.lifecycle.state() {
            State::Ready => {}
            State::Starting => {
                return Err(Refusal::new(
                    RpcStatusCode::UNAVAILABLE,
                    Outcome::Unavailable,
                    "the model is still loading; retry when the sidecar is READY".to_string(),
                ))
            }
            State::Draining | State::Stopped => {
                return Err(Refusal::new(
                    RpcStatusCode::UNAVAILABLE,
                    Outcome::Unavailable,
                    "the sidecar is shutting down and takes no new requests".to_string(),
                ))
            }
        }
        let model = &self
            .serving(&request.model_name, &request.model_version)?
            .model;
        let checked = tensors::check_request(model, request)?;
        let timeout = match (self.batching.default_timeout, checked.timeout) {
            (Some(default), Some(asked)) => Some(default.min(asked)),
            (default, asked) => default.or(asked),
        };
        let job = Job::new(
            checked.inputs,
            checked.rows,
            checked.outputs,
            timeout.map(|t| Instant::now() + t),
            abandoned,
            reply,
        );
        match self.queue.submit(job) {
            Ok(()) => {
                self.metrics.set_queue_depth(self.queue.depth());
                Ok(())
            }
            Err(SubmitError::Full(job)) => {
                job.withdraw();
                Err(Refusal::new(
                    RpcStatusCode::RESOURCE_EXHAUSTED,
                    Outcome::ResourceExhausted,
                    format!(
                        "the inference queue is full ({} requests wait, sidecar.batching.max-queue-size): back off and retry on this connection; do not reconnect",
                        self.queue.capacity()
                    ),
                ))
            }
            Err(SubmitError::Closed(job)) => {
                job.withdraw();
                Err(Refusal::new(
                    RpcStatusCode::UNAVAILABLE,
                    Outcome::Unavailable,
                    "the sidecar is shutting down and takes no new requests".to_string(),
                ))
            }
        }
    }

    /// Records a request's end in the metrics and the model statistics.
    fn finish(&self, outcome: Outcome, received: Instant) {
        self.metrics.inference_finished(outcome);
        self.stats
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
        let call = InFlightCall::begin(&self.metrics);
        let deadline = ctx.deadline();
        let abandoned = Arc::new(AtomicBool::new(false));
        let (answer, answered) = oneshot::channel::<JobResult>();
        let admitted = self.admit(
            &mut request,
            Arc::clone(&abandoned),
            Box::new(move |result| {
                let _ = answer.send(result);
            }),
        );
        let service = self.clone();
        let id = std::mem::take(&mut request.id);
        let task = async move {
            match admitted {
                Ok(()) => {}
                Err(refusal) => {
                    service.finish(refusal.outcome, received);
                    return sink.fail(refusal.status).await;
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
            let Some(result) = result else {
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
                    let Some(serving) = service.lifecycle.serving() else {
                        unreachable!("an answer comes only after READY")
                    };
                    let response = tensors::response(&serving.model, id, &indices, outputs);
                    service.finish(Outcome::Ok, received);
                    sink.send((response, WriteFlags::default())).await?;
                    sink.close().await
                }
                Err(failure) => {
                    let (status, outcome) = failure_status(failure);
                    service.finish(outcome, received);
                    sink.fail(status).await
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
        let call = InFlightCall::begin(&self.metrics);
        let open = StreamOpen::begin(&self.metrics);
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
                            Err(Refusal::new(
                                RpcStatusCode::UNAVAILABLE,
                                Outcome::Unavailable,
                                "the sidecar is shutting down and takes no new requests"
                                    .to_string(),
                            ))
                        } else {
                            service.admit(
                                &mut request,
                                Arc::clone(&abandoned),
                                Box::new(move |result| {
                                    let answer = StreamAnswer {
                                        id: reply_id,
                                        received,
                                        result,
                                    };
                                    // The stream has ended (its client went away): the
                                    // answer is counted here, as no one will send it.
                                    if let Err(e) = answers_in.unbounded_send(answer) {
                                        let answer = e.into_inner();
                                        let outcome = match answer.result {
                                            Ok(_) => Outcome::Cancelled,
                                            Err(failure) => failure_status(failure).1,
                                        };
                                        unsent.finish(outcome, answer.received);
                                    }
                                }),
                            )
                        };
                        match refused {
                            Ok(_) => {
                                pending += 1;
                                continue;
                            }
                            Err(refusal) => {
                                service.finish(refusal.outcome, received);
                                error_answer(
                                    &request.model_name,
                                    &model_version,
                                    id,
                                    &refusal.status,
                                )
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
        let model = self.lifecycle.serving().map(|s| &s.model);
        match (answer.result, model) {
            (Ok((tensors, indices)), Some(model)) => {
                self.finish(Outcome::Ok, answer.received);
                pb::ModelStreamInferResponse {
                    infer_response: Some(tensors::response(model, answer.id, &indices, tensors))
                        .into(),
                    ..Default::default()
                }
            }
            (Err(failure), model) => {
                let (status, outcome) = failure_status(failure);
                self.finish(outcome, answer.received);
                let name = model.map(|m| m.name.as_str()).unwrap_or_default();
                error_answer(name, MODEL_VERSION, answer.id, &status)
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
    result: JobResult,
}

/// A stream message carrying an error for one request, with its `id`.
fn error_answer(
    model_name: &str,
    model_version: &str,
    id: String,
    status: &RpcStatus,
) -> pb::ModelStreamInferResponse {
    pb::ModelStreamInferResponse {
        error_message: format!("{}: {}", code_name(status.code()), status.message()),
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

/// Counts a stream as open until dropped.
struct StreamOpen(prometheus::IntGauge);

impl StreamOpen {
    fn begin(metrics: &Metrics) -> Self {
        let gauge = metrics.streams_open().clone();
        gauge.inc();
        StreamOpen(gauge)
    }
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `ModelMetadata`: the inputs and outputs with datatype and shape (-1: any size; with
/// batching, the first dimension is the batch).
fn model_metadata(model: &ModelInfo) -> pb::ModelMetadataResponse {
    use pb::model_metadata_response::TensorMetadata;
    let signature = &model.signature;
    let tensor = |spec: &crate::batcher::tensor::TensorSpec| TensorMetadata {
        name: spec.name.clone(),
        datatype: spec.datatype.name().to_string(),
        shape: signature.protocol_dims(spec),
        ..Default::default()
    };
    pb::ModelMetadataResponse {
        name: model.name.clone(),
        versions: vec![MODEL_VERSION.to_string()],
        platform: PLATFORM.to_string(),
        inputs: signature.inputs.iter().map(tensor).collect(),
        outputs: signature.outputs.iter().map(tensor).collect(),
        ..Default::default()
    }
}

/// `ModelConfig`: a truthful minimal Triton model configuration.
fn model_config(serving: &ServingInfo, batching: &BatchingConfig) -> config_pb::ModelConfig {
    use config_pb::model_instance_group::Kind;
    let model = &serving.model;
    let signature = &model.signature;
    let data_type = |spec: &crate::batcher::tensor::TensorSpec| config_data_type(spec.datatype);
    let mut config = config_pb::ModelConfig {
        name: model.name.clone(),
        platform: PLATFORM.to_string(),
        backend: "onnxruntime".to_string(),
        max_batch_size: i32::try_from(signature.max_batch_size).unwrap_or(i32::MAX),
        input: signature
            .inputs
            .iter()
            .map(|spec| config_pb::ModelInput {
                name: spec.name.clone(),
                data_type: data_type(spec).into(),
                dims: signature.config_dims(spec),
                ..Default::default()
            })
            .collect(),
        output: signature
            .outputs
            .iter()
            .map(|spec| config_pb::ModelOutput {
                name: spec.name.clone(),
                data_type: data_type(spec).into(),
                dims: signature.config_dims(spec),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![config_pb::ModelInstanceGroup {
            name: format!("{}_0", model.name),
            kind: match &serving.gpu {
                Some(_) => Kind::KIND_GPU,
                None => Kind::KIND_CPU,
            }
            .into(),
            count: 1,
            gpus: serving.gpu.iter().map(|g| g.ordinal).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    if signature.batching() {
        config.scheduling_choice =
            Some(config_pb::model_config::Scheduling_choice::DynamicBatching(
                config_pb::ModelDynamicBatching {
                    max_queue_delay_microseconds: u64::try_from(
                        batching.max_queue_delay.as_micros(),
                    )
                    .unwrap_or(u64::MAX),
                    default_queue_policy: Some(config_pb::ModelQueuePolicy {
                        max_queue_size: batching.max_queue_size,
                        default_timeout_microseconds: batching
                            .default_timeout
                            .map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
                        allow_timeout_override: true,
                        timeout_action: config_pb::model_queue_policy::TimeoutAction::REJECT.into(),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                },
            ));
    }
    config
}

/// Triton's `DataType` for a tensor datatype.
fn config_data_type(datatype: crate::batcher::tensor::DataType) -> config_pb::DataType {
    use crate::batcher::tensor::DataType as T;
    use config_pb::DataType as C;
    match datatype {
        T::Bool => C::TYPE_BOOL,
        T::Uint8 => C::TYPE_UINT8,
        T::Uint16 => C::TYPE_UINT16,
        T::Uint32 => C::TYPE_UINT32,
        T::Uint64 => C::TYPE_UINT64,
        T::Int8 => C::TYPE_INT8,
        T::Int16 => C::TYPE_INT16,
        T::Int32 => C::TYPE_INT32,
        T::Int64 => C::TYPE_INT64,
        T::Fp16 => C::TYPE_FP16,
        T::Fp32 => C::TYPE_FP32,
        T::Fp64 => C::TYPE_FP64,
        T::Bytes => C::TYPE_STRING,
        T::Unsupported("BF16") => C::TYPE_BF16,
        T::Unsupported(_) => C::TYPE_INVALID,
    }
}

/// `ModelStatistics` for the served model.
fn model_statistics(model: &ModelInfo, stats: &ModelStats) -> pb::ModelStatistics {
    let duration = |phase: &crate::batcher::stats::Phase| {
        let (count, ns) = phase.read();
        Some(pb::StatisticDuration {
            count,
            ns,
            ..Default::default()
        })
        .into()
    };
    pb::ModelStatistics {
        name: model.name.clone(),
        version: MODEL_VERSION.to_string(),
        last_inference: stats.last_inference_ms.load(Ordering::Relaxed),
        inference_count: stats.inferences.load(Ordering::Relaxed),
        execution_count: stats.executions.load(Ordering::Relaxed),
        inference_stats: Some(pb::InferStatistics {
            success: duration(&stats.success),
            fail: duration(&stats.fail),
            queue: duration(&stats.queue),
            compute_input: duration(&stats.compute_input),
            compute_infer: duration(&stats.compute_infer),
            compute_output: duration(&stats.compute_output),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
