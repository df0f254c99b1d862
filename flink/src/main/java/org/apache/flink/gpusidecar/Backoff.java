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
import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Exponential backoff with jitter, between an initial and a maximum delay: attempt n waits
 * about {@code initial * 2^(n-1)}, capped by the maximum, half of it fixed and half random.
 * Computed without overflow for any initial delay.
 */
final class Backoff {
    private final long initialNanos;
    private final long maxNanos;

    Backoff(Duration initial, Duration max) {
        this.initialNanos = Math.max(0, initial.toNanos());
        this.maxNanos = Math.max(0, max.toNanos());
    }

    /** The delay before attempt {@code attempt} (1 for the first retry). */
    long nanos(int attempt) {
        int doublings = Math.min(Math.max(attempt - 1, 0), 62);
        // initial << doublings, or the maximum where that would pass it (or overflow).
        long step =
                initialNanos > (maxNanos >> doublings)
                        ? maxNanos
                        : Math.min(maxNanos, initialNanos << doublings);
        return step / 2 + ThreadLocalRandom.current().nextLong(step / 2 + 1);
    }
}
