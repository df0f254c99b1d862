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

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;

import org.junit.jupiter.api.Test;

/** The failure a status code stands for, whichever server of the protocol sent it. */
class SidecarExceptionTest {
    @Test
    void theStatusCodeDecidesTheKindAndWhetherToRetry() {
        Object[][] cases = {
            {"UNAVAILABLE", SidecarException.Unavailable.class, true},
            {"RESOURCE_EXHAUSTED", SidecarException.Overloaded.class, true},
            {"DEADLINE_EXCEEDED", SidecarException.Timeout.class, false},
            {"INVALID_ARGUMENT", SidecarException.InvalidRequest.class, false},
            {"NOT_FOUND", SidecarException.InvalidRequest.class, false},
            {"CANCELLED", SidecarException.Cancelled.class, false},
            {"INTERNAL", SidecarException.ServerError.class, false},
            {"UNKNOWN", SidecarException.ServerError.class, false},
        };
        for (Object[] c : cases) {
            IOException cause = new IOException("the wire");
            SidecarException e = SidecarException.of((String) c[0], "model 'm': " + c[0], cause);
            assertInstanceOf((Class<?>) c[1], e, (String) c[0]);
            assertEquals(c[2], e.isRetryable(), (String) c[0]);
            assertEquals(c[0], e.code());
            assertEquals("model 'm': " + c[0], e.getMessage());
            // What it stems from is kept, never in the message's place.
            assertEquals(cause, e.getSuppressed()[0]);
        }
        assertTrue(SidecarException.of("UNAVAILABLE", "x") instanceof SidecarException);
        assertFalse(new SidecarException("UNAVAILABLE", "made directly").isRetryable());
    }
}
