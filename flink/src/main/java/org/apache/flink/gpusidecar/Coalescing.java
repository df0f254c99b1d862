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
 * The client's queue of records, and several records in one request. A record goes at once
 * when a request permit is free and nothing waits; otherwise it waits here (never on a lock in
 * the task thread: Flink's async capacity bounds how many wait) and leaves when a request in
 * flight is answered. Records of a model that batches, waiting together, share that request:
 * up to {@code maxRecordsPerRequest} of them and the server's {@code max_batch_size} in rows,
 * their rows joined along the batch dimension, the answer's rows split back to each record in
 * the same order. A lone record goes at once: no timer, no added latency.
 *
 * <p>Runs on the task thread ({@link #infer}) and on whichever thread completes a request
 * ({@link #flush}); neither blocks: a request is sent only when a permit is free.
 */
final class Coalescing {
    /** Sends one request if a request permit is free; returns null when none is. */
    interface Sender {
        CompletableFuture<Map<String, Tensor>> send(Map<String, Tensor> inputs);
    }

    /** One record waiting for a request. */
    private static final class Part {
        final Map<String, Tensor> inputs;
        final long rows;
        /** Whether it may share a request (its model batches, and joining is on). */
        final boolean joinable;
        final CompletableFuture<Map<String, Tensor>> future = new CompletableFuture<>();

        Part(Map<String, Tensor> inputs, boolean joinable) {
            this.inputs = inputs;
            this.joinable = joinable;
            long[] shape = inputs.isEmpty() ? new long[0] : inputs.values().iterator().next().shape();
            this.rows = shape.length == 0 ? 1 : shape[0];
        }

        /** Whether it joins {@code other}'s request: the same names, types and row shapes. */
        boolean joins(Part other) {
            if (!joinable || !other.joinable || !inputs.keySet().equals(other.inputs.keySet())) {
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
    private final BooleanSupplier permitFree;
    private final List<Part> waiting = new ArrayList<>(); // guarded by itself

    Coalescing(
            int maxRecordsPerRequest,
            Sender sender,
            BooleanSupplier nothingInFlight,
            BooleanSupplier permitFree) {
        this.maxRecordsPerRequest = maxRecordsPerRequest;
        this.sender = sender;
        this.nothingInFlight = nothingInFlight;
        this.permitFree = permitFree;
    }

    /** The most rows one request may carry, as the server says (ModelConfig's max_batch_size). */
    void setMaxRows(long rows) {
        maxRows = rows;
    }

    /** Whether records may share requests: more than one each, and the server batches. */
    boolean enabled() {
        return maxRecordsPerRequest > 1 && maxRows > 1;
    }

    /** Records waiting for a request. */
    int waiting() {
        synchronized (waiting) {
            return waiting.size();
        }
    }

    /**
     * Sends a record's inputs at once, or with a later request ({@code joinable}: shared with
     * other records); completes with its outputs. Never blocks.
     */
    CompletableFuture<Map<String, Tensor>> infer(Map<String, Tensor> inputs, boolean joinable) {
        Part part = new Part(inputs, joinable);
        List<Part> ready;
        synchronized (waiting) {
            boolean idle = waiting.isEmpty() && nothingInFlight.getAsBoolean();
            waiting.add(part);
            ready = idle ? takeGroup(true) : takeGroup(false);
        }
        if (ready != null) {
            send(ready, true);
        }
        return part.future;
    }

    /** Sends the first records waiting, if a request permit is free (after an answer). */
    void flush() {
        flush(true);
    }

    private void flush(boolean again) {
        List<Part> ready;
        synchronized (waiting) {
            ready = takeGroup(true);
        }
        if (ready != null) {
            send(ready, again);
        }
    }

    /**
     * Takes the first records waiting that go in one request: the first, and those after it
     * that join it, up to the most records and rows. Without {@code any}, only a group that
     * cannot grow (it is at the most, or a record after it does not join). Caller holds the
     * lock.
     */
    private List<Part> takeGroup(boolean any) {
        if (waiting.isEmpty()) {
            return null;
        }
        Part first = waiting.get(0);
        int most = first.joinable ? maxRecordsPerRequest : 1;
        List<Part> group = new ArrayList<>();
        long rows = 0;
        for (Part part : waiting) {
            if (!group.isEmpty() && (group.size() >= most || rows + part.rows > maxRows || !part.joins(first))) {
                break;
            }
            group.add(part);
            rows += part.rows;
        }
        boolean complete = group.size() < waiting.size() || group.size() >= most || rows >= maxRows;
        if (!any && !complete) {
            return null;
        }
        waiting.subList(0, group.size()).clear();
        return group;
    }

    /** Fails every record still waiting (the client closed). */
    void failAll(SidecarException error) {
        List<Part> failed;
        synchronized (waiting) {
            failed = new ArrayList<>(waiting);
            waiting.clear();
        }
        failed.forEach(part -> part.future.completeExceptionally(error));
    }

    /** Sends {@code parts} in one request, or puts them back first in line without a permit. */
    private void send(List<Part> parts, boolean again) {
        CompletableFuture<Map<String, Tensor>> answer;
        try {
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
            answer = sender.send(joined);
        } catch (RuntimeException e) {
            // Inputs the protocol cannot carry: never on the thread that answers, never lost.
            SidecarException error =
                    e instanceof SidecarException
                            ? (SidecarException) e
                            : SidecarException.of("INVALID_ARGUMENT", "cannot make a request of the inputs: " + e.getMessage(), e);
            parts.forEach(part -> part.future.completeExceptionally(error));
            return;
        }
        if (answer == null) {
            // No permit free: a request is in flight, whose answer sends these. Its answer may
            // have come meanwhile and found nothing waiting: then look again, once.
            synchronized (waiting) {
                waiting.addAll(0, parts);
            }
            if (again && permitFree.getAsBoolean()) {
                flush(false);
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
