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

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Records the sidecar answers too late, on the fixture model {@code slow} (an execution takes
 * about 10 µs per unit of its largest index): whichever timeout fires first, the record fails
 * with what the client knows of the sidecar, not a bare TimeoutException.
 */
@Timeout(300)
class TimeoutTest {
    /** About three seconds of execution. */
    private static final long SLOW_INDEX = 300_000;

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    @RegisterExtension static final SidecarExtension SIDECAR = new SidecarExtension("slow");

    private static String failureOf(GpuSidecarAsyncFunction<Long, Prediction<Long>> function, long flinkTimeoutMillis) {
        StreamExecutionEnvironment env = Jobs.environment();
        env.setParallelism(1);
        DataStream<Long> indexes = env.fromData(List.of(SLOW_INDEX));
        DataStream<Prediction<Long>> predictions =
                AsyncDataStream.unorderedWait(indexes, function, flinkTimeoutMillis, TimeUnit.MILLISECONDS, 1)
                        .returns(new TypeHint<Prediction<Long>>() {});
        Exception failure = assertThrows(Exception.class, () -> Jobs.collect(predictions));
        return Failures.messages(failure);
    }

    private static GpuSidecarAsyncFunction<Long, Prediction<Long>> slowModel() {
        return new GpuSidecarAsyncFunction<>(
                SIDECAR.endpoint(),
                "slow",
                ArrayTensorCodec.<Long>create().longs("index", index -> new long[] {index}));
    }

    @Test
    void theRequestTimeoutFailsTheRecordWithTheClientsStatus() {
        GpuSidecarAsyncFunction<Long, Prediction<Long>> function =
                slowModel().withRequestTimeout(Duration.ofMillis(500));
        String messages = failureOf(function, function.flinkTimeoutMillis());
        assertTrue(messages.contains("SidecarException$Timeout: gpu-sidecar at " + SIDECAR.endpoint()), messages);
        assertTrue(messages.contains("model 'slow': no answer within 500 ms (sent, no answer yet)"), messages);
    }

    @Test
    void flinksAsyncTimeoutAnswersWithTheSidecarsStatus() {
        GpuSidecarAsyncFunction<Long, Prediction<Long>> function =
                slowModel().withRequestTimeout(Duration.ofSeconds(60));
        String messages = failureOf(function, 500);
        assertTrue(
                messages.contains("SidecarException$Timeout: Flink's async timeout passed before the sidecar answered a record of subtask 0;"),
                messages);
        // The record's contents stay out of our message (Flink's own wrapper names the record).
        String ours = messages.substring(messages.indexOf("SidecarException$Timeout: Flink's async timeout"));
        ours = ours.substring(0, ours.indexOf('\n') < 0 ? ours.length() : ours.indexOf('\n'));
        assertFalse(ours.contains(Long.toString(SLOW_INDEX)), ours);
        assertTrue(
                messages.contains("gpu-sidecar at " + SIDECAR.endpoint() + ", model 'slow': stream open; 1 requests in flight"),
                messages);
    }
}
