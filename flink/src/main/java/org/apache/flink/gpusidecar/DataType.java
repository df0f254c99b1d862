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
 * The tensor element types of the inference protocol that this client reads and writes: every
 * type the protocol has but BF16. BYTES elements (text, as UTF-8) have no fixed size: {@link
 * #bytesPerElement()} is 0 for them, and each travels as a 4-byte little-endian length, then
 * its bytes.
 */
public enum DataType {
    BOOL(1),
    INT8(1),
    UINT8(1),
    INT16(2),
    UINT16(2),
    FP16(2),
    INT32(4),
    UINT32(4),
    INT64(8),
    UINT64(8),
    FP32(4),
    FP64(8),
    BYTES(0);

    private final int bytesPerElement;

    DataType(int bytesPerElement) {
        this.bytesPerElement = bytesPerElement;
    }

    /** The size of one element in the little-endian raw encoding; 0 for BYTES (any length). */
    public int bytesPerElement() {
        return bytesPerElement;
    }

    /** The type the protocol names {@code name}, or an exception naming it. */
    public static DataType fromProtocol(String name) {
        for (DataType type : values()) {
            if (type.name().equals(name)) {
                return type;
            }
        }
        throw new IllegalArgumentException(
                "datatype " + name + " is not one this client handles ("
                        + java.util.Arrays.toString(values()).replaceAll("[\\[\\]]", "") + ")");
    }
}
