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

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.function.BooleanSupplier;

/**
 * Several records in one request. A record that arrives while a request of the subtask is in
 * flight waits for the next request, which carries every record that waited, up to {@code
 * maxRecordsPerRequest} of them, their rows joined along the batch dimension; the answer's
 * rows are split back to each record in the same order. A lone record goes at once: no
 * timer, no added latency. The next request leaves as soon as one in flight is answered (or
 * at once when the records waiting reach the most), so the sidecar sees fewer, larger
 * requests exactly when there is more than one record to send.
 *
 * <p>Runs on the task thread ({@link #infer}) and on whichever thread completes a request
 * ({@link #flush}), which never blocks: it sends only while a request permit is free, and
 * otherwise leaves the records to the next answer.
 */
final class Coalescing {
    /** Sends one request; {@code mayBlock} false: returns null rather than wait for a permit. */
    interface Sender {
        CompletableFuture<Map<String, Tensor>> send(Map<String, Tensor> inputs, boolean mayBlock);
    }

    /** One record waiting for a request. */
    private static final class Part {
        final Map<String, Tensor> inputs;
        final long rows;
        final CompletableFuture<Map<String, Tensor>> future = new CompletableFuture<>();

        Part(Map<String, Tensor> inputs) {
            this.inputs = inputs;
            long[] shape = inputs.values().iterator().next().shape();
            this.rows = shape.length == 0 ? 1 : shape[0];
        }

        /** Whether its inputs join {@code other}'s: the same names, types and row shapes. */
        boolean joins(Part other) {
            if (!inputs.keySet().equals(other.inputs.keySet())) {
                return false;
            }
            for (Map.Entry<String, Tensor> input : inputs.entrySet()) {
                Tensor mine = input.getValue();
                Tensor theirs = other.inputs.get(input.getKey());
                long[] a = mine.shape();
                long[] b = theirs.shape();
                if (mine.dataType() != theirs.dataType()
                        || a.length == 0
                        || a.length != b.length
                        || !Arrays.equals(Arrays.copyOfRange(a, 1, a.length), Arrays.copyOfRange(b, 1, b.length))) {
                    return false;
                }
            }
            return true;
        }
    }

    private final int maxRecordsPerRequest;
    /** The most rows the server takes in one request (its max_batch_size); 0: unknown. */
    private volatile long maxRows;
    private final Sender sender;
    private final BooleanSupplier nothingInFlight;
    private final List<Part> forming = new ArrayList<>(); // guarded by itself

    Coalescing(int maxRecordsPerRequest, Sender sender, BooleanSupplier nothingInFlight) {
        this.maxRecordsPerRequest = maxRecordsPerRequest;
        this.sender = sender;
        this.nothingInFlight = nothingInFlight;
    }

    /** The most rows one request may carry, as the server says (ModelConfig's max_batch_size). */
    void setMaxRows(long rows) {
        maxRows = rows;
    }

    /** Whether records may share requests: more than one each, and the server batches. */
    boolean enabled() {
        return maxRecordsPerRequest > 1 && maxRows > 1;
    }

    /** Sends a record's inputs at once, or with the next request; completes with its outputs. */
    CompletableFuture<Map<String, Tensor>> infer(Map<String, Tensor> inputs) {
        Part part = new Part(inputs);
        List<Part> ready = null;
        synchronized (forming) {
            if (forming.isEmpty() && nothingInFlight.getAsBoolean()) {
                ready = List.of(part);
            } else {
                if (!forming.isEmpty()
                        && (!part.joins(forming.get(0)) || rows(forming) + part.rows > maxRows)) {
                    // Inputs of another shape, or past the server's batch, go in a request of
                    // their own, after these.
                    ready = new ArrayList<>(forming);
                    forming.clear();
                }
                forming.add(part);
                if (ready == null
                        && (forming.size() >= maxRecordsPerRequest || rows(forming) >= maxRows)) {
                    ready = new ArrayList<>(forming);
                    forming.clear();
                }
            }
        }
        if (ready != null) {
            send(ready, true);
        }
        return part.future;
    }

    /** Sends what waits, if a request permit is free (after a request was answered). */
    void flush() {
        List<Part> ready;
        synchronized (forming) {
            if (forming.isEmpty()) {
                return;
            }
            ready = new ArrayList<>();
            long rows = 0;
            for (Part part : forming) {
                if (!ready.isEmpty()
                        && (ready.size() >= maxRecordsPerRequest
                                || rows + part.rows > maxRows
                                || !part.joins(ready.get(0)))) {
                    break;
                }
                ready.add(part);
                rows += part.rows;
            }
            forming.subList(0, ready.size()).clear();
        }
        send(ready, false);
    }

    private static long rows(List<Part> parts) {
        long rows = 0;
        for (Part part : parts) {
            rows += part.rows;
        }
        return rows;
    }

    /** Fails every record still waiting (the client closed). */
    void failAll(SidecarException error) {
        List<Part> waiting;
        synchronized (forming) {
            waiting = new ArrayList<>(forming);
            forming.clear();
        }
        waiting.forEach(part -> part.future.completeExceptionally(error));
    }

    private void send(List<Part> parts, boolean mayBlock) {
        Map<String, Tensor> joined;
        if (parts.size() == 1) {
            joined = parts.get(0).inputs;
        } else {
            joined = new LinkedHashMap<>();
            for (String name : parts.get(0).inputs.keySet()) {
                List<Tensor> tensors = new ArrayList<>(parts.size());
                parts.forEach(part -> tensors.add(part.inputs.get(name)));
                joined.put(name, Tensor.concat(tensors));
            }
        }
        CompletableFuture<Map<String, Tensor>> answer = sender.send(joined, mayBlock);
        if (answer == null) {
            // No permit free: a request is in flight, whose answer sends these.
            synchronized (forming) {
                forming.addAll(0, parts);
            }
            return;
        }
        answer.whenComplete(
                (outputs, error) -> {
                    if (error != null) {
                        Throwable cause = GpuSidecarAsyncFunction.unwrap(error);
                        parts.forEach(part -> part.future.completeExceptionally(cause));
                        return;
                    }
                    if (parts.size() == 1) {
                        parts.get(0).future.complete(outputs);
                        return;
                    }
                    split(outputs, parts);
                });
    }

    /** Each record's rows of the answer, in order. */
    private static void split(Map<String, Tensor> outputs, List<Part> parts) {
        List<Map<String, Tensor>> answers = new ArrayList<>(parts.size());
        try {
            long at = 0;
            for (Part part : parts) {
                Map<String, Tensor> mine = new LinkedHashMap<>();
                for (Map.Entry<String, Tensor> output : outputs.entrySet()) {
                    mine.put(output.getKey(), output.getValue().rows(at, part.rows));
                }
                answers.add(mine);
                at += part.rows;
            }
        } catch (RuntimeException e) {
            SidecarException error =
                    SidecarException.of(
                            "INTERNAL",
                            "the answer to " + parts.size() + " records in one request does not split into their rows: "
                                    + e.getMessage(),
                            e);
            parts.forEach(part -> part.future.completeExceptionally(error));
            return;
        }
        for (int i = 0; i < parts.size(); i++) {
            parts.get(i).future.complete(answers.get(i));
        }
    }
}
