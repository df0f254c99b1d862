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
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
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

/** The README's "Calling it from Flink" examples, run as written there. */
@Timeout(300)
class ReadmeExamplesTest {
    private static final int EVENTS = 200;
    private static final String README_ENDPOINT = "unix:/tmp/gpu-sidecar.sock";

    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    @RegisterExtension static final SidecarExtension SIDECAR = new SidecarExtension("affine");

    private static final AffineRecords fixture = AffineRecords.shared();

    /** The README's record type. */
    public static class Event {
        public long id;
        public float[] features;
    }

    private static List<Event> events() {
        List<Event> events = new ArrayList<>();
        for (int id = 0; id < EVENTS; id++) {
            Event event = new Event();
            event.id = id;
            event.features = fixture.features[id].clone();
            events.add(event);
        }
        return events;
    }

    @Test
    void theDataStreamExampleRuns() throws Exception {
        StreamExecutionEnvironment env = Jobs.environment();
        DataStream<Event> events = env.fromData(events());
        String endpoint = SIDECAR.endpoint(); // the README's "unix:/tmp/gpu-sidecar.sock"
        // From here as in the README.
        GpuSidecarAsyncFunction<Event, Prediction<Event>> infer =
                new GpuSidecarAsyncFunction<>(
                                endpoint,
                                "affine",
                                ArrayTensorCodec.<Event>create().floats("features", event -> event.features))
                        .withRequestTimeout(Duration.ofSeconds(10))
                        .withMaxInFlight(256);
        DataStream<Prediction<Event>> predictions =
                AsyncDataStream.unorderedWait(events, infer, infer.flinkTimeoutMillis(), TimeUnit.MILLISECONDS, 64)
                        .returns(new TypeHint<Prediction<Event>>() {});
        DataStream<String> classes =
                predictions
                        .map(p -> p.record().id + " is class " + p.longs("best")[0] + " " + Arrays.toString(p.floats("scores")))
                        .returns(String.class);
        // Up to here.
        List<String> lines = Jobs.collect(classes);
        assertEquals(EVENTS, lines.size());
        boolean[] seen = new boolean[EVENTS];
        for (String line : lines) {
            String[] words = line.split(" ", 5);
            int id = Integer.parseInt(words[0]);
            assertTrue(!seen[id], "event " + id + " answered twice");
            seen[id] = true;
            assertEquals(id + " is class " + fixture.best[id], String.join(" ", words[0], words[1], words[2], words[3]));
        }
    }

    @Test
    void theSqlExampleRuns() throws Exception {
        String readme = Files.readString(Paths.get(System.getProperty("readme")));
        int section = readme.indexOf("### SQL: `ML_PREDICT`");
        assertTrue(section >= 0, "the README's SQL section");
        int start = readme.indexOf("```sql\n", section) + "```sql\n".length();
        String block = readme.substring(start, readme.indexOf("```", start));
        assertTrue(block.contains(README_ENDPOINT), block);
        String[] statements = block.replace(README_ENDPOINT, SIDECAR.endpoint()).split(";\\s*\n");
        assertEquals(2, statements.length, block);

        StreamExecutionEnvironment env = Jobs.environment();
        StreamTableEnvironment tables = StreamTableEnvironment.create(env);
        List<Row> rows = new ArrayList<>();
        for (int id = 0; id < EVENTS; id++) {
            Float[] features = new Float[AffineRecords.FEATURES];
            for (int i = 0; i < features.length; i++) {
                features[i] = fixture.features[id][i];
            }
            rows.add(Row.of((long) id, features));
        }
        tables.createTemporaryView(
                "events",
                tables.fromDataStream(
                                env.fromData(rows, new RowTypeInfo(Types.LONG, Types.OBJECT_ARRAY(Types.FLOAT))),
                                Schema.newBuilder()
                                        .column("f0", DataTypes.BIGINT())
                                        .column("f1", DataTypes.ARRAY(DataTypes.FLOAT()))
                                        .build())
                        .as("id", "features"));
        tables.executeSql(statements[0]);
        List<AffineRecords.Answer> answers = new ArrayList<>();
        try (CloseableIterator<Row> results = tables.executeSql(statements[1]).collect()) {
            while (results.hasNext()) {
                Row row = results.next();
                Float[] boxed = (Float[]) row.getField("scores");
                float[] scores = new float[boxed.length];
                for (int i = 0; i < scores.length; i++) {
                    scores[i] = boxed[i];
                }
                answers.add(new AffineRecords.Answer((Long) row.getField("id"), scores, (Long) row.getField("best"), -1));
            }
        }
        fixture.assertAnsweredOnce(EVENTS, answers);
    }
}
