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

import java.io.IOException;
import java.io.InputStream;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The affine fixture's thousand rows (tests/fixtures/models/affine.records.json: features, and
 * the scores and best index ONNX Runtime computed for them in process). Record {@code id} of a
 * test carries row {@code id % 1000}.
 */
final class AffineRecords {
    static final int ROWS = 1000;
    static final int FEATURES = 4;
    static final int SCORES = 3;

    /** A record of the tests: an id and the features the model reads. */
    public static final class Rec implements Serializable {
        private static final long serialVersionUID = 1L;
        public long id;
        public float[] features;

        public Rec() {}

        public Rec(long id, float[] features) {
            this.id = id;
            this.features = features;
        }

        @Override
        public String toString() {
            return "Rec{" + id + "}";
        }
    }

    /** What the model answered for one record, as a test reads it back from a Flink job. */
    public static final class Answer implements Serializable {
        private static final long serialVersionUID = 1L;
        public long id;
        public float[] scores;
        public long best;
        public int subtask;

        public Answer() {}

        public Answer(long id, float[] scores, long best, int subtask) {
            this.id = id;
            this.scores = scores;
            this.best = best;
            this.subtask = subtask;
        }

        @Override
        public String toString() {
            return "Answer{" + id + " " + Arrays.toString(scores) + " " + best + "}";
        }
    }

    final float[][] features = new float[ROWS][FEATURES];
    final float[][] scores = new float[ROWS][SCORES];
    final long[] best = new long[ROWS];

    private static AffineRecords shared;

    /** The fixture, read once per JVM. */
    static synchronized AffineRecords shared() {
        if (shared == null) {
            shared = of("affine");
        }
        return shared;
    }

    /** The records of the fixture model {@code model} ({@code affine} or {@code affine_v2}). */
    static AffineRecords of(String model) {
        try {
            return load(model + ".records.json");
        } catch (IOException e) {
            throw new java.io.UncheckedIOException("reading " + model + ".records.json", e);
        }
    }

    private static AffineRecords load(String file) throws IOException {
        AffineRecords records = new AffineRecords();
        JsonNode root;
        try (InputStream in = SidecarProcess.openFixture(file)) {
            root = new ObjectMapper().readTree(in);
        }
        JsonNode features = root.path("inputs").path("features").path("data");
        JsonNode scores = root.path("outputs").path("scores").path("data");
        JsonNode best = root.path("outputs").path("best").path("data");
        assertEquals(ROWS * FEATURES, features.size(), "features in affine.records.json");
        assertEquals(ROWS * SCORES, scores.size(), "scores in affine.records.json");
        assertEquals(ROWS, best.size(), "best in affine.records.json");
        for (int row = 0; row < ROWS; row++) {
            for (int i = 0; i < FEATURES; i++) {
                records.features[row][i] = (float) features.get(row * FEATURES + i).asDouble();
            }
            for (int i = 0; i < SCORES; i++) {
                records.scores[row][i] = (float) scores.get(row * SCORES + i).asDouble();
            }
            records.best[row] = best.get(row).asLong();
        }
        return records;
    }

    Rec record(long id) {
        return new Rec(id, features[(int) (id % ROWS)].clone());
    }

    List<Rec> records(int count) {
        List<Rec> list = new ArrayList<>();
        for (int id = 0; id < count; id++) {
            list.add(record(id));
        }
        return list;
    }

    /** Asserts that ids 0..count-1 were each answered exactly once, with the fixture's outputs. */
    void assertAnsweredOnce(int count, List<Answer> answers) {
        Map<Long, Answer> byId = new HashMap<>();
        for (Answer answer : answers) {
            Answer earlier = byId.put(answer.id, answer);
            if (earlier != null) {
                throw new AssertionError("record " + answer.id + " was answered twice: " + earlier + ", " + answer);
            }
        }
        for (long id = 0; id < count; id++) {
            Answer answer = byId.get(id);
            if (answer == null) {
                throw new AssertionError("record " + id + " has no answer (" + answers.size() + " answers)");
            }
            assertMatches(id, answer.scores, answer.best);
        }
        assertEquals(count, answers.size(), "answers");
    }

    /** Whether one record's outputs equal what ONNX Runtime computed for its row. */
    boolean matches(long id, float[] gotScores, long gotBest) {
        int row = (int) (id % ROWS);
        if (gotScores.length != SCORES || best[row] != gotBest) {
            return false;
        }
        for (int i = 0; i < SCORES; i++) {
            float want = scores[row][i];
            if (Math.abs(gotScores[i] - want) > 1e-5f * Math.max(Math.abs(want), 1f)) {
                return false;
            }
        }
        return true;
    }

    /** Asserts one record's outputs equal what ONNX Runtime computed for its row. */
    void assertMatches(long id, float[] gotScores, long gotBest) {
        int row = (int) (id % ROWS);
        assertEquals(SCORES, gotScores.length, "scores of record " + id);
        for (int i = 0; i < SCORES; i++) {
            float want = scores[row][i];
            float tolerance = 1e-5f * Math.max(Math.abs(want), 1f);
            if (Math.abs(gotScores[i] - want) > tolerance) {
                throw new AssertionError(
                        "record " + id + ": scores " + Arrays.toString(gotScores) + " != "
                                + Arrays.toString(scores[row]));
            }
        }
        assertEquals(best[row], gotBest, "best of record " + id);
    }
}
