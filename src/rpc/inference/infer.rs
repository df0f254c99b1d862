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

//! `ModelInfer` on the completion-queue threads: a request is decoded by the codec, checked
//! against the version it is routed to and queued without blocking ([`InferenceService::admit`],
//! shared with the stream), then answered when the GPU-owner thread replies, or failed with
//! the status [`super::super::status`] maps; a caller that goes away abandons its request.
//!
//! By default (`sidecar.rpc.watch-unary-cancellation`) `ModelInfer` is registered as a
//! server-streaming method that sends exactly one message: on the wire that is a unary call,
//! and unlike grpcio's unary sink, the streaming sink tells when the client cancels or goes
//! away, so a request whose caller is gone is never run. It sends the answer and the status in
//! two batches, though, each a completion to wait for; registered as unary, the answer and
//! status go in one, and only the call's deadline, compared with the clock before the request
//! runs, tells that its caller has gone.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_channel::oneshot;
use futures_util::future::{self, Either};
use futures_util::{FutureExt, SinkExt};
use grpcio::{Deadline, RpcContext, RpcStatus, ServerStreamingSink, UnarySink, WriteFlags};

use super::InferenceService;
use crate::metrics::{GaugeGuard, Outcome};
use crate::model::job::{Caller, JobFailure, JobResult, Reply};
use crate::model::outputs::Answering;
use crate::model::{AdmitError, ModelVersion};
use crate::proto::grpc_service as pb;
use crate::rpc::kserve;
use crate::rpc::shared_memory::OutputPlacements;
use crate::rpc::status::Failure;

/// How a request's answer is made and delivered: its outputs from the model's (pooling, top
/// classes), and those written into shared memory regions.
pub(super) struct Delivery {
    pub answering: Answering,
    pub placements: OutputPlacements,
}

/// A request refused, and the version it was routed to, if it got that far.
pub(super) struct Refusal {
    pub failure: Failure,
    pub version: Option<Arc<ModelVersion>>,
}

impl From<AdmitError> for Refusal {
    fn from(e: AdmitError) -> Self {
        Refusal {
            failure: e.into(),
            version: None,
        }
    }
}

impl InferenceService {
    /// Decodes a request (before the model's routing table is taken) and checks it against
    /// the version it is routed to (whose text stage tokenizes its texts, if it sends texts),
    /// then submits it to that version's queue; the reply that `reply` makes, knowing the
    /// version and how the answer is made from the outputs, gets its answer. Refuses without
    /// queueing when the model takes no requests, the request is bad or the queue is full.
    pub(super) fn admit(
        &self,
        request: &mut pb::ModelInferRequest,
        caller: Arc<dyn Caller>,
        reply: impl FnOnce(Arc<ModelVersion>, Delivery) -> Reply,
    ) -> Result<Arc<ModelVersion>, Refusal> {
        let model = self.repository.model(&request.model_name)?;
        let asked = request.model_version.clone();
        // Counted against the version it would have gone to.
        let refused = |failure: Failure| Refusal {
            failure,
            version: model.version(&asked).ok(),
        };
        let placements = self
            .shared_memory
            .place(request, self.max_message_size)
            .map_err(|e| refused(e.into()))?;
        let decoded = kserve::check_size("request", request, self.max_message_size)
            .and_then(|()| kserve::decode(request))
            .map_err(|e| refused(e.into()))?;
        model.route(&asked, |version| {
            let refuse = |failure: Failure| Refusal {
                failure,
                version: Some(Arc::clone(version)),
            };
            let checked = version.check(decoded).map_err(|e| refuse(e.into()))?;
            version
                .submit(
                    checked.request,
                    caller,
                    reply(
                        Arc::clone(version),
                        Delivery {
                            answering: checked.answering,
                            placements,
                        },
                    ),
                )
                .map_err(|e| refuse(e.into()))?;
            Ok(Arc::clone(version))
        })
    }

    /// The answer to request `id`, made from what `version` answered it with (`result`), or
    /// why it has none: it failed, or its answer is larger than `max-message-size`.
    pub(super) fn respond(
        &self,
        version: &ModelVersion,
        id: String,
        delivery: &Delivery,
        result: JobResult,
    ) -> Result<pb::ModelInferResponse, Failure> {
        let (tensors, indices) = result?;
        let outputs = version.answer(&delivery.answering, tensors, &indices);
        let mut response = kserve::response(&version.name, version.version, id, outputs);
        delivery.placements.write(&mut response)?;
        kserve::check_size("answer", &response, self.max_message_size)?;
        Ok(response)
    }

    /// Admits one `ModelInfer` request for `caller`; its answer comes on the receiver.
    fn admit_call(
        &self,
        request: &mut pb::ModelInferRequest,
        caller: Arc<dyn Caller>,
    ) -> (
        Result<Arc<ModelVersion>, Refusal>,
        oneshot::Receiver<Answer>,
    ) {
        let (answer, answered) = oneshot::channel::<Answer>();
        let admitted = self.admit(request, caller, |version, delivery| {
            Box::new(move |result| {
                let _ = answer.send((version, delivery, result));
            })
        });
        (admitted, answered)
    }

    /// Counts a refused call, and the status it gets.
    fn refused(&self, refusal: Refusal, received: Instant) -> RpcStatus {
        let Refusal { failure, version } = refusal;
        self.finish(failure.outcome(), received, version.as_deref());
        failure.status()
    }

    /// Makes and counts the reply to request `id` from its `answer`: the response, or the
    /// status it fails with.
    fn reply(
        &self,
        id: String,
        answer: Answer,
        received: Instant,
    ) -> Result<pb::ModelInferResponse, RpcStatus> {
        let (version, delivery, result) = answer;
        let reply = self.respond(&version, id, &delivery, result);
        let outcome = reply
            .as_ref()
            .map_or_else(Failure::outcome, |_| Outcome::Ok);
        self.finish(outcome, received, Some(&version));
        reply.map_err(|failure| failure.status())
    }

    /// `ModelInfer` registered as server-streaming: one request, one answer, its caller
    /// watched while it waits (see the module comment).
    pub(super) fn model_infer_watched(
        &mut self,
        ctx: RpcContext,
        mut request: pb::ModelInferRequest,
        mut sink: ServerStreamingSink<pb::ModelInferResponse>,
    ) {
        let received = Instant::now();
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        let deadline = ctx.deadline();
        let abandoned = Arc::new(AtomicBool::new(false));
        let caller: Arc<dyn Caller> = Arc::clone(&abandoned) as _;
        let (admitted, answered) = self.admit_call(&mut request, caller);
        let service = self.clone();
        let id = std::mem::take(&mut request.id);
        let task = async move {
            let routed = match admitted {
                Ok(version) => version,
                Err(refusal) => return sink.fail(service.refused(refusal, received)).await,
            };
            // Wait for the answer, or for the caller to go (cancel, disconnect, deadline).
            let answer = {
                let gone = future::poll_fn(|cx| match sink.poll_ready_unpin(cx) {
                    Poll::Ready(Err(_)) => Poll::Ready(()),
                    _ => Poll::Pending,
                });
                match future::select(answered, pin!(gone)).await {
                    Either::Left((answer, _)) => answer.ok(),
                    Either::Right(((), _)) => None,
                }
            };
            let Some(answer) = answer else {
                abandoned.store(true, Ordering::Relaxed);
                let outcome = if deadline.exceeded() {
                    Outcome::Deadline
                } else {
                    Outcome::Cancelled
                };
                service.finish(outcome, received, Some(&routed));
                return Ok(());
            };
            match service.reply(id, answer, received) {
                Ok(response) => {
                    sink.send((response, WriteFlags::default())).await?;
                    sink.close().await
                }
                Err(status) => sink.fail(status).await,
            }
        };
        spawn_call(&ctx, call, task);
    }

    /// `ModelInfer` registered as unary: one request, one answer sent with its status in one
    /// batch. A caller that cancels or goes away is not seen before its request runs; one
    /// whose deadline passes is.
    pub(super) fn model_infer_unary(
        &mut self,
        ctx: RpcContext,
        mut request: pb::ModelInferRequest,
        sink: UnarySink<pb::ModelInferResponse>,
    ) {
        let received = Instant::now();
        let call = GaugeGuard::begin(self.metrics.calls_in_flight());
        let caller = Arc::new(CallDeadline(ctx.deadline()));
        let (admitted, answered) = self.admit_call(&mut request, caller);
        let service = self.clone();
        let id = std::mem::take(&mut request.id);
        let task = async move {
            let routed = match admitted {
                Ok(version) => version,
                Err(refusal) => return sink.fail(service.refused(refusal, received)).await,
            };
            // Every job is answered (a dropped one as not run): the sender goes only with it.
            let Ok(answer) = answered.await else {
                let failure = Failure::from(JobFailure::NotRun);
                service.finish(failure.outcome(), received, Some(&routed));
                return sink.fail(failure.status()).await;
            };
            match service.reply(id, answer, received) {
                Ok(response) => sink.success(response).await,
                Err(status) => sink.fail(status).await,
            }
        };
        spawn_call(&ctx, call, task);
    }
}

/// What a `ModelInfer` request is answered with: the version that ran it, how its answer is
/// made, and the job's result.
type Answer = (Arc<ModelVersion>, Delivery, JobResult);

/// Runs a call's `task` on its completion queue; the call counts as in flight until it ends.
fn spawn_call(
    ctx: &RpcContext,
    call: GaugeGuard,
    task: impl std::future::Future<Output = grpcio::Result<()>> + Send + 'static,
) {
    ctx.spawn(task.map(move |result| {
        if let Err(e) = result {
            log::debug!("ModelInfer: reply not delivered: {e}");
        }
        drop(call);
    }));
}

/// A unary call's deadline, which only the clock tells has passed: grpcio's unary sink does
/// not tell when the call ends.
struct CallDeadline(Deadline);

impl Caller for CallDeadline {
    fn gone(&self) -> Option<JobFailure> {
        self.0.exceeded().then_some(JobFailure::DeadlineExceeded)
    }
}
