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
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.gpusidecar.AffineRecords.Answer;
import org.apache.flink.gpusidecar.AffineRecords.Rec;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.flink.util.CloseableIterator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/** Jobs that meet a sidecar restarting, a full queue, a bad record, or no sidecar at all. */
@Timeout(300)
class ResilienceTest {
    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    private static final AffineRecords fixture = AffineRecords.shared();

    @TempDir Path folder;

    /**
     * A record far over the sidecar's message limit is refused by gRPC itself, which ends the
     * whole stream ("larger than max"): the client fails that record alone, without retrying
     * it, and answers the others on the stream it opens again.
     */
    @Test
    void aRecordFarOverTheMessageLimitFailsAloneWithoutARetry() throws Exception {
        try (SidecarProcess sidecar =
                SidecarProcess.start(
                        folder, "affine", List.of("max-message-size = \"1 MiB\""), "max-batch-size = 0")) {
            try (SidecarClient client =
                    SidecarClient.connect(
                            sidecar.endpoint(),
                            "affine",
                            SidecarOptions.defaults().withRequestTimeout(Duration.ofSeconds(30)))) {
                int rows = 1 << 19; // 8 MiB of features: far over 1 MiB and its 4 MiB margin
                var huge = client.infer(java.util.Map.of("features", Tensor.of(new float[rows * 4], rows, 4)));
                java.util.concurrent.ExecutionException e =
                        assertThrows(java.util.concurrent.ExecutionException.class, huge::get);
                SidecarException refusal = (SidecarException) e.getCause();
                assertEquals("RESOURCE_EXHAUSTED", refusal.code());
                assertTrue(refusal.getMessage().contains("more than the sidecar takes in"), refusal.getMessage());
                var small = client.infer(java.util.Map.of("features", Tensor.of(new float[8], 2, 4))).get();
                assertEquals(2, small.get("scores").shape()[0]);
                assertEquals(0, client.retries());
            }
        }
    }

    @Test
    void aSidecarKilledAndRestartedMidJobLosesAndRepeatsNoRecord() throws Exception {
        restartMidJob(true);
    }

    @Test
    void aSidecarStoppedAndRestartedMidJobLosesAndRepeatsNoRecord() throws Exception {
        restartMidJob(false);
    }

    /**
     * Runs a paced job and, once 600 of its 3000 records are answered, kills the sidecar
     * (SIGKILL: what it held is lost) or stops it (SIGTERM: it drains, answering what it took,
     * ends the streams and exits), then starts it again on the same socket.
     */
    private void restartMidJob(boolean kill) throws Exception {
        int records = 3000;
        int answeredBeforeRestart = 600;
        try (SidecarProcess sidecar = SidecarProcess.start(folder, "affine")) {
            StreamExecutionEnvironment env = Jobs.environment();
            // 1000 records a second: the job lasts three seconds whatever the machine.
            DataStream<Answer> answers =
                    Jobs.infer(
                            Jobs.records(env, fixture, records, 1000),
                            Jobs.inference(sidecar.endpoint()),
                            false,
                            64);
            List<Answer> collected = new ArrayList<>();
            long firstPid = -1;
            try (CloseableIterator<Answer> results = answers.executeAndCollect()) {
                while (results.hasNext()) {
                    collected.add(results.next());
                    if (collected.size() == answeredBeforeRestart) {
                        firstPid = sidecar.pid();
                        if (kill) {
                            sidecar.kill();
                        } else {
                            assertEquals(0, sidecar.stop(), "exit code after SIGTERM\n" + sidecar.logs());
                        }
                        sidecar.launch(); // the same socket, a new process
                    }
                }
            }
            assertTrue(firstPid > 0, "the job ended before the sidecar was restarted");
            assertTrue(sidecar.pid() != firstPid, "the sidecar was restarted");
            fixture.assertAnsweredOnce(records, collected);
            double answeredAfterRestart = sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"ok\"");
            assertTrue(
                    answeredAfterRestart >= 1,
                    "the restarted sidecar answered " + answeredAfterRestart + " requests\n" + sidecar.logs());
        }
    }

    @Test
    void aFullQueueIsRetriedUntilEveryRecordIsAnswered() throws Exception {
        int records = 2000;
        // Two queue places, no batching, a slow batch window: most requests meet a full queue.
        try (SidecarProcess sidecar =
                SidecarProcess.start(
                        folder,
                        "affine",
                        "max-queue-size = 2",
                        "max-batch-size = 0")) {
            List<Answer> answers = Jobs.inferAll(fixture, records, sidecar.endpoint(), false, 64);
            fixture.assertAnsweredOnce(records, answers);
            double refused =
                    sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"resource_exhausted\"");
            assertTrue(refused >= 1, "the sidecar refused " + refused + " requests for a full queue");
        }
    }

    @Test
    void aRecordOfTheWrongShapeFailsTheJobWithTheSidecarsMessage() throws Exception {
        try (SidecarProcess sidecar = SidecarProcess.start(folder, "affine")) {
            StreamExecutionEnvironment env = Jobs.environment();
            // Paced, so that the source is still reading when record 42 fails the job.
            DataStream<Rec> records =
                    Jobs.records(env, fixture, 3000, 1000)
                            .map(rec -> rec.id == 42 ? new Rec(rec.id, new float[] {1f, 2f, 3f}) : rec)
                            .returns(Rec.class);
            Exception failure =
                    assertThrows(
                            Exception.class,
                            () -> Jobs.collect(Jobs.infer(records, Jobs.inference(sidecar.endpoint()), false, 16)));
            String messages = Failures.messages(failure);
            assertTrue(messages.contains("INVALID_ARGUMENT: " + Failures.SIDECAR_SHAPE_MESSAGE), messages);
            assertTrue(messages.contains(sidecar.endpoint()), messages);
            assertTrue(Failures.innermost(failure).contains(Failures.SIDECAR_SHAPE_MESSAGE), Failures.innermost(failure));
        }
    }

    @Test
    void openFailsNamingAnEndpointNobodyListensOn() {
        String endpoint = "unix:" + folder.resolve("nobody.sock");
        StreamExecutionEnvironment env = Jobs.environment();
        GpuSidecarAsyncFunction<Rec, Prediction<Rec>> inference =
                Jobs.inference(endpoint).withConnectTimeout(Duration.ofSeconds(1));
        Exception failure =
                assertThrows(
                        Exception.class,
                        () -> Jobs.collect(Jobs.infer(Jobs.records(env, fixture, 10, 0), inference, false, 4)));
        String messages = Failures.messages(failure);
        assertTrue(messages.contains("cannot reach gpu-sidecar at " + endpoint), messages);
        assertTrue(messages.contains("UNAVAILABLE"), messages);
        assertTrue(messages.contains("there is no socket file " + folder.resolve("nobody.sock")), messages);
        // What the SQL client and the web UI print is the whole story, not netty's
        // FileNotFoundException.
        String innermost = Failures.innermost(failure);
        assertTrue(innermost.contains("SidecarException$Unavailable: cannot reach gpu-sidecar at " + endpoint), innermost);
        assertTrue(innermost.contains("there is no socket file"), innermost);
    }
}
