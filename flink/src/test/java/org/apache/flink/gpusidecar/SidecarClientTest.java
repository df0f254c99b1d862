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

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import inference.GRPCInferenceServiceGrpc;
import inference.GrpcService.ModelInferRequest;
import inference.GrpcService.ModelInferResponse;
import inference.GrpcService.ModelMetadataRequest;
import inference.GrpcService.ModelMetadataResponse;
import inference.GrpcService.ModelStreamInferResponse;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.netty.shaded.io.netty.bootstrap.Bootstrap;
import io.grpc.netty.shaded.io.netty.util.internal.logging.InternalLogger;
import io.grpc.netty.shaded.io.netty.util.internal.logging.InternalLoggerFactory;
import java.io.File;
import java.lang.reflect.Field;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Paths;
import io.grpc.stub.StreamObserver;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@link SidecarClient} against a scripted inference server on loopback: id matching, which
 * codes are retried, streams that break, timeouts. (The real sidecar is in the other tests.)
 */
@Timeout(60)
class SidecarClientTest {
    private static final long WAIT_SECONDS = 20;

    /** What the server does with one request that came on stream number {@code stream}. */
    interface Script {
        void on(ModelInferRequest request, int stream, StreamObserver<ModelStreamInferResponse> out);
    }

    /** Model "m": input x FP32 [-1, 2], output y = 2x. Streams follow the script. */
    static final class ScriptedServer extends GRPCInferenceServiceGrpc.GRPCInferenceServiceImplBase {
        final AtomicInteger streams = new AtomicInteger();
        final Map<String, AtomicInteger> attempts = new ConcurrentHashMap<>();
        /** The version that answers; its output is named "y", version 2's "z". */
        volatile String version = "1";
        volatile Script script = (request, stream, out) -> out.onNext(answer(request, version));

        @Override
        public void modelMetadata(ModelMetadataRequest request, StreamObserver<ModelMetadataResponse> out) {
            if (!request.getName().equals("m")) {
                out.onError(Status.NOT_FOUND.withDescription("no model named \"" + request.getName() + "\"").asException());
                return;
            }
            out.onNext(
                    ModelMetadataResponse.newBuilder()
                            .setName("m")
                            .addInputs(tensor("x"))
                            .addOutputs(tensor(version.equals("2") ? "z" : "y"))
                            .build());
            out.onCompleted();
        }

        private static ModelMetadataResponse.TensorMetadata tensor(String name) {
            return ModelMetadataResponse.TensorMetadata.newBuilder()
                    .setName(name)
                    .setDatatype("FP32")
                    .addShape(-1)
                    .addShape(2)
                    .build();
        }

        @Override
        public StreamObserver<ModelInferRequest> modelStreamInfer(StreamObserver<ModelStreamInferResponse> out) {
            int stream = streams.incrementAndGet();
            return new StreamObserver<>() {
                @Override
                public void onNext(ModelInferRequest request) {
                    attempts.computeIfAbsent(request.getId(), id -> new AtomicInteger()).incrementAndGet();
                    synchronized (out) {
                        script.on(request, stream, out);
                    }
                }

                @Override
                public void onError(Throwable t) {}

                @Override
                public void onCompleted() {
                    synchronized (out) {
                        out.onCompleted();
                    }
                }
            };
        }
    }

    /** The answer y = 2x to a request. */
    static ModelStreamInferResponse answer(ModelInferRequest request) {
        return answer(request, "1");
    }

    /** The answer y = 2x to a request, from model version {@code version}. */
    static ModelStreamInferResponse answer(ModelInferRequest request, String version) {
        ByteBuffer in = request.getRawInputContents(0).asReadOnlyByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer out = ByteBuffer.allocate(in.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        while (in.hasRemaining()) {
            out.putFloat(2 * in.getFloat());
        }
        out.flip();
        ModelInferResponse.Builder response =
                ModelInferResponse.newBuilder().setModelName("m").setModelVersion(version).setId(request.getId());
        response.addOutputsBuilder().setName("y").setDatatype("FP32").addAllShape(request.getInputs(0).getShapeList());
        response.addRawOutputContents(ByteString.copyFrom(out));
        return ModelStreamInferResponse.newBuilder().setInferResponse(response).build();
    }

    static ModelStreamInferResponse refusal(ModelInferRequest request, String error) {
        return ModelStreamInferResponse.newBuilder()
                .setErrorMessage(error)
                .setInferResponse(ModelInferResponse.newBuilder().setModelName("m").setId(request.getId()))
                .build();
    }

    private final ScriptedServer service = new ScriptedServer();
    private final List<AutoCloseable> closing = new ArrayList<>();
    private Server server;

    private SidecarClient connect(SidecarOptions options) throws Exception {
        if (server == null) {
            server = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0)).addService(service).build().start();
        }
        SidecarClient client = SidecarClient.connect("127.0.0.1:" + server.getPort(), "m", options);
        closing.add(client);
        return client;
    }

    private static SidecarOptions quick() {
        // Each record its own request: these tests follow the requests one by one.
        return SidecarOptions.defaults()
                .withMaxRecordsPerRequest(1)
                .withConnectTimeout(Duration.ofSeconds(5))
                .withRequestTimeout(Duration.ofSeconds(WAIT_SECONDS))
                .withBackoff(Duration.ofMillis(1), Duration.ofMillis(20));
    }

    private static CompletableFuture<Map<String, Tensor>> send(SidecarClient client, float value) {
        return client.infer(Map.of("x", Tensor.of(new float[] {value, value}, 1, 2)));
    }

    private static float[] y(CompletableFuture<Map<String, Tensor>> future) throws Exception {
        return future.get(WAIT_SECONDS, TimeUnit.SECONDS).get("y").floats();
    }

    private static SidecarException failure(CompletableFuture<Map<String, Tensor>> future) {
        ExecutionException e = assertThrows(ExecutionException.class, () -> future.get(WAIT_SECONDS, TimeUnit.SECONDS));
        assertTrue(e.getCause() instanceof SidecarException, String.valueOf(e.getCause()));
        return (SidecarException) e.getCause();
    }

    @AfterEach
    void stop() throws Exception {
        for (AutoCloseable c : closing) {
            c.close();
        }
        if (server != null) {
            server.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void answersInAnyOrderReachTheirOwnRequests() throws Exception {
        List<ModelInferRequest> held = new ArrayList<>();
        service.script =
                (request, stream, out) -> {
                    held.add(request);
                    if (held.size() == 8) {
                        for (int i = held.size() - 1; i >= 0; i--) {
                            out.onNext(answer(held.get(i)));
                        }
                    }
                };
        SidecarClient client = connect(quick());
        List<CompletableFuture<Map<String, Tensor>>> futures = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            futures.add(send(client, i));
        }
        for (int i = 0; i < 8; i++) {
            assertArrayEquals(new float[] {2f * i, 2f * i}, y(futures.get(i)));
        }
    }

    @Test
    void resourceExhaustedIsRetriedUntilAnswered() throws Exception {
        service.script =
                (request, stream, out) -> {
                    int attempt = service.attempts.get(request.getId()).get();
                    out.onNext(attempt <= 2 ? refusal(request, "RESOURCE_EXHAUSTED: the queue is full (2 requests)") : answer(request));
                };
        SidecarClient client = connect(quick());
        List<CompletableFuture<Map<String, Tensor>>> futures = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            futures.add(send(client, i));
        }
        for (int i = 0; i < 20; i++) {
            assertArrayEquals(new float[] {2f * i, 2f * i}, y(futures.get(i)));
        }
        assertEquals(40, client.retries());
        service.attempts.forEach((id, n) -> assertEquals(3, n.get(), "attempts of request " + id));
    }

    @Test
    void everySendingCarriesTheTimeLeftAsTheTimeoutParameter() throws Exception {
        // The first attempt is refused, the retry answered: both carry a timeout, in
        // microseconds, at most the request timeout, the retry's less than the first's.
        List<Long> timeouts = new ArrayList<>();
        service.script =
                (request, stream, out) -> {
                    synchronized (timeouts) {
                        timeouts.add(request.getParametersOrThrow("timeout").getInt64Param());
                    }
                    int attempt = service.attempts.get(request.getId()).get();
                    out.onNext(attempt == 1 ? refusal(request, "RESOURCE_EXHAUSTED: the queue is full (1 requests)") : answer(request));
                };
        SidecarClient client = connect(quick().withBackoff(Duration.ofMillis(20), Duration.ofMillis(40)));
        assertArrayEquals(new float[] {2f, 2f}, y(send(client, 1)));
        synchronized (timeouts) {
            assertEquals(2, timeouts.size(), timeouts.toString());
            long limit = Duration.ofSeconds(WAIT_SECONDS).toNanos() / 1000;
            assertTrue(timeouts.get(0) > 0 && timeouts.get(0) <= limit, timeouts.toString());
            // The retry waited out a backoff of at least half the initial 20 ms.
            assertTrue(timeouts.get(1) <= timeouts.get(0) - 10_000, timeouts.toString());
        }
    }

    @Test
    void invalidArgumentFailsTheRequestWithTheSidecarsMessageAndIsNotRetried() throws Exception {
        service.script = (request, stream, out) -> out.onNext(refusal(request, "INVALID_ARGUMENT: input \"x\": shape [1, 2] is wrong"));
        SidecarClient client = connect(quick());
        SidecarException e = failure(send(client, 1));
        assertEquals("INVALID_ARGUMENT", e.code());
        assertTrue(e.getMessage().contains("INVALID_ARGUMENT: input \"x\": shape [1, 2] is wrong"), e.getMessage());
        assertTrue(e.getMessage().contains("model 'm'"), e.getMessage());
        assertEquals(0, client.retries());
        assertEquals(1, service.attempts.values().iterator().next().get());
    }

    @Test
    void aBrokenStreamIsReopenedAndItsUnansweredRequestsSentAgainOnce() throws Exception {
        // Stream 1 answers the first two requests, then fails like a killed sidecar.
        AtomicInteger seen = new AtomicInteger();
        service.script =
                (request, stream, out) -> {
                    if (stream > 1) {
                        out.onNext(answer(request));
                        return;
                    }
                    int n = seen.incrementAndGet();
                    if (n <= 2) {
                        out.onNext(answer(request));
                    } else if (n == 6) {
                        out.onError(Status.UNAVAILABLE.withDescription("gone").asException());
                    }
                };
        SidecarClient client = connect(quick());
        List<CompletableFuture<Map<String, Tensor>>> futures = new ArrayList<>();
        for (int i = 0; i < 6; i++) {
            futures.add(send(client, i));
        }
        for (int i = 0; i < 6; i++) {
            assertArrayEquals(new float[] {2f * i, 2f * i}, y(futures.get(i)));
        }
        assertTrue(client.reconnects() >= 1, "reconnects: " + client.reconnects());
        assertEquals(2, service.streams.get());
        // Answered on stream 1: sent once; the four it dropped: sent twice.
        for (int i = 1; i <= 6; i++) {
            assertEquals(i <= 2 ? 1 : 2, service.attempts.get(Integer.toString(i)).get(), "attempts of request " + i);
        }
    }

    @Test
    void aStreamTheSidecarEndsCleanlyIsReopenedToo() throws Exception {
        // A draining sidecar ends the stream with OK once it answered what it took.
        service.script =
                (request, stream, out) -> {
                    if (stream == 1) {
                        out.onCompleted();
                    } else {
                        out.onNext(answer(request));
                    }
                };
        SidecarClient client = connect(quick());
        assertArrayEquals(new float[] {6f, 6f}, y(send(client, 3)));
        assertEquals(2, service.streams.get());
    }

    @Test
    void aRequestWithoutAnAnswerFailsAtItsTimeoutSayingWhy() throws Exception {
        service.script = (request, stream, out) -> {};
        SidecarClient client = connect(quick().withRequestTimeout(Duration.ofMillis(300)));
        SidecarException silent = failure(send(client, 1));
        assertEquals("DEADLINE_EXCEEDED", silent.code());
        assertTrue(silent.getMessage().contains("no answer within 300 ms (sent, no answer yet)"), silent.getMessage());

        service.script = (request, stream, out) -> out.onNext(refusal(request, "RESOURCE_EXHAUSTED: the queue is full"));
        SidecarException full = failure(send(client, 1));
        assertEquals("DEADLINE_EXCEEDED", full.code());
        assertTrue(full.getMessage().contains("last answer: RESOURCE_EXHAUSTED: the queue is full"), full.getMessage());
        assertEquals(0, client.inFlight());
    }

    @Test
    void connectNamesAModelTheSidecarDoesNotServe() throws Exception {
        connect(quick()).close();
        SidecarException e =
                assertThrows(
                        SidecarException.class,
                        () -> SidecarClient.connect("127.0.0.1:" + server.getPort(), "other", quick()));
        assertEquals("NOT_FOUND", e.code());
        assertTrue(e.getMessage().contains("model 'other'"), e.getMessage());
        assertTrue(e.getMessage().contains("no model named \"other\""), e.getMessage());
    }

    @Test
    void connectToAPortNobodyListensOnFailsNamingIt() throws Exception {
        int port;
        try (java.net.ServerSocket probe = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        String endpoint = "127.0.0.1:" + port;
        SidecarException e =
                assertThrows(
                        SidecarException.class,
                        () -> SidecarClient.connect(endpoint, "m", quick().withConnectTimeout(Duration.ofMillis(500))));
        assertEquals("UNAVAILABLE", e.code());
        assertTrue(e.getMessage().startsWith("cannot reach gpu-sidecar at " + endpoint + " within 500 ms"), e.getMessage());
    }

    @Test
    void connectWaitsForASidecarThatIsStillStarting() throws Exception {
        // Something that accepts and hangs up stands in for the sidecar until the client has
        // tried it; then the real server comes up on the same port.
        java.net.ServerSocket notYet = new java.net.ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress());
        int port = notYet.getLocalPort();
        java.util.concurrent.CountDownLatch tried = new java.util.concurrent.CountDownLatch(1);
        Thread refuser =
                new Thread(
                        () -> {
                            try (java.net.Socket socket = notYet.accept()) {
                                tried.countDown();
                            } catch (java.io.IOException e) {
                                // closed below
                            }
                        });
        refuser.start();
        CompletableFuture<SidecarClient> connecting =
                CompletableFuture.supplyAsync(
                        () -> SidecarClient.connect("127.0.0.1:" + port, "m", quick().withConnectTimeout(Duration.ofSeconds(WAIT_SECONDS))));
        assertTrue(tried.await(WAIT_SECONDS, TimeUnit.SECONDS), "the client never tried the port");
        notYet.close();
        refuser.join();
        server = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", port)).addService(service).build().start();
        SidecarClient client = connecting.get(WAIT_SECONDS, TimeUnit.SECONDS);
        closing.add(client);
        assertArrayEquals(new float[] {4f, 4f}, y(send(client, 2)));
    }

    /**
     * Netty's Bootstrap warns of the SO_KEEPALIVE option that gRPC sets and Unix sockets lack,
     * on every connect; with SLF4J present (here, as in Flink) that went to the TaskManager's
     * log on every reconnect attempt. Only Bootstrap's logger is changed.
     */
    @Test
    void nettysWarningOnEveryUnixSocketConnectIsSilencedAndOnlyThat() throws Exception {
        // A class loader of its own, as in a TaskManager where SidecarClient is the first to
        // touch the (shaded) Netty; in this JVM the tests' own gRPC channels came first.
        URL[] classpath =
                Arrays.stream(System.getProperty("java.class.path").split(File.pathSeparator))
                        .map(path -> {
                            try {
                                return Paths.get(path).toUri().toURL();
                            } catch (MalformedURLException e) {
                                throw new IllegalStateException(e);
                            }
                        })
                        .toArray(URL[]::new);
        try (URLClassLoader fresh = new URLClassLoader(classpath, ClassLoader.getPlatformClassLoader())) {
            Class.forName(SidecarClient.class.getName(), true, fresh);
            Field field = Class.forName(Bootstrap.class.getName(), true, fresh).getDeclaredField("logger");
            field.setAccessible(true);
            Object logger = field.get(null);
            assertTrue(logger.getClass().getSimpleName().startsWith("Jdk"), logger.getClass().getName());
            Class<?> loggerType = Class.forName(InternalLogger.class.getName(), true, fresh);
            assertFalse((Boolean) loggerType.getMethod("isWarnEnabled").invoke(logger));
            assertTrue((Boolean) loggerType.getMethod("isErrorEnabled").invoke(logger));
            Object others =
                    Class.forName(InternalLoggerFactory.class.getName(), true, fresh)
                            .getMethod("getDefaultFactory")
                            .invoke(null);
            assertTrue(others.getClass().getSimpleName().startsWith("Slf4J"), others.getClass().getName());
        }
    }

    @Test
    void anotherVersionAnsweringHasTheMetadataReadAgain() throws Exception {
        SidecarClient client = connect(quick());
        assertTrue(client.model().outputs().containsKey("y"), client.model().toString());
        send(client, 1f).get(WAIT_SECONDS, TimeUnit.SECONDS);
        // A new version, with another output, is loaded under the running client.
        service.version = "2";
        send(client, 2f).get(WAIT_SECONDS, TimeUnit.SECONDS);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
        while (!client.model().outputs().containsKey("z") && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertTrue(client.model().outputs().containsKey("z"), "metadata read again: " + client.model());
    }

    @Test
    void aFullClientQueuesTheRecordInsteadOfBlockingTheCaller() throws Exception {
        List<Runnable> held = new java.util.concurrent.CopyOnWriteArrayList<>();
        service.script = (request, stream, out) -> held.add(() -> {
            synchronized (out) {
                out.onNext(answer(request));
            }
        });
        SidecarClient client = connect(quick().withMaxInFlight(1));
        CompletableFuture<Map<String, Tensor>> first = send(client, 1f);
        // The only request permit is taken: the next record must wait in the client, and the
        // call return at once (a blocked caller would be Flink's task thread).
        CompletableFuture<Map<String, Tensor>> second =
                CompletableFuture.supplyAsync(() -> send(client, 2f)).get(WAIT_SECONDS, TimeUnit.SECONDS);
        assertEquals(1, client.waiting());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
        while (held.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        held.remove(0).run();
        assertEquals(2f, first.get(WAIT_SECONDS, TimeUnit.SECONDS).get("y").floats()[0]);
        // The answer freed the permit: the waiting record went, and is answered in turn.
        while (held.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        held.remove(0).run();
        assertEquals(4f, second.get(WAIT_SECONDS, TimeUnit.SECONDS).get("y").floats()[0]);
        assertEquals(0, client.waiting());
    }

    @Test
    void aRefusalAsInvalidHasTheMetadataReadAgain() throws Exception {
        SidecarClient client = connect(quick());
        assertTrue(client.model().outputs().containsKey("y"), client.model().toString());
        // A version with another signature took over, and refuses what the old one took.
        service.version = "2";
        service.script = (request, stream, out) ->
                out.onNext(refusal(request, "INVALID_ARGUMENT: model 'm' has no input named 'x'"));
        assertTrue(failure(send(client, 1f)) instanceof SidecarException.InvalidRequest);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
        while (!client.model().outputs().containsKey("z") && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertTrue(client.model().outputs().containsKey("z"), "metadata read again: " + client.model());
    }

    @Test
    void answersAreDecodedAndHandedOnOffGrpcsEventLoop() throws Exception {
        SidecarClient client = connect(quick());
        String thread = send(client, 1f).thenApply(outputs -> Thread.currentThread().getName())
                .get(WAIT_SECONDS, TimeUnit.SECONDS);
        assertTrue(thread.startsWith("gpu-sidecar-client-answers"), thread);
        // A caller that holds its answer's thread does not hold the event loop: the next
        // answer is still read (the request leaves the in-flight count) meanwhile.
        CountDownLatch release = new CountDownLatch(1);
        CompletableFuture<Void> slow = send(client, 1f).thenAccept(outputs -> {
            try {
                release.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        CompletableFuture<Map<String, Tensor>> next = send(client, 2f);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
        while (client.inFlight() > 0 && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        assertEquals(0, client.inFlight(), "both answers read while the first one's caller holds its thread");
        assertFalse(next.isDone(), "handed on after the slow caller, on the same thread");
        release.countDown();
        slow.get(WAIT_SECONDS, TimeUnit.SECONDS);
        assertEquals(4f, y(next)[0]);
    }

    @Test
    void closeFailsWhatIsUnansweredBeforeItReturns() throws Exception {
        service.script = (request, stream, out) -> {}; // never answers
        SidecarClient client = connect(quick());
        List<CompletableFuture<Map<String, Tensor>>> unanswered = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            unanswered.add(send(client, i));
        }
        client.close();
        for (CompletableFuture<Map<String, Tensor>> future : unanswered) {
            // Done when close returns: the operator that waits on them goes away after it.
            assertTrue(future.isDone(), "an unanswered request outlived close");
            assertTrue(failure(future) instanceof SidecarException.Cancelled);
        }
    }
}
