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

import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * A STRING column through ML_PREDICT: the payments pipeline (a OneHotEncoder on the channel, a
 * scaled amount, a LogisticRegression; tests/fixtures/make_exported_models.py) scores rows of
 * a Flink table, each as ONNX Runtime computed it in process.
 */
@Timeout(300)
class StringColumnTest {
    private static final int ROWS = 400;

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    @RegisterExtension static final SidecarExtension SIDECAR = new SidecarExtension("payments");

    @Test
    void aStringColumnIsScoredAsTheRuntimeScoresIt() throws Exception {
        JsonNode recorded;
        try (InputStream in = SidecarProcess.openFixture("payments.expected.json")) {
            recorded = new ObjectMapper().readTree(in);
        }
        JsonNode channels = recorded.get("inputs").get("channel").get("data");
        JsonNode amounts = recorded.get("inputs").get("amount").get("data");
        JsonNode labels = recorded.get("outputs").get("output_label").get("data");
        JsonNode probabilities = recorded.get("outputs").get("output_probability").get("data");
        int recordedRows = channels.size();

        StreamExecutionEnvironment env = Jobs.environment();
        StreamTableEnvironment tables = StreamTableEnvironment.create(env);
        List<Row> data = new ArrayList<>();
        for (int id = 0; id < ROWS; id++) {
            int row = id % recordedRows;
            data.add(Row.of((long) id, channels.get(row).asText(), (float) amounts.get(row).asDouble()));
        }
        DataStream<Row> stream =
                env.fromData(data, new RowTypeInfo(Types.LONG, Types.STRING, Types.FLOAT));
        tables.createTemporaryView(
                "payments",
                tables.fromDataStream(
                                stream,
                                Schema.newBuilder()
                                        .column("f0", DataTypes.BIGINT())
                                        .column("f1", DataTypes.STRING())
                                        .column("f2", DataTypes.FLOAT())
                                        .build())
                        .as("id", "channel", "amount"));
        tables.executeSql(
                "CREATE MODEL fraud INPUT (channel STRING, amount FLOAT)"
                        + " OUTPUT (output_label BIGINT, output_probability ARRAY<DOUBLE>)"
                        + " WITH ('provider' = 'gpu-sidecar', 'endpoint' = '" + SIDECAR.endpoint()
                        + "', 'model' = 'payments', 'timeout' = '60 s')");
        int answered = 0;
        boolean[] seen = new boolean[ROWS];
        try (CloseableIterator<Row> rows =
                tables.executeSql(
                                "SELECT id, output_label, output_probability FROM ML_PREDICT("
                                        + "TABLE payments, MODEL fraud, DESCRIPTOR(channel, amount))")
                        .collect()) {
            while (rows.hasNext()) {
                Row result = rows.next();
                int id = Math.toIntExact((Long) result.getField(0));
                int row = id % recordedRows;
                assertEquals(false, seen[id], "row " + id + " answered twice");
                seen[id] = true;
                assertEquals(labels.get(row).asLong(), (Long) result.getField(1), "label of row " + id);
                Double[] probability = (Double[]) result.getField(2);
                assertEquals(2, probability.length);
                for (int c = 0; c < 2; c++) {
                    assertEquals(probabilities.get(row * 2 + c).asDouble(), probability[c], 1e-6, "row " + id);
                }
                answered++;
            }
        }
        assertEquals(ROWS, answered);
    }
}
