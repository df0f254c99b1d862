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
 *
 * <p>{@link #of} makes the subclass its status code says, so that a caller catches what it can
 * act on, against the sidecar or any other server of the Open Inference Protocol: {@link
 * Unavailable} and {@link Overloaded} are worth sending again ({@link #isRetryable()}), {@link
 * Timeout}, {@link InvalidRequest}, {@link ServerError} and {@link Cancelled} are not.
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

    /** Whether the request may be sent again as it is: the server was unavailable or full. */
    public boolean isRetryable() {
        return false;
    }

    /** The exception that status code {@code code} (a gRPC code's name) stands for. */
    public static SidecarException of(String code, String message) {
        return of(code, message, null);
    }

    /** The exception that status code {@code code} stands for; {@code detail} kept suppressed. */
    public static SidecarException of(String code, String message, Throwable detail) {
        switch (code) {
            case "UNAVAILABLE":
                return new Unavailable(code, message, detail);
            case "RESOURCE_EXHAUSTED":
                return new Overloaded(code, message, detail);
            case "DEADLINE_EXCEEDED":
                return new Timeout(code, message, detail);
            case "INVALID_ARGUMENT":
            case "NOT_FOUND":
            case "FAILED_PRECONDITION":
            case "OUT_OF_RANGE":
            case "UNIMPLEMENTED":
            case "ALREADY_EXISTS":
            case "PERMISSION_DENIED":
            case "UNAUTHENTICATED":
                return new InvalidRequest(code, message, detail);
            case "CANCELLED":
                return new Cancelled(code, message, detail);
            default:
                return new ServerError(code, message, detail);
        }
    }

    /** The server could not be reached, or was not serving (starting, draining): retryable. */
    public static final class Unavailable extends SidecarException {
        private static final long serialVersionUID = 1L;

        Unavailable(String code, String message, Throwable detail) {
            super(code, message, detail);
        }

        @Override
        public boolean isRetryable() {
            return true;
        }
    }

    /** The server's queue was full ({@code RESOURCE_EXHAUSTED}): retryable after a backoff. */
    public static final class Overloaded extends SidecarException {
        private static final long serialVersionUID = 1L;

        Overloaded(String code, String message, Throwable detail) {
            super(code, message, detail);
        }

        @Override
        public boolean isRetryable() {
            return true;
        }
    }

    /** The request's time ran out ({@code DEADLINE_EXCEEDED}). */
    public static final class Timeout extends SidecarException {
        private static final long serialVersionUID = 1L;

        Timeout(String code, String message, Throwable detail) {
            super(code, message, detail);
        }
    }

    /** The request does not fit the model or the server ({@code INVALID_ARGUMENT}, ...). */
    public static final class InvalidRequest extends SidecarException {
        private static final long serialVersionUID = 1L;

        InvalidRequest(String code, String message, Throwable detail) {
            super(code, message, detail);
        }
    }

    /** The client closed, or the call was cancelled. */
    public static final class Cancelled extends SidecarException {
        private static final long serialVersionUID = 1L;

        Cancelled(String code, String message, Throwable detail) {
            super(code, message, detail);
        }
    }

    /** The server failed on the request ({@code INTERNAL}, {@code UNKNOWN}, ...). */
    public static final class ServerError extends SidecarException {
        private static final long serialVersionUID = 1L;

        ServerError(String code, String message, Throwable detail) {
            super(code, message, detail);
        }
    }
}
