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

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.gpusidecar.AffineRecords.Rec;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.async.CollectionSupplier;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * A job whose sidecar is held (its first execution waits on a fail point until the test
 * releases it): the record's deadline reaches the sidecar, which does not run what the client
 * gave up on; and a client with every request permit taken leaves Flink's task thread free,
 * so checkpoints go on.
 */
@Timeout(300)
class SaturationTest {
    private static final Duration WAIT = Duration.ofSeconds(60);
    private static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(1);

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    /** What the tolerant function's records failed with (the job goes on). */
    private static final Queue<String> FAILURES = new ConcurrentLinkedQueue<>();
    /** Holds the source after its first records, until the test ends. */
    private static volatile CountDownLatch sourceHold = new CountDownLatch(0);
    private static final AtomicInteger CHECKPOINTS_COMPLETED = new AtomicInteger();
    private static final AtomicInteger RECORDS_EMITTED = new AtomicInteger();

    @TempDir Path folder;

    interface Condition {
        boolean holds() throws Exception;
    }

    private static void await(String what, Condition condition) throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!condition.holds()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("not within " + WAIT + ": " + what);
            }
            Thread.sleep(10);
        }
    }

    /** Records 0..count-1, then a source that waits for the test before the next. */
    private static DataStream<Rec> recordsThenHold(StreamExecutionEnvironment env, int count) {
        GeneratorFunction<Long, Rec> generator = id -> {
            if (id >= count) {
                sourceHold.await();
            }
            return new Rec(id, new float[] {id, 1, 2, 3});
        };
        return env.fromSource(
                new DataGeneratorSource<>(generator, Long.MAX_VALUE, RateLimiterStrategy.noOp(), TypeInformation.of(Rec.class)),
                WatermarkStrategy.noWatermarks(),
                "records");
    }

    /** The affine model's function, but a failed record becomes an answer without outputs. */
    private static GpuSidecarAsyncFunction<Rec, Prediction<Rec>> tolerant(String endpoint) {
        return new GpuSidecarAsyncFunction<Rec, Prediction<Rec>>(
                endpoint, "affine", ArrayTensorCodec.<Rec>create().floats("features", rec -> rec.features)) {
            private static final long serialVersionUID = 1L;

            @Override
            public void asyncInvoke(Rec record, ResultFuture<Prediction<Rec>> result) {
                super.asyncInvoke(record, new ResultFuture<>() {
                    @Override
                    public void complete(Collection<Prediction<Rec>> predictions) {
                        result.complete(predictions);
                    }

                    @Override
                    public void complete(CollectionSupplier<Prediction<Rec>> predictions) {
                        result.complete(predictions);
                    }

                    @Override
                    public void completeExceptionally(Throwable error) {
                        FAILURES.add("record " + record.id + ": " + error);
                        result.complete(List.of(new Prediction<>(record, java.util.Map.of())));
                    }
                });
            }
        };
    }

    @Test
    void aRecordWhoseDeadlinePassedInTheSidecarsQueueIsNotRun() throws Exception {
        FAILURES.clear();
        sourceHold = new CountDownLatch(1);
        Path gate = Files.createFile(folder.resolve("gate"));
        // One row per execution: record 1 cannot join record 0's execution.
        try (SidecarProcess sidecar = SidecarProcess.startHeld(folder, "affine", gate, "max-batch-size = 1")) {
            StreamExecutionEnvironment env = Jobs.environment();
            env.setParallelism(1);
            GpuSidecarAsyncFunction<Rec, Prediction<Rec>> function =
                    tolerant(sidecar.endpoint()).withRequestTimeout(REQUEST_TIMEOUT).withMaxRecordsPerRequest(1);
            AsyncDataStream.unorderedWait(
                            recordsThenHold(env, 2), function, function.flinkTimeoutMillis(), TimeUnit.MILLISECONDS, 4)
                    .returns(new TypeHint<Prediction<Rec>>() {})
                    .sinkTo(new DiscardingSink<>());
            JobClient job = env.executeAsync("deadline");
            try {
                // Record 0 runs and is held there; record 1 waits in the sidecar's queue.
                await("record 0 held in its execution", () -> sidecar.logs().contains("failpoint gpu::execute: held"));
                await("record 1 queued", () ->
                        sidecar.metric("gpu_sidecar_inference_queue_depth", "model=\"affine\"") == 1);
                long queuedBy = System.nanoTime();
                // The client gives both up at its timeout; the tolerant function goes on.
                await("both records failed in the client", () -> FAILURES.size() == 2);
                for (String failure : FAILURES) {
                    assertTrue(failure.contains("SidecarException$Timeout"), failure);
                }
                // Record 1 carried at most the timeout as its time left, and had arrived by
                // queuedBy: its deadline in the sidecar has passed once that much time has.
                await("record 1's deadline passed", () -> System.nanoTime() - queuedBy > REQUEST_TIMEOUT.toNanos());
                Files.delete(gate);
                await("record 1 refused for its deadline", () ->
                        sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"deadline\"") == 1);
                inference.GrpcService.ModelStatistics statistics = sidecar.statistics("affine");
                assertEquals(1, statistics.getInferenceCount(), "record 0 alone ran: " + statistics);
                assertEquals(1, statistics.getExecutionCount(), statistics.toString());
            } finally {
                sourceHold.countDown();
                job.cancel().get();
            }
        }
    }

    /** Counts records on their way to the client. */
    private static final class CountEmitted implements MapFunction<Rec, Rec> {
        private static final long serialVersionUID = 1L;

        @Override
        public Rec map(Rec record) {
            RECORDS_EMITTED.incrementAndGet();
            return record;
        }
    }

    /** Counts the checkpoints Flink completed, told on the task's own thread. */
    private static final class CountCheckpoints implements MapFunction<Prediction<Rec>, Prediction<Rec>>, CheckpointListener {
        private static final long serialVersionUID = 1L;

        @Override
        public Prediction<Rec> map(Prediction<Rec> prediction) {
            return prediction;
        }

        @Override
        public void notifyCheckpointComplete(long checkpointId) {
            CHECKPOINTS_COMPLETED.incrementAndGet();
        }
    }

    @Test
    void checkpointsCompleteWhileEveryRequestPermitIsTaken() throws Exception {
        CHECKPOINTS_COMPLETED.set(0);
        RECORDS_EMITTED.set(0);
        Path gate = Files.createFile(folder.resolve("gate"));
        try (SidecarProcess sidecar = SidecarProcess.startHeld(folder, "affine", gate)) {
            StreamExecutionEnvironment env = Jobs.environment();
            env.setParallelism(1);
            env.enableCheckpointing(100);
            // One request at a time, and it is held: every later record waits in the client.
            // Flink's capacity (1000) stays far from full at 50 records a second, so that
            // only a client that blocked the task thread could stop the checkpoints.
            GpuSidecarAsyncFunction<Rec, Prediction<Rec>> function =
                    Jobs.inference(sidecar.endpoint()).withMaxInFlight(1).withMaxRecordsPerRequest(1);
            DataStream<Rec> records = Jobs.records(env, AffineRecords.shared(), 1_000_000, 50).map(new CountEmitted());
            AsyncDataStream.orderedWait(records, function, function.flinkTimeoutMillis(), TimeUnit.MILLISECONDS, 1000)
                    .returns(new TypeHint<Prediction<Rec>>() {})
                    .map(new CountCheckpoints())
                    .sinkTo(new DiscardingSink<>());
            JobClient job = env.executeAsync("saturated");
            try {
                await("the first request held in its execution", () -> sidecar.logs().contains("failpoint gpu::execute: held"));
                // A task thread that the client blocked would emit no more.
                await("records reaching the client while its one request is held", () -> RECORDS_EMITTED.get() >= 3);
                int before = CHECKPOINTS_COMPLETED.get();
                await("two checkpoints completed while the request is held", () -> CHECKPOINTS_COMPLETED.get() >= before + 2);
                assertTrue(Files.exists(gate));
                assertEquals(0, sidecar.statistics("affine").getInferenceCount(), "nothing answered yet");
                Files.delete(gate);
                await("the held records answered once released", () ->
                        sidecar.statistics("affine").getInferenceCount() >= 3);
            } finally {
                Files.deleteIfExists(gate);
                job.cancel().get();
            }
        }
    }
}
