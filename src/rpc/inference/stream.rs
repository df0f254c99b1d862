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

//! `ModelStreamInfer` on the completion-queue threads: one task per stream reads its
//! requests, admits each as `ModelInfer` does, and sends each answer (or an `error_message`
//! for a request refused or failed, the stream staying open) in the order they finish; the
//! stream ends once the client has half-closed and every answer is sent, or once the sidecar
//! drains.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_channel::mpsc;
use futures_util::future::{self, Either};
use futures_util::{stream, FutureExt, SinkExt, StreamExt};
use grpcio::{DuplexSink, RequestStream, RpcContext, WriteFlags};

use super::infer::{Delivery, Refusal};
use super::InferenceService;
use crate::lifecycle::State;
use crate::metrics::{GaugeGuard, Outcome};
use crate::model::job::{Caller, JobResult};
use crate::model::{AdmitError, ModelVersion};
use crate::proto::grpc_service as pb;
use crate::rpc::status::{error_answer, Failure};

impl InferenceService {
    /// `ModelStreamInfer`: requests in, answers out in the order they finish, each with its
    /// request's `id`; a bad request gets an `error_message` answer and the stream stays open.
    /// The stream ends (OK) when the client has half-closed and every answer is sent, or when
    /// the sidecar drains (after the answers of what was queued). A client that goes away
    /// abandons its queued requests.
    pub(super) fn model_stream_infer(
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
                                Arc::clone(&abandoned) as Arc<dyn Caller>,
                                |version, delivery| {
                                    Box::new(move |result| {
                                        let answer = StreamAnswer {
                                            id: reply_id,
                                            received,
                                            version,
                                            delivery,
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
        let StreamAnswer {
            id,
            received,
            version,
            delivery,
            result,
        } = answer;
        let reply_id = id.clone();
        match self.respond(&version, id, &delivery, result) {
            Ok(response) => {
                self.finish(Outcome::Ok, received, Some(&version));
                pb::ModelStreamInferResponse {
                    infer_response: Some(response).into(),
                    ..Default::default()
                }
            }
            Err(failure) => {
                self.finish(failure.outcome(), received, Some(&version));
                error_answer(
                    &version.name,
                    &version.version.to_string(),
                    reply_id,
                    &failure,
                )
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
    version: Arc<ModelVersion>,
    /// How the answer is made from the outputs.
    delivery: Delivery,
    result: JobResult,
}
