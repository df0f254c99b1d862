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

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.gpusidecar.AffineRecords.Answer;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

/** DataStream jobs through {@link GpuSidecarAsyncFunction} into a real sidecar. */
@Timeout(300)
class DataStreamInferenceTest {
    private static final int RECORDS = 3000;

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    @RegisterExtension static final SidecarExtension SIDECAR = new SidecarExtension("affine");

    private static final AffineRecords fixture = AffineRecords.shared();

    @Test
    void unorderedWaitAnswersEveryRecordWithTheModelsOutputs() throws Exception {
        List<Answer> answers = Jobs.inferAll(fixture, RECORDS, SIDECAR.endpoint(), false, 64);
        fixture.assertAnsweredOnce(RECORDS, answers);
    }

    @Test
    void orderedWaitAnswersEveryRecordInEachSubtasksOrder() throws Exception {
        List<Answer> answers = Jobs.inferAll(fixture, RECORDS, SIDECAR.endpoint(), true, 64);
        fixture.assertAnsweredOnce(RECORDS, answers);
        // Each source subtask reads one ascending range of ids into the async subtask beside
        // it; ordered waiting must hand them on in that order.
        Map<Integer, Long> lastId = new HashMap<>();
        for (Answer answer : answers) {
            Long previous = lastId.put(answer.subtask, answer.id);
            assertTrue(
                    previous == null || previous < answer.id,
                    "subtask " + answer.subtask + " emitted record " + answer.id + " after " + previous);
        }
        assertTrue(lastId.size() == Jobs.PARALLELISM, "both subtasks answered: " + lastId.keySet());
    }
}
