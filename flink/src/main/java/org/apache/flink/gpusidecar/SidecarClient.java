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

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.bootstrap.Bootstrap;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.grpc.netty.shaded.io.netty.util.internal.logging.InternalLoggerFactory;
import io.grpc.netty.shaded.io.netty.util.internal.logging.JdkLoggerFactory;
import io.grpc.stub.StreamObserver;
import inference.GRPCInferenceServiceGrpc;
import inference.GrpcService.ModelInferRequest;
import inference.GrpcService.ModelInferResponse;
import inference.GrpcService.ModelMetadataRequest;
import inference.GrpcService.ModelMetadataResponse;
import inference.GrpcService.ModelStreamInferResponse;
import inference.GrpcService.RepositoryIndexRequest;
import inference.GrpcService.RepositoryIndexResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A connection to one gpu-sidecar and one of its models. {@link #connect} checks the model's
 * metadata once; {@link #infer} sends each request on one {@code ModelStreamInfer} stream and
 * matches the answer to it by {@code id}. Thread-safe.
 *
 * <p>Errors: an answer of RESOURCE_EXHAUSTED (the sidecar's queue is full) or UNAVAILABLE (it
 * is starting or draining) is retried after an exponential backoff with jitter; a stream that
 * breaks (the sidecar stopped or restarted) is reopened with backoff and every unanswered
 * request is sent again on the new one; INVALID_ARGUMENT, NOT_FOUND and the other codes fail
 * the request with the sidecar's message. A request that has no answer when its timeout passes
 * fails with DEADLINE_EXCEEDED and the last status seen for it. Every request is answered at
 * most once.
 */
public final class SidecarClient implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(SidecarClient.class);

    /**
     * gRPC asks every connection for SO_KEEPALIVE, which Netty's Unix-socket channel does not
     * have; Netty's Bootstrap then warns "Unknown channel option 'SO_KEEPALIVE'" on every
     * connect and reconnect, through SLF4J into the TaskManager's log when SLF4J is there (as
     * in Flink). So the (shaded, ours alone) Bootstrap class gets a java.util.logging logger,
     * set to SEVERE; every other Netty class logs as before. Held here, as java.util.logging
     * keeps loggers only weakly.
     */
    private static final java.util.logging.Logger BOOTSTRAP_LOG =
            java.util.logging.Logger.getLogger(Bootstrap.class.getName());

    static {
        BOOTSTRAP_LOG.setLevel(java.util.logging.Level.SEVERE);
        InternalLoggerFactory previous = InternalLoggerFactory.getDefaultFactory();
        InternalLoggerFactory.setDefaultFactory(JdkLoggerFactory.INSTANCE);
        try {
            // Bootstrap takes its logger from the default factory when it is initialised.
            Class.forName(Bootstrap.class.getName(), true, SidecarClient.class.getClassLoader());
        } catch (ClassNotFoundException e) {
            throw new ExceptionInInitializerError(e);
        } finally {
            InternalLoggerFactory.setDefaultFactory(previous);
        }
    }

    /** One request awaiting its answer. */
    private static final class Pending {
        final String id;
        final ModelInferRequest request;
        final CompletableFuture<Map<String, Tensor>> future = new CompletableFuture<>();
        final AtomicInteger retries = new AtomicInteger();
        final long deadlineNanos;
        volatile String lastStatus;
        // Guarded by streamLock: the stream generation it was last sent on, and whether it
        // waits out a backoff before it is sent again.
        long sentOn = -1;
        boolean backingOff;

        Pending(String id, ModelInferRequest request, long deadlineNanos) {
            this.id = id;
            this.request = request;
            this.deadlineNanos = deadlineNanos;
        }
    }

    private final Endpoint endpoint;
    private final String modelName;
    private final SidecarOptions options;
    private final EventLoopGroup eventLoops;
    private final ManagedChannel channel;
    private final GRPCInferenceServiceGrpc.GRPCInferenceServiceStub stub;
    private final ScheduledExecutorService timer;
    private final Semaphore inFlight;
    private final ConcurrentHashMap<String, Pending> pending = new ConcurrentHashMap<>();
    private final AtomicLong nextId = new AtomicLong();
    private final AtomicLong retries = new AtomicLong();
    private final AtomicLong reconnects = new AtomicLong();
    private final AtomicInteger reconnectAttempt = new AtomicInteger();
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
        NettyChannelBuilder builder;
        if (endpoint.isUnix()) {
            // Built by hand, not from a "unix:" target, so that it survives shading.
            eventLoops = new EpollEventLoopGroup(1, daemonThreads("gpu-sidecar-client-io"));
            builder =
                    NettyChannelBuilder.forAddress(new DomainSocketAddress(endpoint.socketPath()))
                            .eventLoopGroup(eventLoops)
                            .channelType(EpollDomainSocketChannel.class);
        } else {
            eventLoops = null;
            builder = NettyChannelBuilder.forAddress(endpoint.host(), endpoint.port());
        }
        // Answers are handled on the I/O thread that read them (direct executor): handling
        // one is a map lookup, a decode and a future's completion, and never blocks.
        channel =
                builder.usePlaintext()
                        .directExecutor()
                        .maxInboundMessageSize(Integer.MAX_VALUE)
                        .build();
        stub = GRPCInferenceServiceGrpc.newStub(channel);
        timer =
                Executors.newSingleThreadScheduledExecutor(
                        daemonThreads("gpu-sidecar-client-timer"));
        inFlight = new Semaphore(options.maxInFlight());
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
            client.model = client.fetchMetadata();
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

    /** One line of the sidecar's repository index: a model's version and its state. */
    public record IndexEntry(String model, String version, String state, String reason) {
        @Override
        public String toString() {
            return "model " + model + (version.isEmpty() ? "" : " version " + version) + " " + state
                    + (reason.isEmpty() ? "" : " (" + reason + ")");
        }
    }

    /**
     * Every model the sidecar knows, each version with its state (READY, LOADING,
     * UNAVAILABLE and why): Triton's RepositoryIndex.
     */
    public List<IndexEntry> repositoryIndex() {
        try {
            RepositoryIndexResponse index =
                    GRPCInferenceServiceGrpc.newBlockingStub(channel)
                            .withDeadlineAfter(options.requestTimeout().toNanos(), TimeUnit.NANOSECONDS)
                            .repositoryIndex(RepositoryIndexRequest.getDefaultInstance());
            List<IndexEntry> entries = new ArrayList<>();
            for (RepositoryIndexResponse.ModelIndex model : index.getModelsList()) {
                entries.add(
                        new IndexEntry(model.getName(), model.getVersion(), model.getState(), model.getReason()));
            }
            return entries;
        } catch (StatusRuntimeException e) {
            throw new SidecarException(
                    e.getStatus().getCode().name(),
                    describe() + ": RepositoryIndex failed: " + describe(e.getStatus()),
                    e);
        }
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
     * Sends one request of named input tensors and completes with the named output tensors,
     * or with a {@link SidecarException}. Waits while {@code maxInFlight} requests are
     * unanswered.
     */
    public CompletableFuture<Map<String, Tensor>> infer(Map<String, Tensor> inputs) {
        if (closed) {
            return CompletableFuture.failedFuture(
                    new SidecarException("CANCELLED", describe() + ": the client is closed"));
        }
        String id = Long.toString(nextId.incrementAndGet());
        ModelInferRequest message = KServeCodec.request(modelName, options.modelVersion(), id, inputs);
        try {
            inFlight.acquire();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return CompletableFuture.failedFuture(
                    new SidecarException("CANCELLED", describe() + ": interrupted", e));
        }
        Pending request =
                new Pending(id, message, System.nanoTime() + options.requestTimeout().toNanos());
        request.future.whenComplete((outputs, error) -> inFlight.release());
        pending.put(id, request);
        if (closed) {
            // close() may have swept the pending requests before this one was added.
            fail(request, new SidecarException("CANCELLED", describe() + ": the client closed"));
            return request.future;
        }
        transmit(request);
        return request.future;
    }

    /** Sends a request on the open stream, or leaves it for the reconnect to send. */
    private void transmit(Pending request) {
        synchronized (streamLock) {
            request.backingOff = false;
            if (stream == null) {
                scheduleReconnect();
                return;
            }
            stream.onNext(request.request);
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
        for (Pending request : pending.values()) {
            if (!request.backingOff && request.sentOn < opened) {
                stream.onNext(request.request);
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
        long delay = attempt == 0 ? 0 : backoffNanos(attempt);
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
            channel.resetConnectBackoff();
            openStream();
        }
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
            Pending request = pending.get(response.getId());
            if (request == null) {
                return; // it timed out, or an earlier stream answered it
            }
            String error = answer.getErrorMessage();
            if (error.isEmpty()) {
                Map<String, Tensor> outputs;
                try {
                    outputs = KServeCodec.decode(response);
                } catch (RuntimeException e) {
                    fail(request, new SidecarException(
                            "INTERNAL", describe() + ": unreadable answer: " + e.getMessage(), e));
                    return;
                }
                if (pending.remove(request.id, request)) {
                    request.future.complete(outputs);
                }
                return;
            }
            String code = KServeCodec.codeOf(error);
            if (code.equals("RESOURCE_EXHAUSTED") || code.equals("UNAVAILABLE")) {
                retryLater(request, error);
            } else {
                fail(request, new SidecarException(code, describe() + " refused the request: " + error));
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
                streamStatus = describe(status);
                if (!closed && reconnectAttempt.get() == 0) {
                    LOG.info("{}: stream ended ({}); reconnecting", describe(), streamStatus);
                } else {
                    LOG.debug("{}: stream ended ({})", describe(), streamStatus);
                }
                scheduleReconnect();
            }
        }
    }

    private void retryLater(Pending request, String status) {
        request.lastStatus = status;
        retries.incrementAndGet();
        long delay = backoffNanos(request.retries.incrementAndGet());
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
        for (Pending request : pending.values()) {
            if (now - request.deadlineNanos >= 0) {
                expire(request);
            }
        }
    }

    private void expire(Pending request) {
        String why;
        if (request.lastStatus != null) {
            why = "retried " + request.retries.get() + " times; last answer: " + request.lastStatus;
        } else {
            synchronized (streamLock) {
                why = stream == null ? "the sidecar is unreachable: " + streamStatus
                        : "sent, no answer yet";
            }
        }
        fail(request, new SidecarException(
                "DEADLINE_EXCEEDED",
                describe() + ": no answer within " + options.requestTimeout().toMillis() + " ms ("
                        + why + ")"));
    }

    private void fail(Pending request, SidecarException error) {
        if (pending.remove(request.id, request)) {
            request.future.completeExceptionally(error);
        }
    }

    /** Exponential backoff with jitter: half the step fixed, half random. */
    private long backoffNanos(int attempt) {
        long initial = options.initialBackoff().toNanos();
        long step = Math.min(options.maxBackoff().toNanos(), initial << Math.min(attempt - 1, 30));
        return step / 2 + ThreadLocalRandom.current().nextLong(step / 2 + 1);
    }

    /** Asks for the model's metadata until it answers or the connect timeout passes. */
    private ModelInfo fetchMetadata() {
        long deadline = System.nanoTime() + options.connectTimeout().toNanos();
        ModelMetadataRequest request =
                ModelMetadataRequest.newBuilder()
                        .setName(modelName)
                        .setVersion(options.modelVersion())
                        .build();
        // What to report if it never answers: an attempt's UNAVAILABLE says more than the
        // DEADLINE_EXCEEDED of one the connect timeout cut short.
        StatusRuntimeException telling = null;
        int attempt = 0;
        while (true) {
            long left = deadline - System.nanoTime();
            try {
                ModelMetadataResponse metadata =
                        GRPCInferenceServiceGrpc.newBlockingStub(channel)
                                .withDeadlineAfter(Math.max(left, 1), TimeUnit.NANOSECONDS)
                                .modelMetadata(request);
                return KServeCodec.modelInfo(metadata);
            } catch (StatusRuntimeException e) {
                Status.Code code = e.getStatus().getCode();
                if (code != Status.Code.UNAVAILABLE && code != Status.Code.DEADLINE_EXCEEDED) {
                    throw new SidecarException(
                            code.name(),
                            describe() + ": ModelMetadata failed: " + describe(e.getStatus()),
                            e);
                }
                if (telling == null || code == Status.Code.UNAVAILABLE) {
                    telling = e;
                }
            }
            long wait = backoffNanos(++attempt);
            if (System.nanoTime() + wait >= deadline) {
                Status status = telling.getStatus();
                throw new SidecarException(
                        status.getCode().name(),
                        "cannot reach gpu-sidecar at " + endpoint + " within "
                                + options.connectTimeout().toMillis() + " ms (model '" + modelName
                                + "'): " + describe(status) + "; " + whereItListens(),
                        telling);
            }
            try {
                TimeUnit.NANOSECONDS.sleep(wait);
            } catch (InterruptedException interrupted) {
                Thread.currentThread().interrupt();
                throw new SidecarException(
                        "CANCELLED", describe() + ": interrupted while connecting", interrupted);
            }
            // Connect again now, not after the channel's own (longer) backoff.
            channel.resetConnectBackoff();
        }
    }

    private static String describe(Status status) {
        StringBuilder text = new StringBuilder(status.getCode().name());
        if (status.getDescription() != null) {
            text.append(": ").append(status.getDescription());
        }
        for (Throwable cause = status.getCause(); cause != null; cause = cause.getCause()) {
            if (cause.getMessage() != null) {
                text.append(" (").append(cause.getMessage()).append(')');
            }
        }
        return text.toString();
    }

    /** What the endpoint looks like from here, since gRPC's "io exception" does not say. */
    private String whereItListens() {
        if (!endpoint.isUnix()) {
            return "is the sidecar listening on " + endpoint + " (sidecar.rpc.endpoint)?";
        }
        Path socket = Paths.get(endpoint.socketPath());
        if (!Files.exists(socket)) {
            return "there is no socket file " + socket + ": is the sidecar running, with"
                    + " sidecar.rpc.endpoint = \"" + endpoint + "\"?";
        }
        if (Files.isDirectory(socket) || Files.isRegularFile(socket)) {
            return socket + " is not a socket";
        }
        return "the socket file " + socket + " is there, but nothing answered on it"
                + " (a sidecar still starting, or one that died and left it)";
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
        for (Pending request : pending.values()) {
            fail(request, new SidecarException("CANCELLED", describe() + ": the client closed"));
        }
        timer.shutdownNow();
        channel.shutdownNow();
        try {
            channel.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (eventLoops != null) {
            eventLoops.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    private static java.util.concurrent.ThreadFactory daemonThreads(String name) {
        AtomicInteger count = new AtomicInteger();
        return runnable -> {
            Thread thread = new Thread(runnable, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }
}
