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

import java.time.Duration;
import org.junit.jupiter.api.Test;

/** The retry backoff: exponential with jitter, capped by the maximum, never overflowing. */
class BackoffTest {
    @Test
    void eachDelayIsHalfToAllOfItsStepAndTheStepsDoubleUpToTheMaximum() {
        Backoff backoff = new Backoff(Duration.ofMillis(5), Duration.ofSeconds(1));
        long[] steps = {5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000};
        for (int attempt = 1; attempt <= steps.length; attempt++) {
            long step = Duration.ofMillis(steps[attempt - 1]).toNanos();
            for (int draw = 0; draw < 100; draw++) {
                long delay = backoff.nanos(attempt);
                assertTrue(delay >= step / 2 && delay <= step, "attempt " + attempt + ": " + delay);
            }
        }
    }

    @Test
    void aLongInitialBackoffAndManyAttemptsStayWithinTheMaximum() {
        // From about 8.6 s, initial << 30 passed Long.MAX_VALUE and went negative.
        Backoff backoff = new Backoff(Duration.ofSeconds(10), Duration.ofMinutes(2));
        long max = Duration.ofMinutes(2).toNanos();
        for (int attempt : new int[] {1, 2, 31, 32, 63, 64, 1000, Integer.MAX_VALUE}) {
            long delay = backoff.nanos(attempt);
            assertTrue(delay > 0 && delay <= max, "attempt " + attempt + ": " + delay);
        }
    }
}
