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

import grpc.health.v1.HealthGrpc;
import grpc.health.v1.HealthOuterClass.HealthCheckRequest;
import grpc.health.v1.HealthOuterClass.HealthCheckResponse;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import java.io.IOException;
import java.io.InputStream;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The real gpu-sidecar binary (cargo's build, {@code -Dsidecar.binary}) serving a fixture model
 * on a Unix socket in a test's temp folder, with ONNX Runtime's CPU library
 * ({@code -Dsidecar.runtime}). Started by a test, stopped by the test by pid.
 */
final class SidecarProcess implements AutoCloseable {
    static final Duration START_TIMEOUT = Duration.ofSeconds(60);

    private final Path folder;
    private final Path config;
    private final Path socket;
    private final int healthPort;
    private final java.util.Map<String, String> environment;
    private Process process;
    private int starts;

    private SidecarProcess(
            Path folder, Path config, Path socket, int healthPort, java.util.Map<String, String> environment) {
        this.environment = environment;
        this.folder = folder;
        this.config = config;
        this.socket = socket;
        this.healthPort = healthPort;
    }

    /** Starts the sidecar on {@code model} with {@code batching} lines, and waits for SERVING. */
    static SidecarProcess start(Path folder, String model, String... batching) throws Exception {
        return start(folder, fixture(model + ".onnx"), model, batching);
    }

    /** Starts the sidecar on the model file {@code modelFile}, named {@code model}. */
    static SidecarProcess start(Path folder, Path modelFile, String model, String... batching)
            throws Exception {
        return start(folder, modelFile, model, java.util.List.of(), batching);
    }

    /**
     * Starts the sidecar on the fixture {@code model} with {@code rpc} lines added to {@code
     * [sidecar.rpc]} and {@code batching} lines to {@code [sidecar.batching]}.
     */
    static SidecarProcess start(Path folder, String model, java.util.List<String> rpc, String... batching)
            throws Exception {
        return start(folder, fixture(model + ".onnx"), model, rpc, batching);
    }

    /**
     * Starts the sidecar on the fixture {@code model} with its first execution held until the
     * file {@code gate} is removed (the fail point {@code gpu::execute} of the test build).
     */
    static SidecarProcess startHeld(Path folder, String model, Path gate, String... batching) throws Exception {
        return start(folder, fixture(model + ".onnx"), model, java.util.List.of(),
                java.util.Map.of("FAILPOINTS", "gpu::execute=1*return(" + gate + ")"), batching);
    }

    private static SidecarProcess start(
            Path folder, Path modelFile, String model, java.util.List<String> rpc, String... batching)
            throws Exception {
        return start(folder, modelFile, model, rpc, java.util.Map.of(), batching);
    }

    private static SidecarProcess start(
            Path folder,
            Path modelFile,
            String model,
            java.util.List<String> rpc,
            java.util.Map<String, String> environment,
            String... batching)
            throws Exception {
        Path socket = folder.resolve("sidecar.sock");
        StringBuilder toml = new StringBuilder();
        toml.append("[sidecar.rpc]\nendpoint = \"unix:").append(socket).append("\"\n");
        for (String line : rpc) {
            toml.append(line).append('\n');
        }
        toml.append("[sidecar.model]\nuri = \"").append(modelFile.toAbsolutePath()).append("\"\n");
        toml.append("name = \"").append(model).append("\"\n");
        toml.append("runtime-library = \"").append(existing("sidecar.runtime", "bin/dev.sh runtime")).append("\"\n");
        toml.append("[sidecar.batching]\n");
        for (String line : batching) {
            toml.append(line).append('\n');
        }
        return launch(folder, socket, toml, environment);
    }

    /**
     * Starts the sidecar on the fixture {@code model} on a loopback TCP port with {@code tls}
     * lines in {@code [sidecar.rpc.tls]}, and waits for READY (/health).
     */
    static SidecarProcess startTls(Path folder, String model, String... tls) throws Exception {
        StringBuilder toml = new StringBuilder();
        toml.append("[sidecar.rpc]\nendpoint = \"127.0.0.1:").append(freePort()).append("\"\n");
        toml.append("[sidecar.rpc.tls]\n");
        for (String line : tls) {
            toml.append(line).append('\n');
        }
        toml.append("[sidecar.model]\nuri = \"").append(fixture(model + ".onnx")).append("\"\n");
        toml.append("runtime-library = \"").append(existing("sidecar.runtime", "bin/dev.sh runtime")).append("\"\n");
        return launch(folder, null, toml, java.util.Map.of());
    }

    /**
     * Starts the sidecar on the model repository {@code folder/models} (filled by {@link
     * #publish}) with {@code lines} added to the {@code [sidecar]} table, and waits for
     * SERVING.
     */
    static SidecarProcess startRepository(Path folder, String... lines) throws Exception {
        Path socket = folder.resolve("sidecar.sock");
        StringBuilder toml = new StringBuilder("[sidecar]\n");
        toml.append("repository = \"").append(folder.resolve("models").toAbsolutePath()).append("\"\n");
        toml.append("runtime-library = \"").append(existing("sidecar.runtime", "bin/dev.sh runtime")).append("\"\n");
        for (String line : lines) {
            toml.append(line).append('\n');
        }
        toml.append("[sidecar.rpc]\nendpoint = \"unix:").append(socket).append("\"\n");
        return launch(folder, socket, toml, java.util.Map.of());
    }

    /**
     * Publishes the fixture model {@code fixture} as {@code version} of {@code model} in the
     * repository {@code folder/models}, as a careful operator does: written aside, then renamed
     * into place.
     */
    static void publish(Path folder, String model, int version, String fixture) throws IOException {
        Path modelFolder = folder.resolve("models").resolve(model);
        Path staging = modelFolder.resolve("." + version + ".partial");
        Files.createDirectories(staging);
        Files.copy(fixture(fixture + ".onnx"), staging.resolve("model.onnx"));
        Files.move(staging, modelFolder.resolve(Integer.toString(version)));
    }

    /**
     * Writes {@code toml} with the health, shutdown and GPU tables every test uses into {@code
     * folder/sidecar.toml}, starts the binary on it, and waits for SERVING.
     */
    private static SidecarProcess launch(
            Path folder, Path socket, StringBuilder toml, java.util.Map<String, String> environment) throws Exception {
        int healthPort = freePort();
        toml.append("[sidecar.health]\nhost = \"127.0.0.1\"\nport = ").append(healthPort).append('\n');
        toml.append("[sidecar.shutdown]\ngrace-period = \"10 s\"\n");
        toml.append("[sidecar.gpu]\nmode = \"off\"\n");
        Path config = folder.resolve("sidecar.toml");
        Files.writeString(config, toml.toString());
        SidecarProcess sidecar = new SidecarProcess(folder, config, socket, healthPort, environment);
        sidecar.launch();
        return sidecar;
    }

    /** Starts the binary again on the same config and socket, and waits for SERVING. */
    void launch() throws Exception {
        starts++;
        Path log = folder.resolve("sidecar-" + starts + ".log");
        ProcessBuilder builder =
                new ProcessBuilder(existing("sidecar.binary", "cargo build").toString(), "-c", config.toString())
                        .redirectErrorStream(true)
                        .redirectOutput(log.toFile());
        builder.environment().putAll(environment);
        process = builder.start();
        awaitServing();
    }

    /** {@code unix:PATH}, or {@code 127.0.0.1:PORT} for a sidecar on TCP. */
    String endpoint() {
        if (socket != null) {
            return "unix:" + socket;
        }
        Matcher endpoint;
        try {
            endpoint = Pattern.compile("(?m)^endpoint = \"(.*)\"$").matcher(Files.readString(config));
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        if (!endpoint.find()) {
            throw new AssertionError("no endpoint in " + config);
        }
        return endpoint.group(1);
    }

    Path socket() {
        return socket;
    }

    long pid() {
        return process.pid();
    }

    /** SIGKILL: the sidecar dies at once, answering nothing more. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            throw new AssertionError("gpu-sidecar pid " + pid() + " outlived SIGKILL by 30 s");
        }
    }

    /** SIGTERM and wait for the drain; SIGKILL if it takes longer than 30 s. Returns the exit code. */
    int stop() throws InterruptedException {
        if (process == null) {
            return 0;
        }
        process.destroy();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
            throw new AssertionError("gpu-sidecar pid " + pid() + " did not stop within 30 s of SIGTERM\n" + logs());
        }
        return process.exitValue();
    }

    @Override
    public void close() throws InterruptedException {
        if (process != null && process.isAlive()) {
            stop();
        }
    }

    /** The value of a Prometheus sample of the health endpoint's /metrics, 0 if absent. */
    double metric(String name, String labels) throws IOException, InterruptedException {
        HttpResponse<String> response =
                HttpClient.newHttpClient()
                        .send(
                                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + healthPort + "/metrics"))
                                        .timeout(Duration.ofSeconds(10))
                                        .build(),
                                HttpResponse.BodyHandlers.ofString());
        Pattern sample =
                Pattern.compile("^" + Pattern.quote(name) + "\\{[^}]*" + Pattern.quote(labels) + "[^}]*\\} (\\S+)$",
                        Pattern.MULTILINE);
        // Summed over every series that carries the labels (each model and version has its own).
        Matcher match = sample.matcher(response.body());
        double sum = 0;
        while (match.find()) {
            sum += Double.parseDouble(match.group(1));
        }
        return sum;
    }

    /** Triton's ModelStatistics of every version of {@code model}, summed: inferences and executions. */
    inference.GrpcService.ModelStatistics statistics(String model) throws InterruptedException {
        try (SocketChannel connection = new SocketChannel(socket)) {
            ManagedChannel channel = connection.channel;
            inference.GrpcService.ModelStatistics.Builder sum =
                    inference.GrpcService.ModelStatistics.newBuilder().setName(model);
            for (inference.GrpcService.ModelStatistics version :
                    inference.GRPCInferenceServiceGrpc.newBlockingStub(channel)
                            .withDeadlineAfter(10, TimeUnit.SECONDS)
                            .modelStatistics(inference.GrpcService.ModelStatisticsRequest.newBuilder().setName(model).build())
                            .getModelStatsList()) {
                sum.setInferenceCount(sum.getInferenceCount() + version.getInferenceCount());
                sum.setExecutionCount(sum.getExecutionCount() + version.getExecutionCount());
            }
            return sum.build();
        }
    }

    /** Everything every run of the binary logged, for failure messages. */
    String logs() {
        StringBuilder text = new StringBuilder();
        for (int run = 1; run <= starts; run++) {
            Path log = folder.resolve("sidecar-" + run + ".log");
            try {
                text.append("--- gpu-sidecar run ").append(run).append(" log:\n").append(Files.readString(log));
            } catch (IOException e) {
                text.append("--- gpu-sidecar run ").append(run).append(": no log (").append(e).append(")\n");
            }
        }
        return text.toString();
    }

    /** Polls gRPC health until SERVING (on TCP: /health until 200), failing early if the process exits. */
    private void awaitServing() throws Exception {
        if (socket == null) {
            awaitReady();
            return;
        }
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        String last = "no answer yet";
        try (SocketChannel connection = new SocketChannel(socket)) {
            ManagedChannel channel = connection.channel;
            while (System.nanoTime() < deadline) {
                if (!process.isAlive()) {
                    throw new AssertionError(
                            "gpu-sidecar exited with " + process.exitValue() + " before serving\n" + logs());
                }
                try {
                    HealthCheckResponse health =
                            HealthGrpc.newBlockingStub(channel)
                                    .withDeadlineAfter(1, TimeUnit.SECONDS)
                                    .check(HealthCheckRequest.getDefaultInstance());
                    if (health.getStatus() == HealthCheckResponse.ServingStatus.SERVING) {
                        return;
                    }
                    last = health.getStatus().name();
                } catch (StatusRuntimeException e) {
                    last = e.getStatus().toString();
                    channel.resetConnectBackoff();
                }
                TimeUnit.MILLISECONDS.sleep(20);
            }
            process.destroyForcibly();
            throw new AssertionError(
                    "gpu-sidecar was not SERVING within " + START_TIMEOUT + " (last: " + last + ")\n" + logs());
        }
    }

    private void awaitReady() throws Exception {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        HttpClient http = HttpClient.newHttpClient();
        String last = "no answer yet";
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new AssertionError("gpu-sidecar exited with " + process.exitValue() + " before READY\n" + logs());
            }
            try {
                HttpResponse<String> health = http.send(
                        HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + healthPort + "/health"))
                                .timeout(Duration.ofSeconds(1))
                                .build(),
                        HttpResponse.BodyHandlers.ofString());
                if (health.statusCode() == 200) {
                    return;
                }
                last = health.statusCode() + " " + health.body();
            } catch (IOException e) {
                last = e.toString();
            }
            TimeUnit.MILLISECONDS.sleep(20);
        }
        process.destroyForcibly();
        throw new AssertionError("gpu-sidecar was not READY within " + START_TIMEOUT + " (last: " + last + ")\n" + logs());
    }

    /** A plaintext channel to the sidecar's Unix socket, with an event loop of its own. */
    private static final class SocketChannel implements AutoCloseable {
        final EpollEventLoopGroup loop = new EpollEventLoopGroup(1);
        final ManagedChannel channel;

        SocketChannel(Path socket) {
            channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toString()))
                    .eventLoopGroup(loop)
                    .channelType(EpollDomainSocketChannel.class)
                    .usePlaintext()
                    .build();
        }

        @Override
        public void close() throws InterruptedException {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
            loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    /** Removes a folder the sidecar ran in, with everything in it. */
    static void deleteTree(Path folder) throws IOException {
        try (java.util.stream.Stream<Path> files = Files.walk(folder)) {
            for (Path path : files.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(path);
            }
        }
    }

    /** A fixture file of tests/fixtures/models ({@code -Dsidecar.fixtures}). */
    static Path fixture(String name) {
        Path path = Paths.get(System.getProperty("sidecar.fixtures", "../tests/fixtures/models")).resolve(name);
        if (!Files.exists(path)) {
            throw new AssertionError("fixture " + path + " is missing");
        }
        return path.toAbsolutePath();
    }

    static InputStream openFixture(String name) throws IOException {
        return Files.newInputStream(fixture(name));
    }

    static Path existing(String property, String howToMake) {
        String value = System.getProperty(property);
        if (value == null) {
            throw new AssertionError("-D" + property + " is not set (the pom sets it)");
        }
        Path path = Paths.get(value).toAbsolutePath();
        if (!Files.exists(path)) {
            throw new AssertionError(property + " " + path + " does not exist: run `" + howToMake + "` first");
        }
        return path;
    }

    private static int freePort() throws IOException {
        try (ServerSocket probe = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return probe.getLocalPort();
        }
    }
}
