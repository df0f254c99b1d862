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

import java.nio.file.Path;
import java.util.List;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * Records that arrive while a request of their subtask is in flight share the next request,
 * against the real binary: every record gets exactly its own rows back, the sidecar sees
 * several records per request, never more than its max-batch-size; with one record per
 * request it sees one.
 */
class CoalescingTest {
    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    private static final AffineRecords fixture = AffineRecords.shared();

    @TempDir Path folder;

    /**
     * Infers {@code count} records at parallelism 1 with 64 in flight and at most {@code most}
     * records per request, against a sidecar of max-batch-size 32; checks every answer and
     * returns the rows per request the sidecar counted.
     */
    private double rowsPerRequest(int most, int count) throws Exception {
        try (SidecarProcess sidecar = SidecarProcess.start(folder, "affine", "max-batch-size = 32")) {
            StreamExecutionEnvironment env = Jobs.environment();
            env.setParallelism(1);
            List<AffineRecords.Answer> answers =
                    Jobs.collect(
                            Jobs.infer(
                                    Jobs.records(env, fixture, count, 0),
                                    Jobs.inference(sidecar.endpoint()).withMaxRecordsPerRequest(most),
                                    false,
                                    64));
            fixture.assertAnsweredOnce(count, answers);
            double requests = sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"ok\"");
            double rows = sidecar.metric("gpu_sidecar_inference_rows_total", "");
            assertEquals(0, sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"invalid\""));
            return rows / requests;
        }
    }

    @Test
    void recordsWaitingForAnAnswerShareTheNextRequestEachGettingItsOwnRows() throws Exception {
        double rows = rowsPerRequest(64, 3000);
        assertTrue(rows > 4, "rows per request " + rows);
    }

    @Test
    void oneRecordPerRequestWhenCoalescingIsOff() throws Exception {
        assertEquals(1.0, rowsPerRequest(1, 500));
    }
}
