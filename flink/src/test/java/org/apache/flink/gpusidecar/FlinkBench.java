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

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * The Flink side of the bench: streams records through {@link GpuSidecarAsyncFunction} (one
 * subtask, so that its capacity is the concurrency) into a sidecar it spawns, at each
 * capacity, then runs {@code gpu-sidecar-bench --mode stream} at the same concurrency against
 * the same sidecar, and prints both. Run it with {@code bin/dev.sh flink-bench [ARGS]}.
 *
 * <pre>
 * --records N          records per Flink run (default 100000), after --warmup N (default 10000)
 * --capacity 1,16,64   the async operator's capacities, = gpu-sidecar-bench's --concurrency
 * --model PATH         an ONNX model (default: the fixture affine.onnx); its name is the stem
 * --max-batch-size N   the sidecar's max-batch-size (default 64)
 * --duration S         seconds of each gpu-sidecar-bench run (default 5)
 * --max-records-per-request 1,64  the client's records per request, one Flink run each
 * --parallelism 1,4    the job's parallelism, one Flink run each; the capacity is per subtask,
 *                      and gpu-sidecar-bench runs at capacity times parallelism
 *                      (default 64; 1: one record per request)
 * </pre>
 *
 * Each Flink run also reports the sidecar's CPU per 1,000 records, read from /proc before and
 * after it.
 *
 * Each record carries one row of zeros shaped after the model's metadata, as the Rust bench's
 * requests do. Latency is timed from the function's {@code asyncInvoke} to its answer.
 */
public final class FlinkBench {
    private FlinkBench() {}

    /** A bench record: an id, its input values, and when it was sent. */
    public static final class Item {
        public long id;
        public float[] values;
        public long sentNanos;

        public Item() {}

        Item(long id, float[] values) {
            this.id = id;
            this.values = values;
        }
    }

    /**
     * Each measured record's {sent, answered} nanos, by id. The local MiniCluster runs in this
     * JVM, so the codec writes here and the job ends in a discarding sink: collecting results
     * through the job's own sink would cost the two cores more than the inference path does.
     */
    static volatile long[][] timings;

    /** Sends the record's values as the model's only input; notes when it went and came back. */
    static final class TimingCodec implements TensorCodec<Item, Long> {
        private static final long serialVersionUID = 1L;
        private final String input;

        TimingCodec(String input) {
            this.input = input;
        }

        @Override
        public Map<String, Tensor> encode(Item item, ModelInfo model) {
            item.sentNanos = System.nanoTime();
            return Map.of(input, model.input(input).recordTensor(Tensor.of(item.values, item.values.length)));
        }

        @Override
        public Long decode(Item item, Map<String, Tensor> outputs) {
            long answered = System.nanoTime();
            long[][] all = timings;
            all[0][(int) item.id] = item.sentNanos;
            all[1][(int) item.id] = answered;
            return item.id;
        }
    }

    public static void main(String[] args) throws Exception {
        int records = 100_000;
        int warmup = 10_000;
        List<Integer> capacities = List.of(1, 16, 64);
        Path model = SidecarProcess.fixture("affine.onnx");
        int maxBatchSize = 64;
        int duration = 5;
        List<Integer> perRequest = List.of(64);
        List<Integer> parallelisms = List.of(1);
        for (int i = 0; i + 1 < args.length; i += 2) {
            String value = args[i + 1];
            switch (args[i]) {
                case "--records":
                    records = Integer.parseInt(value);
                    break;
                case "--warmup":
                    warmup = Integer.parseInt(value);
                    break;
                case "--capacity":
                    capacities = Arrays.stream(value.split(",")).map(Integer::valueOf).toList();
                    break;
                case "--model":
                    model = Paths.get(value);
                    break;
                case "--max-batch-size":
                    maxBatchSize = Integer.parseInt(value);
                    break;
                case "--duration":
                    duration = Integer.parseInt(value);
                    break;
                case "--parallelism":
                    parallelisms = Arrays.stream(value.split(",")).map(Integer::valueOf).toList();
                    break;
                case "--max-records-per-request":
                    perRequest = Arrays.stream(value.split(",")).map(Integer::valueOf).toList();
                    break;
                default:
                    throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (args.length % 2 != 0) {
            throw new IllegalArgumentException("arguments come in pairs: --name value");
        }
        String name = model.getFileName().toString().replaceFirst("\\.onnx$", "");
        Path folder = Files.createTempDirectory("flink-bench");
        Path benchBinary = SidecarProcess.existing("sidecar.binary", "cargo build --release").resolveSibling("gpu-sidecar-bench");
        System.out.printf(
                "model %s, max-batch-size %d, %d records per Flink run after %d of warm-up%n",
                name, maxBatchSize, records, warmup);
        System.out.println("| parallelism | capacity (per subtask) | records per request (most) | Flink rows/s | p50 | p90 | p99 | sidecar CPU ms per 1,000 records | gpu-sidecar-bench concurrency | rows/s | p50 | p90 | p99 | Flink / bench |");
        System.out.println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        try (SidecarProcess sidecar =
                SidecarProcess.start(folder, model, name, "max-batch-size = " + maxBatchSize)) {
            ModelInfo info;
            try (SidecarClient client = SidecarClient.connect(sidecar.endpoint(), name, SidecarOptions.defaults())) {
                info = client.model();
            }
            if (info.inputs().size() != 1) {
                throw new IllegalArgumentException("the bench feeds models of one input; " + info + " has more");
            }
            ModelInfo.TensorInfo input = info.inputs().values().iterator().next();
            int width = 1;
            long[] shape = input.shape();
            for (int i = 1; i < shape.length; i++) {
                width *= (int) Math.max(shape[i], 1);
            }
            for (int parallelism : parallelisms) {
                for (int capacity : capacities) {
                    int concurrency = capacity * parallelism;
                    double[] bench = runBench(benchBinary, sidecar.endpoint(), concurrency, duration);
                    for (int most : perRequest) {
                        long cpuBefore = cpuTicks(sidecar.pid());
                        double[] flink = runFlink(sidecar.endpoint(), name, input.name(), width, parallelism,
                                capacity, records, warmup, most);
                        double cpuMillis = (cpuTicks(sidecar.pid()) - cpuBefore) * 10.0; // 100 ticks a second
                        System.out.printf(
                                "| %d | %d | %d | %,.0f | %s | %s | %s | %.1f | %d | %,.0f | %s | %s | %s | %.0f%% |%n",
                                parallelism, capacity, most, flink[0], micros(flink[1]), micros(flink[2]),
                                micros(flink[3]), cpuMillis * 1000.0 / (records + warmup), concurrency,
                                bench[0], micros(bench[1]), micros(bench[2]), micros(bench[3]),
                                100 * flink[0] / bench[0]);
                    }
                }
            }
        }
        // The sidecar's config, socket and logs: kept only when a run failed above.
        SidecarProcess.deleteTree(folder);
    }

    /**
     * One Flink run: {rows/s, p50 µs, p90 µs, p99 µs} over the records sent after the first
     * {@code warmup} (by the time they were sent: each subtask reads a range of ids of its own).
     */
    private static double[] runFlink(
            String endpoint, String model, String input, int width, int parallelism, int capacity, int records,
            int warmup, int maxRecordsPerRequest)
            throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism);
        GeneratorFunction<Long, Item> generator = id -> new Item(id, new float[width]);
        DataStream<Item> items =
                env.fromSource(
                        new DataGeneratorSource<>(generator, records + warmup, RateLimiterStrategy.noOp(),
                                TypeInformation.of(Item.class)),
                        WatermarkStrategy.noWatermarks(),
                        "items");
        GpuSidecarAsyncFunction<Item, Long> function =
                new GpuSidecarAsyncFunction<>(endpoint, model, new TimingCodec(input))
                        .withMaxRecordsPerRequest(maxRecordsPerRequest);
        timings = new long[2][records + warmup];
        AsyncDataStream.unorderedWait(items, function, function.flinkTimeoutMillis(), TimeUnit.MILLISECONDS, capacity)
                .returns(Long.class)
                .sinkTo(new DiscardingSink<>());
        env.execute("flink-bench capacity " + capacity);
        long[] sentInOrder = timings[0].clone();
        Arrays.sort(sentInOrder);
        long measuredFrom = sentInOrder[warmup];
        long first = Long.MAX_VALUE;
        long last = Long.MIN_VALUE;
        long[] latencies = new long[records + warmup];
        int measured = 0;
        for (int i = 0; i < records + warmup; i++) {
            long sent = timings[0][i];
            long answered = timings[1][i];
            if (answered == 0) {
                throw new IllegalStateException("record " + i + " has no answer");
            }
            if (sent < measuredFrom) {
                continue;
            }
            first = Math.min(first, sent);
            last = Math.max(last, answered);
            latencies[measured++] = answered - sent;
        }
        latencies = Arrays.copyOf(latencies, measured);
        Arrays.sort(latencies);
        return new double[] {
            latencies.length / ((last - first) / 1e9),
            percentile(latencies, 50) / 1e3,
            percentile(latencies, 90) / 1e3,
            percentile(latencies, 99) / 1e3
        };
    }

    /** The CPU ticks (user and system, 100 a second) process {@code pid} has spent so far. */
    private static long cpuTicks(long pid) throws java.io.IOException {
        String stat = Files.readString(Paths.get("/proc/" + pid + "/stat"));
        String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        // Fields 14 and 15 of proc(5), utime and stime; the first after the name is field 3.
        return Long.parseLong(fields[11]) + Long.parseLong(fields[12]);
    }

    /** One gpu-sidecar-bench stream run at {@code concurrency}: {rows/s, p50, p90, p99 µs}. */
    private static double[] runBench(Path binary, String endpoint, int concurrency, int seconds) throws Exception {
        Process bench =
                new ProcessBuilder(
                                binary.toString(), "--target", endpoint, "--mode", "stream",
                                "--concurrency", Integer.toString(concurrency), "--rows", "1",
                                "--duration", seconds + "s", "--json")
                        .redirectError(ProcessBuilder.Redirect.INHERIT)
                        .start();
        JsonNode run = null;
        try (BufferedReader lines =
                new BufferedReader(new InputStreamReader(bench.getInputStream(), StandardCharsets.UTF_8))) {
            for (String line = lines.readLine(); line != null; line = lines.readLine()) {
                if (line.startsWith("{")) {
                    run = new ObjectMapper().readTree(line);
                }
            }
        }
        if (bench.waitFor() != 0 || run == null) {
            throw new IllegalStateException("gpu-sidecar-bench failed (exit " + bench.exitValue() + ")");
        }
        JsonNode latency = run.path("latency_us");
        return new double[] {
            run.path("rows_per_second").asDouble(),
            latency.path("p50").asDouble(),
            latency.path("p90").asDouble(),
            latency.path("p99").asDouble()
        };
    }

    private static long percentile(long[] sorted, double p) {
        int rank = (int) Math.ceil(p / 100 * sorted.length);
        return sorted[Math.max(1, Math.min(rank, sorted.length)) - 1];
    }

    private static String micros(double us) {
        return us >= 1000 ? String.format("%.2f ms", us / 1000) : String.format("%.0f µs", us);
    }
}
