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
import java.util.Objects;

/**
 * Where the sidecar listens, in the syntax of its {@code sidecar.rpc.endpoint}: {@code
 * unix:/abs/path.sock}, {@code unix:///abs/path.sock}, or {@code host:port} ({@code
 * [IPv6]:port}).
 */
public final class Endpoint implements Serializable {
    private static final long serialVersionUID = 1L;

    /** The longest path a Unix socket address holds (108 bytes with the NUL). */
    private static final int MAX_SOCKET_PATH_BYTES = 107;

    private final String text;
    private final String socketPath;
    private final String host;
    private final int port;

    private Endpoint(String text, String socketPath, String host, int port) {
        this.text = text;
        this.socketPath = socketPath;
        this.host = host;
        this.port = port;
    }

    /** Parses an endpoint, or throws an exception that names what is wrong with it. */
    public static Endpoint parse(String text) {
        Objects.requireNonNull(text, "endpoint");
        if (text.startsWith("unix:")) {
            String path = text.substring("unix:".length());
            if (path.startsWith("//")) {
                path = path.substring(2);
                if (!path.startsWith("/")) {
                    throw invalid(text, "a unix endpoint is unix:/abs/path or unix:///abs/path");
                }
            }
            if (path.isEmpty()) {
                throw invalid(text, "the socket path is empty");
            }
            if (!path.startsWith("/")) {
                throw invalid(text, "the socket path must be absolute");
            }
            if (path.endsWith("/")) {
                throw invalid(text, "the socket path names a folder, not a file");
            }
            int bytes = path.getBytes(java.nio.charset.StandardCharsets.UTF_8).length;
            if (bytes > MAX_SOCKET_PATH_BYTES) {
                throw invalid(
                        text,
                        "the socket path is " + bytes + " bytes, more than the "
                                + MAX_SOCKET_PATH_BYTES + " a Unix socket address holds");
            }
            if (path.indexOf('\0') >= 0) {
                throw invalid(text, "the socket path contains a NUL byte");
            }
            return new Endpoint(text, path, null, 0);
        }
        if (text.contains("://")) {
            throw invalid(text, "use unix:/abs/path.sock or host:port");
        }
        int colon = text.lastIndexOf(':');
        if (colon <= 0 || colon == text.length() - 1) {
            throw invalid(text, "expected unix:/abs/path.sock or host:port");
        }
        String host = text.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        } else if (host.contains(":")) {
            throw invalid(text, "write an IPv6 address in brackets, e.g. [::1]:50051");
        }
        int port;
        try {
            port = Integer.parseInt(text.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw invalid(text, "the port is not a number");
        }
        if (port < 1 || port > 65535) {
            throw invalid(text, "the port must be 1 to 65535");
        }
        if (!isHost(host)) {
            throw invalid(text, "\"" + host + "\" is not a host name or IP address");
        }
        return new Endpoint(text, null, host, port);
    }

    /** A host name (letters, digits, '-' in dot-separated labels) or an IP address. */
    private static boolean isHost(String host) {
        if (host.contains(":")) {
            return host.matches("[0-9A-Fa-f:.]+"); // an IPv6 address, from inside brackets
        }
        if (host.isEmpty() || host.length() > 253) {
            return false;
        }
        for (String label : host.split("\\.", -1)) {
            if (label.isEmpty()
                    || label.length() > 63
                    || label.startsWith("-")
                    || label.endsWith("-")
                    || !label.matches("[A-Za-z0-9-]+")) {
                return false;
            }
        }
        return true;
    }

    private static IllegalArgumentException invalid(String text, String why) {
        return new IllegalArgumentException("invalid gpu-sidecar endpoint \"" + text + "\": " + why);
    }

    /** True for a Unix domain socket. */
    public boolean isUnix() {
        return socketPath != null;
    }

    /** The socket file of a {@code unix:} endpoint. */
    public String socketPath() {
        return socketPath;
    }

    public String host() {
        return host;
    }

    public int port() {
        return port;
    }

    @Override
    public String toString() {
        return text;
    }
}
