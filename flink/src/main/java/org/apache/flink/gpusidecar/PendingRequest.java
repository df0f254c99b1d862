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
import inference.GrpcService.InferParameter;
import inference.GrpcService.ModelInferRequest;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;

/** One request a {@link SidecarClient} sent and awaits the answer to, by its {@code id}. */
final class PendingRequest {
    final String id;
    final ModelInferRequest request;
    final CompletableFuture<Map<String, Tensor>> future = new CompletableFuture<>();
    final AtomicInteger retries = new AtomicInteger();
    final long deadlineNanos;
    volatile String lastStatus;
    // Guarded by the client's stream lock: the stream generation it was last sent on, and
    // whether it waits out a backoff before it is sent again.
    long sentOn = -1;
    boolean backingOff;

    PendingRequest(String id, ModelInferRequest request, long deadlineNanos) {
        this.id = id;
        this.request = request;
        this.deadlineNanos = deadlineNanos;
    }

    /**
     * The request as sent at {@code nowNanos}: with the time the client still waits for it as
     * the protocol's {@code timeout} parameter (microseconds, as Triton defines it, at least 1),
     * so that the server drops it from its queue once nobody waits for the answer. The inputs'
     * bytes are shared, not copied.
     */
    ModelInferRequest withRemainingTime(long nowNanos) {
        long micros = Math.max(1, (deadlineNanos - nowNanos + 999) / 1000);
        return request.toBuilder()
                .putParameters("timeout", InferParameter.newBuilder().setInt64Param(micros).build())
                .build();
    }
}
