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

import java.util.ArrayList;
import java.util.List;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.gpusidecar.AffineRecords.Answer;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

/** Flink SQL's ML_PREDICT on a {@code 'provider' = 'gpu-sidecar'} model, into a real sidecar. */
@Timeout(300)
class SqlPredictTest {
    private static final int ROWS = 3000;

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    @RegisterExtension static final SidecarExtension SIDECAR = new SidecarExtension("affine");

    private static final AffineRecords fixture = AffineRecords.shared();

    /** A table environment with the view {@code records (id BIGINT, features ARRAY<FLOAT>)}. */
    static StreamTableEnvironment tables(int rows, int badRow) {
        StreamExecutionEnvironment env = Jobs.environment();
        StreamTableEnvironment tables = StreamTableEnvironment.create(env);
        List<Row> data = new ArrayList<>();
        for (int id = 0; id < rows; id++) {
            float[] features = fixture.features[id % AffineRecords.ROWS];
            int length = id == badRow ? features.length - 1 : features.length;
            Float[] boxed = new Float[length];
            for (int i = 0; i < length; i++) {
                boxed[i] = features[i];
            }
            data.add(Row.of((long) id, boxed));
        }
        DataStream<Row> stream =
                env.fromData(data, new RowTypeInfo(Types.LONG, Types.OBJECT_ARRAY(Types.FLOAT)));
        tables.createTemporaryView(
                "records",
                tables.fromDataStream(
                        stream,
                        Schema.newBuilder()
                                .column("f0", DataTypes.BIGINT())
                                .column("f1", DataTypes.ARRAY(DataTypes.FLOAT()))
                                .build())
                        .as("id", "features"));
        return tables;
    }

    private static void createModel(StreamTableEnvironment tables, String endpoint, String outputs) {
        createModelWith(tables, outputs, "'endpoint' = '" + endpoint + "', 'model' = 'affine', 'timeout' = '60 s', 'max-in-flight' = '64'");
    }

    static void createModelWith(StreamTableEnvironment tables, String outputs, String options) {
        tables.executeSql(
                "CREATE MODEL affine INPUT (features ARRAY<FLOAT>) OUTPUT (" + outputs + ")"
                        + " WITH ('provider' = 'gpu-sidecar', " + options + ")");
    }

    static List<Row> collect(TableResult result) throws Exception {
        List<Row> rows = new ArrayList<>();
        try (CloseableIterator<Row> iterator = result.collect()) {
            iterator.forEachRemaining(rows::add);
        }
        return rows;
    }

    /** Rows of {@link #PREDICT} (id, scores, best) read back as answers. */
    static List<Answer> answers(List<Row> rows) {
        List<Answer> answers = new ArrayList<>();
        for (Row row : rows) {
            Float[] boxed = (Float[]) row.getField(1);
            float[] scores = new float[boxed.length];
            for (int i = 0; i < boxed.length; i++) {
                scores[i] = boxed[i];
            }
            answers.add(new Answer((Long) row.getField(0), scores, (Long) row.getField(2), -1));
        }
        return answers;
    }

    static final String PREDICT =
            "SELECT id, scores, best FROM ML_PREDICT(TABLE records, MODEL affine, DESCRIPTOR(features))";

    /** Every message of the failure that running {@code query} ends with. */
    private static String failureOf(StreamTableEnvironment tables, String query) {
        Exception failure = assertThrows(Exception.class, () -> collect(tables.executeSql(query)));
        return Failures.messages(failure);
    }

    @Test
    void mlPredictAnswersEveryRowWithTheModelsOutputs() throws Exception {
        StreamTableEnvironment tables = tables(ROWS, -1);
        createModel(tables, SIDECAR.endpoint(), "scores ARRAY<FLOAT>, best BIGINT");
        fixture.assertAnsweredOnce(ROWS, answers(collect(tables.executeSql(PREDICT))));
    }

    @Test
    void mlPredictConvertsColumnTypesToTheModelsDatatypes() throws Exception {
        StreamTableEnvironment tables = tables(10, -1);
        // DOUBLE scores from an FP32 output, an INT from the INT64 one.
        createModel(tables, SIDECAR.endpoint(), "scores ARRAY<DOUBLE>, best INT");
        List<Row> rows = collect(tables.executeSql(PREDICT));
        assertEquals(10, rows.size());
        for (Row row : rows) {
            long id = (Long) row.getField(0);
            Double[] boxed = (Double[]) row.getField(1);
            float[] scores = new float[boxed.length];
            for (int i = 0; i < boxed.length; i++) {
                scores[i] = boxed[i].floatValue();
            }
            fixture.assertMatches(id, scores, (Integer) row.getField(2));
        }
    }

    @Test
    void aRowOfTheWrongShapeFailsWithTheSidecarsMessageAndTheColumn() {
        StreamTableEnvironment tables = tables(50, 17);
        createModel(tables, SIDECAR.endpoint(), "scores ARRAY<FLOAT>, best BIGINT");
        String messages = failureOf(tables, PREDICT);
        assertTrue(messages.contains("INVALID_ARGUMENT"), messages);
        assertTrue(messages.contains("input columns features ARRAY<FLOAT>"), messages);
        assertTrue(messages.contains(Failures.SIDECAR_SHAPE_MESSAGE), messages);
    }

    @Test
    void aColumnTypeTheSidecarCannotCarryIsRefusedNamingIt() {
        StreamTableEnvironment tables = tables(1, -1);
        createModel(tables, SIDECAR.endpoint(), "scores ARRAY<FLOAT>, best BOOLEAN");
        String messages = failureOf(tables, PREDICT);
        assertTrue(messages.contains("output column 'best' has type BOOLEAN"), messages);
    }

    @Test
    void aColumnThatNamesNoTensorOfTheModelFailsOpenNamingIt() {
        StreamTableEnvironment tables = tables(1, -1);
        createModel(tables, SIDECAR.endpoint(), "scores ARRAY<FLOAT>, winner BIGINT");
        String messages =
                failureOf(tables, PREDICT.replace("best", "winner"));
        assertTrue(messages.contains("must be named after its tensors: model 'affine' has no output 'winner'"), messages);
    }

    @Test
    void badModelOptionsAreRefusedNamingThem() {
        String endpoint = "'endpoint' = '" + SIDECAR.endpoint() + "', ";
        String[][] cases = {
            {endpoint + "'model' = 'affine', 'max-in-flight' = '0'", "max in-flight requests must be at least 1, not 0"},
            {endpoint + "'model' = 'affine', 'timeout' = '0 s'", "request timeout must be positive, not 0 ms"},
            {endpoint + "'model' = 'affine', 'batch' = '8'", "Unsupported options found for 'gpu-sidecar'"},
            {endpoint + "'model' = 'affine', 'model-version' = 'latest'", "the model version must be a version number (1, 2, ...) or empty for the newest, not 'latest'"},
            {"'endpoint' = 'unix:relative.sock', 'model' = 'affine'", "invalid gpu-sidecar endpoint \"unix:relative.sock\": the socket path must be absolute"},
            {endpoint.trim(), "One or more required options are missing"},
        };
        for (String[] bad : cases) {
            StreamTableEnvironment tables = tables(1, -1);
            createModelWith(tables, "scores ARRAY<FLOAT>, best BIGINT", bad[0].replaceAll(",\\s*$", ""));
            String messages = failureOf(tables, PREDICT);
            assertTrue(messages.contains(bad[1]), bad[0] + ":\n" + messages);
            assertTrue(messages.contains("ValidationException"), bad[0] + ":\n" + messages);
        }
    }
}
