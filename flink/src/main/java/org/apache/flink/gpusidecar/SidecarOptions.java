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

import java.io.Serializable;
import java.time.Duration;

/** How the client waits, retries and limits itself; immutable, serializable. */
public final class SidecarOptions implements Serializable {
    private static final long serialVersionUID = 1L;

    private final Duration requestTimeout;
    private final Duration connectTimeout;
    private final int maxInFlight;
    private final Duration initialBackoff;
    private final Duration maxBackoff;
    private final String modelVersion;
    private final int maxRecordsPerRequest;
    private final TlsFiles tls;

    /**
     * TLS to a {@code host:port} endpoint: the CA file to trust (unset: the JVM's default
     * trust store), and the client's certificate and key (for a sidecar that requires client
     * certificates). PEM files, read on the TaskManager when the client connects.
     */
    public static final class TlsFiles implements Serializable {
        private static final long serialVersionUID = 1L;
        private final String caFile;
        private final String certFile;
        private final String keyFile;

        private TlsFiles(String caFile, String certFile, String keyFile) {
            this.caFile = caFile == null ? "" : caFile;
            this.certFile = certFile == null ? "" : certFile;
            this.keyFile = keyFile == null ? "" : keyFile;
            if (this.certFile.isEmpty() != this.keyFile.isEmpty()) {
                throw new IllegalArgumentException(
                        "a client certificate needs its key, and a key its certificate: set both tls-cert and tls-key, or neither");
            }
        }

        /** The CA file to trust; empty: the JVM's default trust store. */
        public String caFile() {
            return caFile;
        }

        /** The client's certificate file; empty: none presented. */
        public String certFile() {
            return certFile;
        }

        /** The client's private key file (PKCS#8 PEM); empty with no certificate. */
        public String keyFile() {
            return keyFile;
        }
    }

    private SidecarOptions(
            Duration requestTimeout,
            Duration connectTimeout,
            int maxInFlight,
            Duration initialBackoff,
            Duration maxBackoff,
            String modelVersion,
            int maxRecordsPerRequest,
            TlsFiles tls) {
        this.tls = tls;
        this.requestTimeout = positive("request timeout", requestTimeout);
        this.connectTimeout = positive("connect timeout", connectTimeout);
        if (maxInFlight < 1) {
            throw new IllegalArgumentException(
                    "max in-flight requests must be at least 1, not " + maxInFlight);
        }
        this.maxInFlight = maxInFlight;
        this.initialBackoff = positive("initial backoff", initialBackoff);
        this.maxBackoff = positive("max backoff", maxBackoff);
        if (modelVersion == null || !modelVersion.matches("|[1-9][0-9]*")) {
            throw new IllegalArgumentException(
                    "the model version must be a version number (1, 2, ...) or empty for the newest, not '"
                            + modelVersion + "'");
        }
        this.modelVersion = modelVersion;
        if (maxRecordsPerRequest < 1) {
            throw new IllegalArgumentException(
                    "max records per request must be at least 1 (1: one record per request), not "
                            + maxRecordsPerRequest);
        }
        this.maxRecordsPerRequest = maxRecordsPerRequest;
    }

    /**
     * 30 s per request, 30 s to connect, 256 requests in flight, backoff 5 ms to 1 s, the
     * model's newest version.
     */
    public static SidecarOptions defaults() {
        return new SidecarOptions(
                Duration.ofSeconds(30),
                Duration.ofSeconds(30),
                256,
                Duration.ofMillis(5),
                Duration.ofSeconds(1),
                "",
                64,
                null);
    }

    /** How long a request may take, retries included, before it fails. */
    public SidecarOptions withRequestTimeout(Duration timeout) {
        return new SidecarOptions(timeout, connectTimeout, maxInFlight, initialBackoff, maxBackoff, modelVersion, maxRecordsPerRequest, tls);
    }

    /** How long {@link SidecarClient#connect} waits for the sidecar to answer before it fails. */
    public SidecarOptions withConnectTimeout(Duration timeout) {
        return new SidecarOptions(requestTimeout, timeout, maxInFlight, initialBackoff, maxBackoff, modelVersion, maxRecordsPerRequest, tls);
    }

    /** How many requests may be unanswered at once; {@link SidecarClient#infer} waits beyond that. */
    public SidecarOptions withMaxInFlight(int requests) {
        return new SidecarOptions(requestTimeout, connectTimeout, requests, initialBackoff, maxBackoff, modelVersion, maxRecordsPerRequest, tls);
    }

    /** The first and the longest wait between retries and reconnects. */
    public SidecarOptions withBackoff(Duration initial, Duration max) {
        return new SidecarOptions(requestTimeout, connectTimeout, maxInFlight, initial, max, modelVersion, maxRecordsPerRequest, tls);
    }

    /**
     * Pins one version of the model ({@code "2"}); empty (the default) asks for the newest the
     * sidecar serves, so that a new version is picked up without a restart of the job.
     */
    public SidecarOptions withModelVersion(String version) {
        return new SidecarOptions(requestTimeout, connectTimeout, maxInFlight, initialBackoff, maxBackoff, version, maxRecordsPerRequest, tls);
    }

    /** The version asked for; empty: the newest. */
    /**
     * The most records one request carries: records that arrive while a request of the
     * subtask is in flight join the next one (1: every record alone). Applies to models whose
     * inputs and outputs all have a batch dimension.
     */
    public SidecarOptions withMaxRecordsPerRequest(int records) {
        return new SidecarOptions(
                requestTimeout, connectTimeout, maxInFlight, initialBackoff, maxBackoff, modelVersion, records, tls);
    }

    /**
     * TLS to a {@code host:port} endpoint, trusting the CA in {@code caFile} (null or empty:
     * the JVM's default trust store) and presenting the certificate {@code certFile} with its
     * key {@code keyFile} (both null or empty: none), as a sidecar with {@code
     * [sidecar.rpc.tls]} expects.
     */
    public SidecarOptions withTls(String caFile, String certFile, String keyFile) {
        return new SidecarOptions(requestTimeout, connectTimeout, maxInFlight, initialBackoff, maxBackoff,
                modelVersion, maxRecordsPerRequest, new TlsFiles(caFile, certFile, keyFile));
    }

    /** TLS files, or null for plaintext (and Unix sockets). */
    public TlsFiles tls() {
        return tls;
    }

    public int maxRecordsPerRequest() {
        return maxRecordsPerRequest;
    }

    public String modelVersion() {
        return modelVersion;
    }

    public Duration requestTimeout() {
        return requestTimeout;
    }

    public Duration connectTimeout() {
        return connectTimeout;
    }

    public int maxInFlight() {
        return maxInFlight;
    }

    /** The first wait between retries and reconnects. */
    public Duration initialBackoff() {
        return initialBackoff;
    }

    /** The longest wait between retries and reconnects. */
    public Duration maxBackoff() {
        return maxBackoff;
    }

    private static Duration positive(String what, Duration value) {
        if (value == null || value.isNegative() || value.isZero()) {
            throw new IllegalArgumentException(
                    what + " must be positive, not "
                            + (value == null ? "unset" : value.toMillis() + " ms"));
        }
        return value;
    }
}
