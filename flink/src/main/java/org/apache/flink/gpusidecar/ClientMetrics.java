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

import java.util.function.LongSupplier;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.Histogram;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.runtime.metrics.DescriptiveStatisticsHistogram;

/**
 * What a subtask's client does, in the operator's metric group {@code gpuSidecar}, for the web
 * UI and every metric reporter: {@code records} (sent to the sidecar), {@code requests} (they
 * went in, fewer when records share requests), {@code failures} (records failed), {@code
 * latency} (a record's milliseconds from the operator to its answer, a histogram), {@code
 * inFlight} (requests unanswered), {@code waiting} (records waiting in the client for a free
 * request), {@code retries} and {@code reconnects}.
 */
public final class ClientMetrics {
    /** How many latencies the histogram keeps for its statistics. */
    private static final int LATENCY_WINDOW = 1024;

    private final Counter records;
    private final Counter failures;
    private final Histogram latency;

    private ClientMetrics(MetricGroup group, SidecarClient client) {
        records = group.counter("records");
        failures = group.counter("failures");
        latency = group.histogram("latency", new DescriptiveStatisticsHistogram(LATENCY_WINDOW));
        group.counter("requests", new Count(client::requests));
        group.counter("retries", new Count(client::retries));
        group.counter("reconnects", new Count(client::reconnects));
        group.gauge("inFlight", (Gauge<Integer>) client::inFlight);
        group.gauge("waiting", (Gauge<Integer>) client::waiting);
    }

    /** Registers the metrics of {@code client} under {@code operator}'s group {@code gpuSidecar}. */
    public static ClientMetrics register(MetricGroup operator, SidecarClient client) {
        return new ClientMetrics(operator.addGroup("gpuSidecar"), client);
    }

    /** A record is on its way: returns when it left, for {@link #answered}. */
    public long sent() {
        records.inc();
        return System.nanoTime();
    }

    /** The record sent at {@code sentNanos} was answered, or failed. */
    public void answered(long sentNanos, boolean failed) {
        latency.update((System.nanoTime() - sentNanos) / 1_000_000);
        if (failed) {
            failures.inc();
        }
    }

    /** A count kept by the client, read when reported. */
    private static final class Count implements Counter {
        private final LongSupplier count;

        Count(LongSupplier count) {
            this.count = count;
        }

        @Override
        public void inc() {}

        @Override
        public void inc(long n) {}

        @Override
        public void dec() {}

        @Override
        public void dec(long n) {}

        @Override
        public long getCount() {
            return count.getAsLong();
        }
    }
}
