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

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * The Open Inference Protocol's raw tensor encoding ({@code raw_input_contents} and {@code
 * raw_output_contents}): values little-endian and row-major; BYTES elements each a 4-byte
 * little-endian length, then the bytes (UTF-8 text here).
 */
final class RawTensorFormat {
    private RawTensorFormat() {}

    /** The raw encoding of {@code size} {@code values} (the tensor's array) of {@code dataType}. */
    static byte[] encode(DataType dataType, Object values, int size) {
        if (dataType == DataType.BYTES) {
            java.io.ByteArrayOutputStream raw = new java.io.ByteArrayOutputStream();
            for (String value : (String[]) values) {
                byte[] text = value.getBytes(java.nio.charset.StandardCharsets.UTF_8);
                raw.writeBytes(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(text.length).array());
                raw.writeBytes(text);
            }
            return raw.toByteArray();
        }
        ByteBuffer buffer =
                ByteBuffer.allocate(size * dataType.bytesPerElement()).order(ByteOrder.LITTLE_ENDIAN);
        if (values instanceof float[]) {
            buffer.asFloatBuffer().put((float[]) values);
        } else if (values instanceof double[]) {
            buffer.asDoubleBuffer().put((double[]) values);
        } else if (values instanceof long[]) {
            buffer.asLongBuffer().put((long[]) values);
        } else if (values instanceof int[]) {
            buffer.asIntBuffer().put((int[]) values);
        } else if (values instanceof short[]) {
            buffer.asShortBuffer().put((short[]) values);
        } else if (values instanceof boolean[]) {
            for (boolean value : (boolean[]) values) {
                buffer.put((byte) (value ? 1 : 0));
            }
        } else {
            buffer.put((byte[]) values);
        }
        return buffer.array();
    }

    /** A tensor from its raw encoding, checked against its shape. */
    static Tensor decode(DataType dataType, long[] shape, ByteBuffer raw) {
        long count = Tensor.elementCount(shape);
        if (dataType == DataType.BYTES) {
            return fromRawStrings(shape, count, raw.duplicate().order(ByteOrder.LITTLE_ENDIAN));
        }
        if (raw.remaining() != count * dataType.bytesPerElement()) {
            throw new IllegalArgumentException(
                    "a " + dataType + " tensor of shape " + Arrays.toString(shape) + " takes "
                            + count * dataType.bytesPerElement() + " bytes, but "
                            + raw.remaining() + " came");
        }
        ByteBuffer buffer = raw.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        int n = (int) count;
        switch (dataType) {
            case FP32: {
                float[] values = new float[n];
                buffer.asFloatBuffer().get(values);
                return Tensor.wrap(dataType, shape, values);
            }
            case FP64: {
                double[] values = new double[n];
                buffer.asDoubleBuffer().get(values);
                return Tensor.wrap(dataType, shape, values);
            }
            case BOOL: {
                boolean[] values = new boolean[n];
                for (int i = 0; i < n; i++) {
                    values[i] = buffer.get() != 0;
                }
                return Tensor.wrap(dataType, shape, values);
            }
            default:
                switch (dataType.bytesPerElement()) {
                    case 1: {
                        byte[] values = new byte[n];
                        buffer.get(values);
                        return Tensor.wrap(dataType, shape, values);
                    }
                    case 2: {
                        short[] values = new short[n];
                        buffer.asShortBuffer().get(values);
                        return Tensor.wrap(dataType, shape, values);
                    }
                    case 4: {
                        int[] values = new int[n];
                        buffer.asIntBuffer().get(values);
                        return Tensor.wrap(dataType, shape, values);
                    }
                    default: {
                        long[] values = new long[n];
                        buffer.asLongBuffer().get(values);
                        return Tensor.wrap(dataType, shape, values);
                    }
                }
        }
    }

    /** A BYTES tensor from its raw form: {@code count} elements, each a length, then UTF-8. */
    private static Tensor fromRawStrings(long[] shape, long count, ByteBuffer buffer) {
        String[] values = new String[(int) count];
        for (int i = 0; i < values.length; i++) {
            if (buffer.remaining() < 4) {
                throw new IllegalArgumentException(
                        "a BYTES tensor of shape " + Arrays.toString(shape) + " has " + count
                                + " elements, but the contents end before element " + i);
            }
            int length = buffer.getInt();
            if (length < 0 || length > buffer.remaining()) {
                throw new IllegalArgumentException(
                        "element " + i + " of a BYTES tensor is " + Integer.toUnsignedString(length)
                                + " bytes long, past the end of the contents");
            }
            byte[] text = new byte[length];
            buffer.get(text);
            values[i] = new String(text, java.nio.charset.StandardCharsets.UTF_8);
        }
        if (buffer.hasRemaining()) {
            throw new IllegalArgumentException(
                    "a BYTES tensor of shape " + Arrays.toString(shape) + " has " + count
                            + " elements, but the contents hold more");
        }
        return Tensor.wrap(DataType.BYTES, shape, values);
    }
}
