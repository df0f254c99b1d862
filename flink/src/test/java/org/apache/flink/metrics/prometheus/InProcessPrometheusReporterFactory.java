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


package org.apache.flink.metrics.prometheus;

import io.prometheus.client.exporter.common.TextFormat;
import java.io.IOException;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CopyOnWriteArrayList;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;

/**
 * Flink's own Prometheus reporter (its translation of metric groups into Prometheus names and
 * labels, {@link AbstractPrometheusReporter}) without its HTTP server, which binds every
 * interface: tests read what it would serve from here. In Flink's package for the registry
 * the reporter keeps; test code only.
 */
public final class InProcessPrometheusReporterFactory implements MetricReporterFactory {
    /** Every reporter made: the cluster's components (job manager, task manager) each get one. */
    private static final List<AbstractPrometheusReporter> REPORTERS = new CopyOnWriteArrayList<>();

    @Override
    public MetricReporter createMetricReporter(Properties properties) {
        AbstractPrometheusReporter reporter = new AbstractPrometheusReporter() {};
        REPORTERS.add(reporter);
        return reporter;
    }

    /** What the reporters would serve on /metrics now, in Prometheus' text format. */
    public static String scrape() {
        StringWriter text = new StringWriter();
        try {
            for (AbstractPrometheusReporter reporter : REPORTERS) {
                TextFormat.write004(text, reporter.registry.metricFamilySamples());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return text.toString();
    }
}
