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
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.gpusidecar.AffineRecords.Answer;
import org.apache.flink.gpusidecar.AffineRecords.Rec;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.flink.util.CloseableIterator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model repository under a running job: a new version published while a job runs takes over
 * with every record answered exactly once, by the old version or the new; a pinned version
 * (DataStream {@code withModelVersion}, SQL {@code 'model-version'}) is the one that answers.
 */
@Timeout(300)
class ModelSwapTest {
    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    private static final AffineRecords v1 = AffineRecords.shared();
    private static final AffineRecords v2 = AffineRecords.of("affine_v2");

    @TempDir Path folder;

    /** Which version answered a record: 1, 2, or 0 (neither). */
    private static int versionOf(Answer answer) {
        if (v1.matches(answer.id, answer.scores, answer.best)) {
            return 1;
        }
        return v2.matches(answer.id, answer.scores, answer.best) ? 2 : 0;
    }

    @Test
    void aNewVersionPublishedMidJobTakesOverWithEveryRecordAnsweredOnce() throws Exception {
        int records = 3000;
        int answeredBeforeSwap = 600;
        SidecarProcess.publish(folder, "affine", 1, "affine");
        try (SidecarProcess sidecar =
                SidecarProcess.startRepository(
                        folder, "repository-control = \"poll\"", "repository-poll-interval = \"100 ms\"")) {
            StreamExecutionEnvironment env = Jobs.environment();
            // 1000 records a second: the job lasts three seconds whatever the machine.
            DataStream<Answer> answers =
                    Jobs.infer(
                            Jobs.records(env, v1, records, 1000),
                            Jobs.inference(sidecar.endpoint()),
                            true,
                            64);
            List<Answer> collected = new ArrayList<>();
            try (CloseableIterator<Answer> results = answers.executeAndCollect()) {
                while (results.hasNext()) {
                    collected.add(results.next());
                    if (collected.size() == answeredBeforeSwap) {
                        SidecarProcess.publish(folder, "affine", 2, "affine_v2");
                    }
                }
            }
            Map<Long, Integer> byId = new HashMap<>();
            int[] byVersion = new int[3];
            for (Answer answer : collected) {
                Integer earlier = byId.put(answer.id, versionOf(answer));
                assertTrue(earlier == null, "record " + answer.id + " was answered twice");
                int version = versionOf(answer);
                assertTrue(version != 0, "record " + answer.id + ": neither version's outputs: " + answer);
                byVersion[version]++;
            }
            assertEquals(records, byId.size(), "records answered");
            assertTrue(byVersion[1] >= answeredBeforeSwap, "answers by version 1: " + byVersion[1]);
            assertTrue(byVersion[2] > 0, "version 2 never answered\n" + sidecar.logs());
            // Ordered per subtask: once a subtask's record was answered by version 2, none of
            // its later records was answered by version 1.
            Map<Integer, Integer> newest = new HashMap<>();
            for (Answer answer : collected) {
                int version = versionOf(answer);
                int seen = newest.getOrDefault(answer.subtask, 1);
                assertTrue(version >= seen, "subtask " + answer.subtask + ": version 1 after 2, at " + answer);
                newest.put(answer.subtask, version);
            }
            assertEquals(0, sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"internal\""));
        }
    }

    @Test
    void aPinnedVersionIsTheOneThatAnswers() throws Exception {
        SidecarProcess.publish(folder, "affine", 1, "affine");
        SidecarProcess.publish(folder, "affine", 2, "affine_v2");
        java.nio.file.Files.writeString(
                folder.resolve("models").resolve("affine").resolve("model.toml"), "version-policy = \"all\"\n");
        try (SidecarProcess sidecar = SidecarProcess.startRepository(folder)) {
            int records = 200;
            // DataStream: pinned to 1, and unpinned (the newest, 2).
            List<Answer> pinned =
                    Jobs.collect(
                            Jobs.infer(
                                    Jobs.records(Jobs.environment(), v1, records, 0),
                                    Jobs.inference(sidecar.endpoint()).withModelVersion("1"),
                                    false,
                                    64));
            v1.assertAnsweredOnce(records, pinned);
            List<Answer> newest =
                    Jobs.collect(
                            Jobs.infer(
                                    Jobs.records(Jobs.environment(), v1, records, 0),
                                    Jobs.inference(sidecar.endpoint()),
                                    false,
                                    64));
            v2.assertAnsweredOnce(records, newest);
            // SQL: 'model-version' = '1'.
            StreamTableEnvironment tables = SqlPredictTest.tables(records, -1);
            SqlPredictTest.createModelWith(
                    tables,
                    "scores ARRAY<FLOAT>, best BIGINT",
                    "'endpoint' = '" + sidecar.endpoint() + "', 'model' = 'affine', 'model-version' = '1'");
            v1.assertAnsweredOnce(
                    records, SqlPredictTest.answers(SqlPredictTest.collect(tables.executeSql(SqlPredictTest.PREDICT))));
        }
    }

    /** An answer of either signature: {@code probabilities} only from the version that has it. */
    public static final class Signed implements java.io.Serializable {
        private static final long serialVersionUID = 1L;
        public long id;
        public float[] scores;
        public long best;
        public float[] probabilities;

        public Signed() {}
    }

    @Test
    void aVersionWithAnotherOutputTakesOverWithEveryRecordAnswered() throws Exception {
        int records = 2000;
        int answeredBeforeSwap = 400;
        SidecarProcess.publish(folder, "affine", 1, "affine");
        try (SidecarProcess sidecar =
                SidecarProcess.startRepository(
                        folder, "repository-control = \"poll\"", "repository-poll-interval = \"100 ms\"")) {
            StreamExecutionEnvironment env = Jobs.environment();
            GpuSidecarAsyncFunction<Rec, Prediction<Rec>> function = Jobs.inference(sidecar.endpoint());
            DataStream<Signed> answers =
                    org.apache.flink.streaming.api.datastream.AsyncDataStream.unorderedWait(
                                    Jobs.records(env, v1, records, 1000), function, function.flinkTimeoutMillis(),
                                    java.util.concurrent.TimeUnit.MILLISECONDS, 64)
                            .returns(new org.apache.flink.api.common.typeinfo.TypeHint<Prediction<Rec>>() {})
                            .map(prediction -> {
                                Signed signed = new Signed();
                                signed.id = prediction.record().id;
                                signed.scores = prediction.floats("scores");
                                signed.best = prediction.longs("best")[0];
                                signed.probabilities = prediction.outputs().containsKey("probabilities")
                                        ? prediction.floats("probabilities") : null;
                                return signed;
                            })
                            .returns(Signed.class);
            List<Signed> collected = new ArrayList<>();
            try (CloseableIterator<Signed> results = answers.executeAndCollect()) {
                while (results.hasNext()) {
                    collected.add(results.next());
                    if (collected.size() == answeredBeforeSwap) {
                        // Version 2: affine_v2's weights, and an output more.
                        SidecarProcess.publish(folder, "affine", 2, "affine_v3");
                    }
                }
            }
            java.util.Set<Long> ids = new java.util.HashSet<>();
            int byNew = 0;
            for (Signed answer : collected) {
                assertTrue(ids.add(answer.id), "record " + answer.id + " was answered twice");
                if (answer.probabilities == null) {
                    assertTrue(v1.matches(answer.id, answer.scores, answer.best), "record " + answer.id + ": not version 1's answer");
                    continue;
                }
                byNew++;
                assertTrue(v2.matches(answer.id, answer.scores, answer.best), "record " + answer.id + ": not version 2's answer");
                double sum = 0;
                for (float score : answer.scores) {
                    sum += Math.exp(score);
                }
                for (int k = 0; k < answer.scores.length; k++) {
                    assertEquals(Math.exp(answer.scores[k]) / sum, answer.probabilities[k], 1e-5, "record " + answer.id);
                }
            }
            assertEquals(records, ids.size(), "records answered");
            assertTrue(byNew > 0, "the version with the new output never answered\n" + sidecar.logs());
            assertEquals(0, sidecar.metric("gpu_sidecar_inference_requests_total", "outcome=\"invalid\""));
        }
    }
}
