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

import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.metrics.prometheus.InProcessPrometheusReporterFactory;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * The client's metrics, read through Flink's own Prometheus reporter while a job runs: records,
 * requests (fewer than records when they share requests), the latency histogram, failures. The
 * reporter is Flink's, read in process rather than over its HTTP server (which binds every
 * interface; tests stay on loopback).
 */
class MetricsTest {
    @RegisterExtension
    static final MiniClusterExtension MINI_CLUSTER =
            new MiniClusterExtension(
                    new MiniClusterResourceConfiguration.Builder()
                            .setConfiguration(reporter())
                            .setNumberTaskManagers(1)
                            .setNumberSlotsPerTaskManager(Jobs.PARALLELISM)
                            .build());

    private static final AffineRecords fixture = AffineRecords.shared();

    @TempDir Path folder;

    private static Configuration reporter() {
        Configuration config = new Configuration();
        config.setString(
                "metrics.reporter.prom.factory.class", InProcessPrometheusReporterFactory.class.getName());
        return config;
    }

    /** The reporter's samples whose name ends with {@code gpuSidecar_<metric>}, summed. */
    private static Map<String, Double> scrape() {
        String body = InProcessPrometheusReporterFactory.scrape();
        Map<String, Double> sums = new HashMap<>();
        Matcher sample = Pattern.compile("(?m)^flink_taskmanager_job_task_operator_gpuSidecar_(\\w+)(\\{[^}]*\\})? (\\S+)$").matcher(body);
        while (sample.find()) {
            String labels = sample.group(2) == null ? "" : sample.group(2);
            String key = sample.group(1) + (labels.contains("quantile=\"0.5\"") ? "_p50" : "");
            double value = Double.parseDouble(sample.group(3));
            if (!Double.isNaN(value)) {
                sums.merge(key, value, Double::sum);
            }
        }
        return sums;
    }

    @Test
    void recordsRequestsAndLatencyReachFlinksPrometheusReporter() throws Exception {
        try (SidecarProcess sidecar = SidecarProcess.start(folder, "affine")) {
            StreamExecutionEnvironment env = Jobs.environment();
            env.setParallelism(1);
            // Paced, so that the job still runs while the reporter is read.
            Jobs.infer(Jobs.records(env, fixture, 1_000_000, 2000), Jobs.inference(sidecar.endpoint()), false, 64)
                    .sinkTo(new DiscardingSink<>());
            JobClient job = env.executeAsync("metrics");
            try {
                long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
                Map<String, Double> metrics = Map.of();
                while (System.nanoTime() < deadline) {
                    metrics = scrape();
                    if (metrics.getOrDefault("records", 0.0) >= 500 && metrics.getOrDefault("latency_count", 0.0) >= 500) {
                        break;
                    }
                    Thread.sleep(100);
                }
                assertTrue(metrics.getOrDefault("records", 0.0) >= 500, "records: " + metrics);
                double requests = metrics.getOrDefault("requests", 0.0);
                assertTrue(requests > 0 && requests <= metrics.get("records"), "requests: " + metrics);
                assertTrue(metrics.containsKey("latency_p50"), "latency: " + metrics);
                assertTrue(metrics.containsKey("inFlight"), "inFlight: " + metrics);
                assertTrue(metrics.getOrDefault("failures", -1.0) == 0.0, "failures: " + metrics);
                assertTrue(metrics.containsKey("retries") && metrics.containsKey("reconnects"), "counts: " + metrics);
            } finally {
                job.cancel().get();
            }
        }
    }
}
