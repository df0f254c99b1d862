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
 * IEEE 754 half precision (the protocol's FP16) to and from float, as Java 20's
 * {@code Float.float16ToFloat} and {@code Float.floatToFloat16} do; this module targets Java 17.
 */
final class Half {
    private Half() {}

    /** The float that the half-precision bits {@code bits} stand for, exactly. */
    static float toFloat(short bits) {
        int sign = (bits & 0x8000) << 16;
        int exponent = (bits >>> 10) & 0x1f;
        int mantissa = bits & 0x3ff;
        if (exponent == 0x1f) {
            return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
        }
        if (exponent == 0) {
            // Zero or subnormal: mantissa x 2^-24.
            float value = mantissa * 0x1p-24f;
            return sign == 0 ? value : -value;
        }
        return Float.intBitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
    }

    /** The half-precision bits nearest {@code value} (ties to even), as Java 20 rounds. */
    static short fromFloat(float value) {
        int bits = Float.floatToRawIntBits(value);
        int sign = (bits >>> 16) & 0x8000;
        float magnitude = Math.abs(value);
        if (Float.isNaN(value)) {
            return (short) (sign | 0x7e00 | ((bits >>> 13) & 0x3ff));
        }
        if (magnitude >= 65520f) {
            return (short) (sign | 0x7c00);
        }
        if (magnitude < 0x1p-14f) {
            // Subnormal or zero: round mantissa x 2^-24 to an integer, ties to even.
            return (short) (sign | (int) Math.rint(magnitude * 0x1p24f));
        }
        int exponent = Math.getExponent(magnitude);
        int mantissa = Float.floatToRawIntBits(magnitude) & 0x7fffff;
        int rounded = (mantissa >>> 13) + roundBit(mantissa);
        int half = ((exponent + 15) << 10) + rounded;
        return (short) (sign | half);
    }

    /** 1 when the 13 dropped bits round the kept mantissa up (ties to even). */
    private static int roundBit(int mantissa) {
        int dropped = mantissa & 0x1fff;
        int kept = mantissa >>> 13;
        return dropped > 0x1000 || (dropped == 0x1000 && (kept & 1) == 1) ? 1 : 0;
    }
}
