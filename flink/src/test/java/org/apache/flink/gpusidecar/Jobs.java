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

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.gpusidecar.AffineRecords.Answer;
import org.apache.flink.gpusidecar.AffineRecords.Rec;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.flink.util.CloseableIterator;

/** What the DataStream tests share: a MiniCluster of parallelism 2 and the job they run. */
final class Jobs {
    static final int PARALLELISM = 2;

    private Jobs() {}

    static MiniClusterExtension miniCluster() {
        return new MiniClusterExtension(
                new MiniClusterResourceConfiguration.Builder()
                        .setNumberTaskManagers(1)
                        .setNumberSlotsPerTaskManager(PARALLELISM)
                        .build());
    }

    static StreamExecutionEnvironment environment() {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(PARALLELISM);
        return env;
    }

    /** Records 0..count-1 carrying the fixture's rows, at most {@code perSecond} of them a second. */
    static DataStream<Rec> records(
            StreamExecutionEnvironment env, AffineRecords fixture, int count, double perSecond) {
        float[][] features = fixture.features;
        GeneratorFunction<Long, Rec> generator =
                id -> new Rec(id, features[(int) (id % AffineRecords.ROWS)].clone());
        RateLimiterStrategy<?> rate =
                perSecond > 0 ? RateLimiterStrategy.perSecond(perSecond) : RateLimiterStrategy.noOp();
        return env.fromSource(
                new DataGeneratorSource<>(generator, count, rate, TypeInformation.of(Rec.class)),
                WatermarkStrategy.noWatermarks(),
                "records");
    }

    /** The async function on the affine model, reading each record's features. */
    static GpuSidecarAsyncFunction<Rec, Prediction<Rec>> inference(String endpoint) {
        return new GpuSidecarAsyncFunction<>(
                        endpoint,
                        "affine",
                        ArrayTensorCodec.<Rec>create().floats("features", rec -> rec.features))
                .withRequestTimeout(Duration.ofSeconds(60));
    }

    /** Records through the async function, each prediction read back as an {@link Answer}. */
    static DataStream<Answer> infer(
            DataStream<Rec> records,
            GpuSidecarAsyncFunction<Rec, Prediction<Rec>> function,
            boolean ordered,
            int capacity) {
        long timeout = function.flinkTimeoutMillis();
        DataStream<Prediction<Rec>> predictions =
                (ordered
                                ? AsyncDataStream.orderedWait(
                                        records, function, timeout, TimeUnit.MILLISECONDS, capacity)
                                : AsyncDataStream.unorderedWait(
                                        records, function, timeout, TimeUnit.MILLISECONDS, capacity))
                        .returns(new TypeHint<Prediction<Rec>>() {});
        return predictions.map(new ToAnswer()).returns(Answer.class);
    }

    /** Reads the scores and best index out of a prediction, noting which subtask ran it. */
    static final class ToAnswer extends RichMapFunction<Prediction<Rec>, Answer> {
        private static final long serialVersionUID = 1L;

        @Override
        public Answer map(Prediction<Rec> prediction) {
            return new Answer(
                    prediction.record().id,
                    prediction.floats("scores"),
                    prediction.longs("best")[0],
                    getRuntimeContext().getTaskInfo().getIndexOfThisSubtask());
        }
    }

    /** Records 0..count-1 through the async function as fast as they go; every answer. */
    static List<Answer> inferAll(
            AffineRecords fixture, int count, String endpoint, boolean ordered, int capacity)
            throws Exception {
        StreamExecutionEnvironment env = environment();
        return collect(infer(records(env, fixture, count, 0), inference(endpoint), ordered, capacity));
    }

    /** Runs the job and returns everything it emitted, in the order it arrived. */
    static <T> List<T> collect(DataStream<T> stream) throws Exception {
        List<T> all = new ArrayList<>();
        try (CloseableIterator<T> results = stream.executeAndCollect()) {
            results.forEachRemaining(all::add);
        }
        return all;
    }
}
