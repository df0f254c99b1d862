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
 * An embedding job in SQL: a STRING column of sentences into the text model (a small BERT and
 * its WordPiece tokenizer; tests/fixtures/make_text_model.py), an ARRAY&lt;FLOAT&gt; embedding
 * out, each equal to what the Hugging Face tokenizer and ONNX Runtime computed in process.
 */
@Timeout(300)
class EmbeddingTest {
    private static final int ROWS = 200;

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    @RegisterExtension
    static final SidecarExtension SIDECAR =
            new SidecarExtension(
                    "minibert",
                    "[sidecar.model.text]",
                    "tokenizer = \"" + SidecarProcess.fixture("minibert.tokenizer.json") + "\"");

    @Test
    void sentencesBecomeTheirEmbeddings() throws Exception {
        JsonNode sentences;
        try (InputStream in = SidecarProcess.openFixture("minibert.expected.json")) {
            sentences = new ObjectMapper().readTree(in).get("sentences");
        }
        int recorded = sentences.size();

        StreamExecutionEnvironment env = Jobs.environment();
        StreamTableEnvironment tables = StreamTableEnvironment.create(env);
        List<Row> data = new ArrayList<>();
        for (int id = 0; id < ROWS; id++) {
            data.add(Row.of((long) id, sentences.get(id % recorded).get("text").asText()));
        }
        DataStream<Row> stream = env.fromData(data, new RowTypeInfo(Types.LONG, Types.STRING));
        tables.createTemporaryView(
                "docs",
                tables.fromDataStream(
                                stream,
                                Schema.newBuilder()
                                        .column("f0", DataTypes.BIGINT())
                                        .column("f1", DataTypes.STRING())
                                        .build())
                        .as("id", "text"));
        tables.executeSql(
                "CREATE MODEL embed INPUT (text STRING) OUTPUT (embedding ARRAY<FLOAT>)"
                        + " WITH ('provider' = 'gpu-sidecar', 'endpoint' = '" + SIDECAR.endpoint()
                        + "', 'model' = 'minibert', 'timeout' = '60 s')");
        int answered = 0;
        boolean[] seen = new boolean[ROWS];
        try (CloseableIterator<Row> rows =
                tables.executeSql(
                                "SELECT id, embedding FROM ML_PREDICT("
                                        + "TABLE docs, MODEL embed, DESCRIPTOR(text))")
                        .collect()) {
            while (rows.hasNext()) {
                Row result = rows.next();
                int id = Math.toIntExact((Long) result.getField(0));
                assertEquals(false, seen[id], "row " + id + " answered twice");
                seen[id] = true;
                JsonNode expected = sentences.get(id % recorded).get("embedding");
                Float[] embedding = (Float[]) result.getField(1);
                assertEquals(expected.size(), embedding.length, "row " + id);
                for (int i = 0; i < embedding.length; i++) {
                    double want = expected.get(i).asDouble();
                    assertEquals(want, embedding[i], 1e-5 + 1e-4 * Math.abs(want), "row " + id + " element " + i);
                }
                answered++;
            }
        }
        assertEquals(ROWS, answered);
    }
}
