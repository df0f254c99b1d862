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

import java.time.Duration;
import java.util.Collections;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletionException;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.async.RichAsyncFunction;

/**
 * Infers each record on the TaskManager's gpu-sidecar, for {@code AsyncDataStream.unorderedWait}
 * and {@code orderedWait}. Each subtask opens one {@link SidecarClient} (one channel, one
 * stream) in {@code open} and closes it in {@code close}; a {@link TensorCodec} turns records
 * into input tensors and the outputs into results.
 *
 * <pre>{@code
 * GpuSidecarAsyncFunction<Event, Prediction<Event>> infer = new GpuSidecarAsyncFunction<>(
 *         "unix:/tmp/gpu-sidecar.sock", "mlp",
 *         ArrayTensorCodec.<Event>create().floats("features", e -> e.features))
 *     .withRequestTimeout(Duration.ofSeconds(10));
 * AsyncDataStream.unorderedWait(events, infer, infer.flinkTimeoutMillis(), MILLISECONDS, 64);
 * }</pre>
 *
 * <p>Give Flink's own timeout a little more than the request timeout ({@link
 * #flinkTimeoutMillis()}): the client then fails a late request with the sidecar's status, and
 * Flink's {@link #timeout} answers with the client's view of the sidecar if it fires first.
 */
public class GpuSidecarAsyncFunction<IN, OUT> extends RichAsyncFunction<IN, OUT> {
    private static final long serialVersionUID = 1L;

    private final String endpoint;
    private final String model;
    private final TensorCodec<IN, OUT> codec;
    private SidecarOptions options = SidecarOptions.defaults();

    private transient SidecarClient client;
    // Messages name a record by its subtask and position, never by its contents (large, and
    // possibly personal data, in the TaskManager's log and the web UI).
    private transient int subtask;
    private transient long records; // counted on the task thread, which alone calls asyncInvoke
    private transient ClientMetrics metrics;

    /**
     * @param endpoint where the sidecar listens: {@code unix:/path.sock} or {@code host:port}
     * @param model the model's name in the sidecar ({@code sidecar.model.name})
     * @param codec turns records into input tensors and outputs into results
     */
    public GpuSidecarAsyncFunction(String endpoint, String model, TensorCodec<IN, OUT> codec) {
        Endpoint.parse(endpoint); // refuse a bad endpoint when the job is built
        this.endpoint = endpoint;
        this.model = Objects.requireNonNull(model, "model");
        this.codec = Objects.requireNonNull(codec, "codec");
    }

    /** How long a request may take, retries included (default 30 s). */
    public GpuSidecarAsyncFunction<IN, OUT> withRequestTimeout(Duration timeout) {
        options = options.withRequestTimeout(timeout);
        return this;
    }

    /** How many requests a subtask may have unanswered (default 256). */
    public GpuSidecarAsyncFunction<IN, OUT> withMaxInFlight(int requests) {
        options = options.withMaxInFlight(requests);
        return this;
    }

    /**
     * The most records one request carries (default 64; 1: one record per request): records
     * that arrive while a request of the subtask is in flight go together in the next one.
     */
    public GpuSidecarAsyncFunction<IN, OUT> withMaxRecordsPerRequest(int records) {
        options = options.withMaxRecordsPerRequest(records);
        return this;
    }

    /** How long {@code open} waits for the sidecar to answer (default 30 s). */
    public GpuSidecarAsyncFunction<IN, OUT> withConnectTimeout(Duration timeout) {
        options = options.withConnectTimeout(timeout);
        return this;
    }

    /** Pins one version of the model; unset: the newest the sidecar serves. */
    public GpuSidecarAsyncFunction<IN, OUT> withModelVersion(String version) {
        options = options.withModelVersion(version);
        return this;
    }

    /**
     * TLS to a {@code host:port} endpoint whose sidecar has {@code [sidecar.rpc.tls]}: trusting
     * the CA in {@code caFile} (null: the JVM's default trust store), presenting {@code
     * certFile} and its key {@code keyFile} (null: none) where client certificates are
     * required. PEM files, read on the TaskManager.
     */
    public GpuSidecarAsyncFunction<IN, OUT> withTls(String caFile, String certFile, String keyFile) {
        options = options.withTls(caFile, certFile, keyFile);
        return this;
    }

    /** Every client option at once. */
    public GpuSidecarAsyncFunction<IN, OUT> withOptions(SidecarOptions options) {
        this.options = Objects.requireNonNull(options, "options");
        return this;
    }

    /** A Flink async timeout that lets the request timeout fire first: it plus a second. */
    public long flinkTimeoutMillis() {
        return options.requestTimeout().toMillis() + 1000;
    }

    @Override
    public void open(OpenContext openContext) throws Exception {
        subtask = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        client = SidecarClient.connect(endpoint, model, options);
        metrics = ClientMetrics.register(getRuntimeContext().getMetricGroup(), client);
    }

    @Override
    public void asyncInvoke(IN record, ResultFuture<OUT> result) {
        String which = "record #" + ++records + " of subtask " + subtask;
        Map<String, Tensor> inputs;
        try {
            inputs = codec.encode(record, client.model());
        } catch (RuntimeException e) {
            result.completeExceptionally(
                    SidecarException.of(
                            "INVALID_ARGUMENT",
                            "cannot make the inputs of model '" + model + "' from " + which + ": "
                                    + e.getMessage(),
                            e));
            return;
        }
        long sent = metrics.sent();
        client.infer(inputs)
                .whenComplete(
                        (outputs, error) -> {
                            metrics.answered(sent, error != null);
                            if (error != null) {
                                result.completeExceptionally(unwrap(error));
                                return;
                            }
                            OUT decoded;
                            try {
                                decoded = codec.decode(record, outputs);
                            } catch (RuntimeException e) {
                                result.completeExceptionally(
                                        SidecarException.of(
                                                "INTERNAL",
                                                "cannot read the outputs of model '" + model
                                                        + "' for " + which + ": "
                                                        + e.getMessage(),
                                                e));
                                return;
                            }
                            result.complete(Collections.singleton(decoded));
                        });
    }

    /** Flink's async timeout fired first: fail the record with what the client knows. */
    @Override
    public void timeout(IN record, ResultFuture<OUT> result) {
        String status = client != null ? client.status() : "gpu-sidecar at " + endpoint + ": not connected";
        result.completeExceptionally(
                SidecarException.of(
                        "DEADLINE_EXCEEDED",
                        "Flink's async timeout passed before the sidecar answered a record of subtask "
                                + subtask + "; " + status));
    }

    @Override
    public void close() throws Exception {
        if (client != null) {
            client.close();
            client = null;
        }
    }

    static Throwable unwrap(Throwable error) {
        return error instanceof CompletionException && error.getCause() != null ? error.getCause() : error;
    }
}
