/*
 * Copyright 2026 The gpu-sidecar Authors
 *
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License.
 * You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 */

package org.apache.flink.gpusidecar;

import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import inference.GRPCInferenceServiceGrpc;
import inference.GrpcService.ModelInferRequest;
import inference.GrpcService.ModelInferResponse;
import inference.GrpcService.ModelStreamInferResponse;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A connection to one gpu-sidecar and one of its models. {@link #connect} checks the model's
 * metadata once; {@link #infer} sends each request on one {@code ModelStreamInfer} stream and
 * matches the answer to it by {@code id}. Thread-safe. Its parts: the channel ({@link
 * SidecarChannel}), the unary calls ({@link SidecarCalls}), the backoff ({@link Backoff}),
 * each request awaiting its answer ({@link PendingRequest}); this class owns the stream, its
 * reconnects and each request's retries and timeout.
 *
 * <p>Errors: an answer of RESOURCE_EXHAUSTED (the sidecar's queue is full) or UNAVAILABLE (it
 * is starting or draining) is retried after an exponential backoff with jitter; a stream that
 * breaks (the sidecar stopped or restarted) is reopened with backoff and every unanswered
 * request is sent again on the new one; INVALID_ARGUMENT, NOT_FOUND and the other codes fail
 * the request with the sidecar's message. A request that has no answer when its timeout passes
 * fails with DEADLINE_EXCEEDED and the last status seen for it. Every request is answered at
 * most once. Each sending of a request (the first, a retry, a resend after a reconnect)
 * carries the time left to it as the protocol's {@code timeout} parameter, so that the sidecar
 * never runs what the client has stopped waiting for.
 *
 * <p>Threads: gRPC's event loop only reads answers and matches them to requests. Every request
 * is completed on the client's one answering thread, where the answer is decoded and what
 * waits on it runs (splitting a coalesced answer, the caller's decoding into records, sending
 * the records that waited for the freed request): a slow decoder delays this client's answers
 * alone, never the event loop that every channel of the TaskManager shares.
 */
public final class SidecarClient implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(SidecarClient.class);
    /** At most one metadata read per this long because requests were refused as invalid. */
    private static final long REREAD_INTERVAL_NANOS = TimeUnit.SECONDS.toNanos(1);
    /** The name of each client's answering thread, before its number. */
    private static final String ANSWERING_THREAD = "gpu-sidecar-client-answers";

    static {
        SidecarChannel.quietNettyBootstrap();
    }

    private final Endpoint endpoint;
    private final String modelName;
    private final SidecarOptions options;
    private final SidecarChannel channel;
    private final SidecarCalls calls;
    private final Backoff backoff;
    private final GRPCInferenceServiceGrpc.GRPCInferenceServiceStub stub;
    private final ScheduledExecutorService timer;
    private final ExecutorService answering;
    private final Semaphore inFlight;
    private final ConcurrentHashMap<String, PendingRequest> pending = new ConcurrentHashMap<>();
    private final AtomicLong nextId = new AtomicLong();
    private final AtomicLong requests = new AtomicLong();
    /** The version the last answer came from, and whether the metadata is being read again. */
    private volatile String answeringVersion;
    private final java.util.concurrent.atomic.AtomicBoolean rereading =
            new java.util.concurrent.atomic.AtomicBoolean();
    /** When a refusal as invalid last made the client read the metadata again (nanoTime). */
    private final AtomicLong lastRefusalReread = new AtomicLong(System.nanoTime() - REREAD_INTERVAL_NANOS);
    private final AtomicLong retries = new AtomicLong();
    private final AtomicLong reconnects = new AtomicLong();
    private final AtomicInteger reconnectAttempt = new AtomicInteger();
    private final Coalescing coalescing;
    private volatile ModelInfo model;
    private volatile boolean closed;
    private volatile String streamStatus = "not opened";

    private final Object streamLock = new Object();
    private StreamObserver<ModelInferRequest> stream; // guarded by streamLock
    private long generation; // guarded by streamLock
    private boolean reconnectScheduled; // guarded by streamLock

    private SidecarClient(Endpoint endpoint, String modelName, SidecarOptions options) {
        this.endpoint = endpoint;
        this.modelName = modelName;
        this.options = options;
        this.channel = new SidecarChannel(endpoint, options.tls());
        this.calls = new SidecarCalls(channel, modelName, options, describe());
        this.backoff = new Backoff(options.initialBackoff(), options.maxBackoff());
        stub = GRPCInferenceServiceGrpc.newStub(channel.channel());
        timer =
                Executors.newSingleThreadScheduledExecutor(
                        SidecarChannel.daemonThreads("gpu-sidecar-client-timer"));
        answering = Executors.newSingleThreadExecutor(SidecarChannel.daemonThreads(ANSWERING_THREAD));
        inFlight = new Semaphore(options.maxInFlight());
        coalescing =
                new Coalescing(
                        options.maxRecordsPerRequest(),
                        this::send,
                        pending::isEmpty,
                        () -> inFlight.availablePermits() > 0);
        // One sweep for every request's timeout, rather than a timer task per request.
        long sweep =
                Math.max(
                        TimeUnit.MILLISECONDS.toNanos(5),
                        Math.min(
                                options.requestTimeout().toNanos() / 20,
                                TimeUnit.MILLISECONDS.toNanos(100)));
        timer.scheduleWithFixedDelay(this::expireOverdue, sweep, sweep, TimeUnit.NANOSECONDS);
    }

    /**
     * Connects to the sidecar at {@code endpoint} ({@code unix:/path.sock} or {@code
     * host:port}) and checks that it serves {@code model}, retrying while it is starting, for
     * up to the connect timeout. Fails with a {@link SidecarException} that names the endpoint.
     */
    public static SidecarClient connect(String endpoint, String model, SidecarOptions options) {
        if (model == null || model.isEmpty()) {
            throw new IllegalArgumentException("the model name is empty");
        }
        SidecarClient client = new SidecarClient(Endpoint.parse(endpoint), model, options);
        try {
            client.model = client.calls.fetchMetadata();
            client.coalescing.setMaxRows(client.calls.maxBatchSize());
            synchronized (client.streamLock) {
                client.openStream();
            }
            return client;
        } catch (RuntimeException e) {
            client.close();
            throw e;
        }
    }

    /** The model's inputs and outputs, as the sidecar described them on connect. */
    public ModelInfo model() {
        return model;
    }

    public Endpoint endpoint() {
        return endpoint;
    }

    public SidecarOptions options() {
        return options;
    }

    /**
     * Every model the sidecar knows, each version with its state (READY, LOADING,
     * UNAVAILABLE and why): Triton's RepositoryIndex.
     */
    public List<IndexEntry> repositoryIndex() {
        return calls.repositoryIndex();
    }

    /** Requests sent (each once, however often it was retried), since connect. */
    public long requests() {
        return requests.get();
    }

    /** Answers that asked for a retry (RESOURCE_EXHAUSTED, UNAVAILABLE), since connect. */
    public long retries() {
        return retries.get();
    }

    /** Streams opened again after one broke, since connect. */
    public long reconnects() {
        return reconnects.get();
    }

    /** Requests sent and not yet answered or failed. */
    public int inFlight() {
        return pending.size();
    }

    /** Records waiting in the client for a request (all request permits taken). */
    public int waiting() {
        return coalescing.waiting();
    }

    /** What the client last knew of the sidecar: for messages about a request's timeout. */
    public String status() {
        synchronized (streamLock) {
            String state = stream != null ? "stream open" : "reconnecting after: " + streamStatus;
            return "gpu-sidecar at " + endpoint + ", model '" + modelName + "': " + state + "; "
                    + pending.size() + " requests in flight, " + retries.get() + " retries, "
                    + reconnects.get() + " reconnects";
        }
    }

    /**
     * Sends one record's named input tensors and completes with its named output tensors, or
     * with a {@link SidecarException}. Never blocks: while {@code maxInFlight} requests are
     * unanswered the record waits in the client's queue (Flink's async capacity bounds it),
     * and a record of a model that batches shares the next request with the others waiting,
     * up to {@code maxRecordsPerRequest} ({@link Coalescing}).
     */
    public CompletableFuture<Map<String, Tensor>> infer(Map<String, Tensor> inputs) {
        if (closed) {
            return CompletableFuture.failedFuture(
                    SidecarException.of("CANCELLED", describe() + ": the client is closed"));
        }
        ModelInfo info = model;
        return coalescing.infer(inputs, coalescing.enabled() && info != null && info.batched());
    }

    /** Sends one request of named input tensors if a request permit is free; null if none is. */
    private CompletableFuture<Map<String, Tensor>> send(Map<String, Tensor> inputs) {
        if (closed) {
            return CompletableFuture.failedFuture(
                    SidecarException.of("CANCELLED", describe() + ": the client is closed"));
        }
        String id = Long.toString(nextId.incrementAndGet());
        ModelInferRequest message = KServeCodec.request(modelName, options.modelVersion(), id, inputs);
        if (!inFlight.tryAcquire()) {
            return null;
        }
        requests.incrementAndGet();
        PendingRequest request =
                new PendingRequest(id, message, System.nanoTime() + options.requestTimeout().toNanos());
        // One callback, in this order: the permit is free before what waits is sent.
        request.future.whenComplete(
                (outputs, error) -> {
                    inFlight.release();
                    coalescing.flush();
                });
        pending.put(id, request);
        if (closed) {
            // close() may have swept the pending requests before this one was added.
            fail(request, SidecarException.of("CANCELLED", describe() + ": the client closed"));
            return request.future;
        }
        transmit(request);
        return request.future;
    }

    /** Sends a request on the open stream, or leaves it for the reconnect to send. */
    private void transmit(PendingRequest request) {
        synchronized (streamLock) {
            request.backingOff = false;
            if (stream == null) {
                scheduleReconnect();
                return;
            }
            stream.onNext(request.withRemainingTime(System.nanoTime()));
            request.sentOn = generation;
        }
    }

    /** Opens a stream and sends on it every request the last one left unanswered. */
    private void openStream() {
        // Caller holds streamLock.
        generation++;
        long opened = generation;
        Answers answers = new Answers(opened);
        StreamObserver<ModelInferRequest> call = stub.modelStreamInfer(answers);
        if (answers.finished) {
            return; // it failed at once, on this thread; ended() scheduled the next attempt
        }
        stream = call;
        for (PendingRequest request : pending.values()) {
            if (!request.backingOff && request.sentOn < opened) {
                stream.onNext(request.withRemainingTime(System.nanoTime()));
                request.sentOn = opened;
            }
        }
    }

    private void scheduleReconnect() {
        // Caller holds streamLock.
        if (reconnectScheduled || closed) {
            return;
        }
        reconnectScheduled = true;
        int attempt = reconnectAttempt.getAndIncrement();
        long delay = attempt == 0 ? 0 : backoff.nanos(attempt);
        timer.schedule(this::reconnect, delay, TimeUnit.NANOSECONDS);
    }

    private void reconnect() {
        synchronized (streamLock) {
            reconnectScheduled = false;
            if (closed || stream != null) {
                return;
            }
            reconnects.incrementAndGet();
            // The channel waits out its own backoff after a failed connect; try now instead.
            channel.connectNow();
            openStream();
        }
    }

    /**
     * Notes the version that answered. When another version answers than before (a new one
     * was loaded under the running job), the model's inputs and outputs are read again, once:
     * records encoded from here on follow the version that serves.
     */
    private void answeredBy(String version) {
        String before = answeringVersion;
        if (version.isEmpty() || version.equals(before)) {
            return;
        }
        answeringVersion = version;
        if (before != null) {
            readMetadataAgain("version " + version + " answers now (before it, " + before + ")");
        }
    }

    /**
     * A request was refused as invalid: when the model's signature changed under the job (a
     * version with other inputs), the records encoded from here on follow the new one. At
     * most once a second, so that a stream of bad records does not become a stream of
     * metadata calls.
     */
    private void refusedAsInvalid() {
        long last = lastRefusalReread.get();
        long now = System.nanoTime();
        if (now - last >= REREAD_INTERVAL_NANOS && lastRefusalReread.compareAndSet(last, now)) {
            readMetadataAgain("a request was refused as invalid");
        }
    }

    /**
     * Reads the model's metadata again, once at a time, on a thread of its own: the read may
     * wait out a sidecar that is busy loading, and the timer thread must go on failing overdue
     * requests meanwhile.
     */
    private void readMetadataAgain(String why) {
        if (closed || !rereading.compareAndSet(false, true)) {
            return;
        }
        Thread reread =
                new Thread(
                        () -> {
                            try {
                                ModelInfo before = model;
                                model = calls.fetchMetadata();
                                coalescing.setMaxRows(calls.maxBatchSize());
                                if (!String.valueOf(model).equals(String.valueOf(before))) {
                                    LOG.info("{}: {}; its inputs and outputs read again: {}", describe(), why, model);
                                }
                            } catch (RuntimeException e) {
                                LOG.warn("{}: {}, and the model's metadata could not be read: {}",
                                        describe(), why, e.getMessage());
                            } finally {
                                rereading.set(false);
                            }
                        },
                        "gpu-sidecar-client-metadata");
        reread.setDaemon(true);
        reread.start();
    }

    /** Receives one stream's answers; {@code opened} tells a stale stream from the current. */
    private final class Answers implements StreamObserver<ModelStreamInferResponse> {
        private final long opened;
        private boolean finished; // guarded by streamLock

        Answers(long opened) {
            this.opened = opened;
        }

        @Override
        public void onNext(ModelStreamInferResponse answer) {
            if (reconnectAttempt.get() != 0 && reconnectAttempt.getAndSet(0) != 0) {
                LOG.info("{}: answering again after {} reconnects in all", describe(), reconnects.get());
            }
            ModelInferResponse response = answer.getInferResponse();
            PendingRequest request = pending.get(response.getId());
            if (request == null) {
                return; // it timed out, or an earlier stream answered it
            }
            String error = answer.getErrorMessage();
            if (error.isEmpty()) {
                if (pending.remove(request.id, request)) {
                    // Decoded on the answering thread, as everything that waits on it runs.
                    deliver(() -> {
                        Map<String, Tensor> outputs;
                        try {
                            outputs = KServeCodec.decode(response);
                        } catch (RuntimeException e) {
                            request.future.completeExceptionally(SidecarException.of(
                                    "INTERNAL", describe() + ": unreadable answer: " + e.getMessage(), e));
                            return;
                        }
                        request.future.complete(outputs);
                    });
                }
                answeredBy(response.getModelVersion());
                return;
            }
            SidecarException refusal =
                    SidecarException.of(KServeCodec.codeOf(error), describe() + " refused the request: " + error);
            if (refusal.isRetryable()) {
                retryLater(request, error);
            } else {
                fail(request, refusal);
                if (refusal instanceof SidecarException.InvalidRequest) {
                    refusedAsInvalid();
                }
            }
        }

        @Override
        public void onError(Throwable error) {
            ended(Status.fromThrowable(error));
        }

        @Override
        public void onCompleted() {
            ended(Status.OK.withDescription("the sidecar ended the stream (draining)"));
        }

        private void ended(Status status) {
            synchronized (streamLock) {
                finished = true;
                if (opened != generation) {
                    return; // an earlier stream
                }
                stream = null;
                streamStatus = SidecarChannel.describe(status);
                failOversized(status);
                if (!closed && reconnectAttempt.get() == 0) {
                    LOG.info("{}: stream ended ({}); reconnecting", describe(), streamStatus);
                } else {
                    LOG.debug("{}: stream ended ({})", describe(), streamStatus);
                }
                scheduleReconnect();
            }
        }
    }

    /**
     * When gRPC itself refused a message far over the sidecar's limit (RESOURCE_EXHAUSTED,
     * "Received message larger than max (N vs. M)"), which ends the whole stream: fails the
     * requests over M, which would be refused again, and lets the reconnect send the others.
     */
    private void failOversized(Status status) {
        long limit = KServeCodec.receiveLimitOf(status);
        if (limit < 0) {
            return;
        }
        for (PendingRequest request : pending.values()) {
            long size = request.request.getSerializedSize();
            if (size > limit) {
                fail(request, SidecarException.of("RESOURCE_EXHAUSTED", describe() + ": the request is "
                        + size + " bytes, more than the sidecar takes in (" + limit
                        + " bytes: sidecar.rpc.max-message-size and its margin); not retried"));
            }
        }
    }

    private void retryLater(PendingRequest request, String status) {
        request.lastStatus = status;
        retries.incrementAndGet();
        long delay = backoff.nanos(request.retries.incrementAndGet());
        synchronized (streamLock) {
            request.backingOff = true;
        }
        timer.schedule(
                () -> {
                    if (pending.get(request.id) == request) {
                        transmit(request);
                    }
                },
                delay,
                TimeUnit.NANOSECONDS);
    }

    private void expireOverdue() {
        long now = System.nanoTime();
        for (PendingRequest request : pending.values()) {
            if (now - request.deadlineNanos >= 0) {
                expire(request);
            }
        }
    }

    private void expire(PendingRequest request) {
        String why;
        if (request.lastStatus != null) {
            why = "retried " + request.retries.get() + " times; last answer: " + request.lastStatus;
        } else {
            synchronized (streamLock) {
                why = stream == null ? "the sidecar is unreachable: " + streamStatus
                        : "sent, no answer yet";
            }
        }
        fail(request, SidecarException.of(
                "DEADLINE_EXCEEDED",
                describe() + ": no answer within " + options.requestTimeout().toMillis() + " ms ("
                        + why + ")"));
    }

    private void fail(PendingRequest request, SidecarException error) {
        if (pending.remove(request.id, request)) {
            deliver(() -> request.future.completeExceptionally(error));
        }
    }

    /** Runs a request's completion on the answering thread; on the caller's once it is shut. */
    private void deliver(Runnable completion) {
        try {
            answering.execute(completion);
        } catch (RejectedExecutionException e) {
            completion.run();
        }
    }

    private String describe() {
        return "gpu-sidecar at " + endpoint + ", model '" + modelName + "'"
                + (options.modelVersion().isEmpty() ? "" : " version " + options.modelVersion());
    }

    /** Ends the stream, fails every unanswered request and releases the channel. */
    @Override
    public void close() {
        closed = true;
        synchronized (streamLock) {
            if (stream != null) {
                try {
                    stream.onCompleted();
                } catch (RuntimeException e) {
                    LOG.debug("{}: ending the stream: {}", describe(), e.toString());
                }
                stream = null;
            }
        }
        for (PendingRequest request : pending.values()) {
            fail(request, SidecarException.of("CANCELLED", describe() + ": the client closed"));
        }
        coalescing.failAll(SidecarException.of("CANCELLED", describe() + ": the client closed"));
        timer.shutdownNow();
        // What was handed to the answering thread still completes, before close returns (the
        // caller's operator goes away after it); nothing new is taken.
        answering.shutdown();
        channel.close();
        try {
            // (Not when a completion itself closes the client: it would wait for itself.)
            boolean onAnsweringThread = Thread.currentThread().getName().startsWith(ANSWERING_THREAD);
            if (!onAnsweringThread && !answering.awaitTermination(5, TimeUnit.SECONDS)) {
                LOG.warn("{}: answers still being handled 5 s after close", describe());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
