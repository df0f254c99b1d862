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

/** Reading what a failed job said. */
final class Failures {
    /** What the sidecar says of an input of the wrong shape, in Triton's words (src/model/request.rs). */
    static final String SIDECAR_SHAPE_MESSAGE =
            "unexpected shape for input 'features' for model 'affine'. Expected [-1,4], got [1,3] (-1: any size)";

    private Failures() {}

    /** The message of the innermost cause: what Flink's SQL client and web UI show. */
    static String innermost(Throwable failure) {
        Throwable cause = failure;
        while (cause.getCause() != null) {
            cause = cause.getCause();
        }
        return name(cause) + ": " + cause.getMessage();
    }

    /** A throwable's class name without its package ({@code SidecarException$Timeout}). */
    static String name(Throwable cause) {
        String name = cause.getClass().getName();
        return name.substring(name.lastIndexOf('.') + 1);
    }

    /** Every message of a throwable's cause chain, one per line. */
    static String messages(Throwable failure) {
        StringBuilder text = new StringBuilder();
        for (Throwable cause = failure; cause != null; cause = cause.getCause()) {
            text.append(name(cause)).append(": ").append(cause.getMessage()).append('\n');
        }
        return text.toString();
    }
}
