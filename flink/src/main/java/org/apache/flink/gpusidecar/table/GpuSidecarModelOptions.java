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

package org.apache.flink.gpusidecar.table;

import java.time.Duration;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;

/** The {@code WITH} options of a {@code 'provider' = 'gpu-sidecar'} model. */
public final class GpuSidecarModelOptions {
    private GpuSidecarModelOptions() {}

    public static final ConfigOption<String> ENDPOINT =
            ConfigOptions.key("endpoint")
                    .stringType()
                    .noDefaultValue()
                    .withDescription(
                            "Where the TaskManager's gpu-sidecar listens: unix:/path.sock or host:port.");

    public static final ConfigOption<String> MODEL =
            ConfigOptions.key("model")
                    .stringType()
                    .noDefaultValue()
                    .withDescription(
                            "The model's name in the sidecar (sidecar.model.name, a [[sidecar.models]] name, or a repository folder).");

    public static final ConfigOption<String> MODEL_VERSION =
            ConfigOptions.key("model-version")
                    .stringType()
                    .noDefaultValue()
                    .withDescription(
                            "Pins one version of the model (1, 2, ...); unset: the newest the sidecar serves, so that a new version is picked up while the job runs.");

    public static final ConfigOption<Duration> TIMEOUT =
            ConfigOptions.key("timeout")
                    .durationType()
                    .defaultValue(Duration.ofSeconds(30))
                    .withDescription("How long one row's request may take, retries included.");

    public static final ConfigOption<Integer> MAX_IN_FLIGHT =
            ConfigOptions.key("max-in-flight")
                    .intType()
                    .defaultValue(256)
                    .withDescription("How many requests one subtask may have unanswered.");

    public static final ConfigOption<Integer> MAX_RECORDS_PER_REQUEST =
            ConfigOptions.key("max-records-per-request")
                    .intType()
                    .defaultValue(64)
                    .withDescription(
                            "The most rows one request carries: rows that arrive while a request of the subtask is in flight go together in the next one (1: one row per request). Applies to models that batch.");

    public static final ConfigOption<Duration> CONNECT_TIMEOUT =
            ConfigOptions.key("connect-timeout")
                    .durationType()
                    .defaultValue(Duration.ofSeconds(30))
                    .withDescription("How long opening the function waits for the sidecar to answer.");

    public static final ConfigOption<String> TLS_CA =
            ConfigOptions.key("tls-ca")
                    .stringType()
                    .noDefaultValue()
                    .withDescription(
                            "TLS to a host:port endpoint ([sidecar.rpc.tls]): the PEM file of the CA to trust, on every TaskManager. Setting it, or tls-cert and tls-key, turns TLS on; unset with TLS on: the JVM's default trust store.");

    public static final ConfigOption<String> TLS_CERT =
            ConfigOptions.key("tls-cert")
                    .stringType()
                    .noDefaultValue()
                    .withDescription(
                            "The client's certificate (PEM) for a sidecar that requires client certificates (sidecar.rpc.tls.client-ca-file); with tls-key.");

    public static final ConfigOption<String> TLS_KEY =
            ConfigOptions.key("tls-key")
                    .stringType()
                    .noDefaultValue()
                    .withDescription("The private key (PKCS#8 PEM) of tls-cert.");
}
