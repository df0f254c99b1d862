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
import io.grpc.StatusRuntimeException;
import inference.GRPCInferenceServiceGrpc;
import inference.GrpcService.ModelConfigRequest;
import inference.GrpcService.ModelMetadataRequest;
import inference.GrpcService.ModelMetadataResponse;
import inference.GrpcService.RepositoryIndexRequest;
import inference.GrpcService.RepositoryIndexResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The unary calls a {@link SidecarClient} makes beside its stream: the model's metadata when
 * it connects (retried while the sidecar starts, up to the connect timeout) and the
 * repository index. Each failure is a {@link SidecarException} that names the sidecar.
 */
final class SidecarCalls {
    private final SidecarChannel channel;
    private final String modelName;
    private final SidecarOptions options;
    private final Backoff backoff;
    private final String who;

    SidecarCalls(SidecarChannel channel, String modelName, SidecarOptions options, String who) {
        this.channel = channel;
        this.modelName = modelName;
        this.options = options;
        this.backoff = new Backoff(options.initialBackoff(), options.maxBackoff());
        this.who = who;
    }

    private GRPCInferenceServiceGrpc.GRPCInferenceServiceBlockingStub stub(long timeoutNanos) {
        return GRPCInferenceServiceGrpc.newBlockingStub(channel.channel())
                .withDeadlineAfter(Math.max(timeoutNanos, 1), TimeUnit.NANOSECONDS);
    }

    /** Asks for the model's metadata until it answers or the connect timeout passes. */
    ModelInfo fetchMetadata() {
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
            try {
                ModelMetadataResponse metadata =
                        stub(deadline - System.nanoTime()).modelMetadata(request);
                return KServeCodec.modelInfo(metadata);
            } catch (StatusRuntimeException e) {
                Status.Code code = e.getStatus().getCode();
                if (code != Status.Code.UNAVAILABLE && code != Status.Code.DEADLINE_EXCEEDED) {
                    throw SidecarException.of(
                            code.name(),
                            who + ": ModelMetadata failed: " + SidecarChannel.describe(e.getStatus()),
                            e);
                }
                if (telling == null || code == Status.Code.UNAVAILABLE) {
                    telling = e;
                }
            }
            long wait = backoff.nanos(++attempt);
            if (System.nanoTime() + wait >= deadline) {
                Status status = telling.getStatus();
                throw SidecarException.of(
                        status.getCode().name(),
                        "cannot reach gpu-sidecar at " + channel.endpoint() + " within "
                                + options.connectTimeout().toMillis() + " ms (model '" + modelName
                                + "'): " + SidecarChannel.describe(status) + "; "
                                + channel.whereItListens(),
                        telling);
            }
            try {
                TimeUnit.NANOSECONDS.sleep(wait);
            } catch (InterruptedException interrupted) {
                Thread.currentThread().interrupt();
                throw SidecarException.of(
                        "CANCELLED", who + ": interrupted while connecting", interrupted);
            }
            channel.connectNow();
        }
    }

    /**
     * The most rows one request of the model may carry (ModelConfig's {@code max_batch_size}),
     * 0 when it does not batch or the server does not say.
     */
    long maxBatchSize() {
        try {
            return Math.max(
                    0,
                    stub(options.connectTimeout().toNanos())
                            .modelConfig(
                                    ModelConfigRequest.newBuilder()
                                            .setName(modelName)
                                            .setVersion(options.modelVersion())
                                            .build())
                            .getConfig()
                            .getMaxBatchSize());
        } catch (StatusRuntimeException e) {
            return 0;
        }
    }

    /** Every model the sidecar knows, each version with its state: Triton's RepositoryIndex. */
    List<IndexEntry> repositoryIndex() {
        try {
            RepositoryIndexResponse index =
                    stub(options.requestTimeout().toNanos())
                            .repositoryIndex(RepositoryIndexRequest.getDefaultInstance());
            List<IndexEntry> entries = new ArrayList<>();
            for (RepositoryIndexResponse.ModelIndex model : index.getModelsList()) {
                entries.add(
                        new IndexEntry(
                                model.getName(), model.getVersion(), model.getState(), model.getReason()));
            }
            return entries;
        } catch (StatusRuntimeException e) {
            throw SidecarException.of(
                    e.getStatus().getCode().name(),
                    who + ": RepositoryIndex failed: " + SidecarChannel.describe(e.getStatus()),
                    e);
        }
    }
}
