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

/**
 * A request the sidecar refused or could not answer, or a sidecar that cannot be reached. The
 * message names the endpoint and the model and carries the sidecar's own message; {@link
 * #code()} is the gRPC status code's name ({@code INVALID_ARGUMENT}, {@code UNAVAILABLE}, ...).
 *
 * <p>It is always the innermost cause of a failure: Flink's SQL client, web UI and {@code
 * flink run} print the innermost cause, and a gRPC or Netty exception there (a bare {@code
 * java.io.FileNotFoundException}, say) would hide this message. What it stems from is kept as
 * a suppressed exception: printed with the stack trace, never in this message's place.
 */
public class SidecarException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String code;

    public SidecarException(String code, String message) {
        super(message);
        this.code = code;
    }

    /** {@code detail}, what this stems from, is kept as suppressed (see the class comment). */
    public SidecarException(String code, String message, Throwable detail) {
        super(message);
        this.code = code;
        if (detail != null) {
            addSuppressed(detail);
        }
    }

    /** The gRPC status code's name, e.g. {@code INVALID_ARGUMENT}. */
    public String code() {
        return code;
    }
}
