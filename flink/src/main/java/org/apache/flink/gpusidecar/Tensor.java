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
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Objects;

/**
 * One tensor: its datatype, shape and row-major values, held in the Java array that matches
 * the datatype ({@code float[]} for FP32, {@code double[]} for FP64, {@code long[]} for INT64,
 * {@code int[]} for INT32, {@code byte[]} for INT8 and UINT8, {@code boolean[]} for BOOL).
 */
public final class Tensor implements Serializable {
    private static final long serialVersionUID = 1L;

    private final DataType dataType;
    private final long[] shape;
    private final Object values;

    private Tensor(DataType dataType, long[] shape, Object values) {
        this.dataType = dataType;
        this.shape = shape.clone();
        this.values = values;
        long expected = elementCount(shape);
        if (expected != length(values)) {
            throw new IllegalArgumentException(
                    "a tensor of shape " + Arrays.toString(shape) + " holds " + expected
                            + " values, not " + length(values));
        }
    }

    public static Tensor of(float[] values, long... shape) {
        return new Tensor(DataType.FP32, shape, values);
    }

    public static Tensor of(double[] values, long... shape) {
        return new Tensor(DataType.FP64, shape, values);
    }

    public static Tensor of(long[] values, long... shape) {
        return new Tensor(DataType.INT64, shape, values);
    }

    public static Tensor of(int[] values, long... shape) {
        return new Tensor(DataType.INT32, shape, values);
    }

    public static Tensor of(boolean[] values, long... shape) {
        return new Tensor(DataType.BOOL, shape, values);
    }

    /** An INT8 or UINT8 tensor. */
    public static Tensor ofBytes(DataType dataType, byte[] values, long... shape) {
        if (dataType != DataType.INT8 && dataType != DataType.UINT8) {
            throw new IllegalArgumentException("byte[] values make INT8 or UINT8, not " + dataType);
        }
        return new Tensor(dataType, shape, values);
    }

    public DataType dataType() {
        return dataType;
    }

    public long[] shape() {
        return shape.clone();
    }

    /** How many values the tensor holds: the product of its shape. */
    public int size() {
        return length(values);
    }

    public float[] floats() {
        return as(float[].class, DataType.FP32);
    }

    public double[] doubles() {
        return as(double[].class, DataType.FP64);
    }

    public long[] longs() {
        return as(long[].class, DataType.INT64);
    }

    public int[] ints() {
        return as(int[].class, DataType.INT32);
    }

    public boolean[] booleans() {
        return as(boolean[].class, DataType.BOOL);
    }

    public byte[] bytes() {
        if (dataType != DataType.INT8 && dataType != DataType.UINT8) {
            throw new IllegalStateException("a " + dataType + " tensor holds no bytes");
        }
        return (byte[]) values;
    }

    /** Value {@code i} (row-major) widened to a double, whatever the datatype. */
    public double doubleAt(int i) {
        switch (dataType) {
            case FP32:
                return ((float[]) values)[i];
            case FP64:
                return ((double[]) values)[i];
            case INT64:
                return ((long[]) values)[i];
            case INT32:
                return ((int[]) values)[i];
            case BOOL:
                return ((boolean[]) values)[i] ? 1 : 0;
            case UINT8:
                return Byte.toUnsignedInt(((byte[]) values)[i]);
            default:
                return ((byte[]) values)[i];
        }
    }

    /** Value {@code i} (row-major) as a long; fractional values are refused. */
    public long longAt(int i) {
        switch (dataType) {
            case INT64:
                return ((long[]) values)[i];
            case INT32:
                return ((int[]) values)[i];
            case FP32:
            case FP64:
                double value = doubleAt(i);
                if (value != Math.rint(value)) {
                    throw new IllegalStateException(
                            "value " + value + " of a " + dataType + " tensor is not an integer");
                }
                return (long) value;
            default:
                return (long) doubleAt(i);
        }
    }

    /**
     * This tensor's values as a tensor of {@code target} with {@code shape}: widened or
     * narrowed value by value; a value the target cannot hold is refused with a message.
     */
    public Tensor convertTo(DataType target, long... shape) {
        int n = size();
        switch (target) {
            case FP32: {
                float[] values = new float[n];
                for (int i = 0; i < n; i++) {
                    values[i] = (float) doubleAt(i);
                }
                return new Tensor(target, shape, values);
            }
            case FP64: {
                double[] values = new double[n];
                for (int i = 0; i < n; i++) {
                    values[i] = doubleAt(i);
                }
                return new Tensor(target, shape, values);
            }
            case INT64: {
                long[] values = new long[n];
                for (int i = 0; i < n; i++) {
                    values[i] = longAt(i);
                }
                return new Tensor(target, shape, values);
            }
            case INT32: {
                int[] values = new int[n];
                for (int i = 0; i < n; i++) {
                    values[i] = Math.toIntExact(longAt(i));
                }
                return new Tensor(target, shape, values);
            }
            case BOOL: {
                boolean[] values = new boolean[n];
                for (int i = 0; i < n; i++) {
                    values[i] = doubleAt(i) != 0;
                }
                return new Tensor(target, shape, values);
            }
            default: {
                byte[] values = new byte[n];
                long low = target == DataType.UINT8 ? 0 : Byte.MIN_VALUE;
                long high = target == DataType.UINT8 ? 255 : Byte.MAX_VALUE;
                for (int i = 0; i < n; i++) {
                    long value = longAt(i);
                    if (value < low || value > high) {
                        throw new IllegalArgumentException(
                                "value " + value + " does not fit " + target);
                    }
                    values[i] = (byte) value;
                }
                return new Tensor(target, shape, values);
            }
        }
    }

    /** The values in the protocol's raw encoding: little-endian, row-major. */
    public byte[] toRawBytes() {
        ByteBuffer buffer =
                ByteBuffer.allocate(size() * dataType.bytesPerElement()).order(ByteOrder.LITTLE_ENDIAN);
        switch (dataType) {
            case FP32:
                buffer.asFloatBuffer().put((float[]) values);
                break;
            case FP64:
                buffer.asDoubleBuffer().put((double[]) values);
                break;
            case INT64:
                buffer.asLongBuffer().put((long[]) values);
                break;
            case INT32:
                buffer.asIntBuffer().put((int[]) values);
                break;
            case BOOL:
                for (boolean value : (boolean[]) values) {
                    buffer.put((byte) (value ? 1 : 0));
                }
                break;
            default:
                buffer.put((byte[]) values);
        }
        return buffer.array();
    }

    /** A tensor from the protocol's raw encoding, checked against its shape. */
    public static Tensor fromRawBytes(DataType dataType, long[] shape, ByteBuffer raw) {
        long count = elementCount(shape);
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
                return new Tensor(dataType, shape, values);
            }
            case FP64: {
                double[] values = new double[n];
                buffer.asDoubleBuffer().get(values);
                return new Tensor(dataType, shape, values);
            }
            case INT64: {
                long[] values = new long[n];
                buffer.asLongBuffer().get(values);
                return new Tensor(dataType, shape, values);
            }
            case INT32: {
                int[] values = new int[n];
                buffer.asIntBuffer().get(values);
                return new Tensor(dataType, shape, values);
            }
            case BOOL: {
                boolean[] values = new boolean[n];
                for (int i = 0; i < n; i++) {
                    values[i] = buffer.get() != 0;
                }
                return new Tensor(dataType, shape, values);
            }
            default: {
                byte[] values = new byte[n];
                buffer.get(values);
                return new Tensor(dataType, shape, values);
            }
        }
    }

    /** The product of a shape's dimensions, or an exception naming a negative one. */
    static long elementCount(long[] shape) {
        long count = 1;
        for (long dimension : shape) {
            if (dimension < 0) {
                throw new IllegalArgumentException(
                        "shape " + Arrays.toString(shape) + " has a negative dimension");
            }
            count = Math.multiplyExact(count, dimension);
        }
        return count;
    }

    private static int length(Object values) {
        Objects.requireNonNull(values, "tensor values");
        return java.lang.reflect.Array.getLength(values);
    }

    private <T> T as(Class<T> arrayType, DataType expected) {
        if (dataType != expected) {
            throw new IllegalStateException(
                    "a " + dataType + " tensor is not " + expected + " (" + arrayType.getSimpleName()
                            + ")");
        }
        return arrayType.cast(values);
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof Tensor)) {
            return false;
        }
        Tensor that = (Tensor) other;
        return dataType == that.dataType
                && Arrays.equals(shape, that.shape)
                && Arrays.deepEquals(new Object[] {values}, new Object[] {that.values});
    }

    @Override
    public int hashCode() {
        return Objects.hash(dataType, Arrays.hashCode(shape), Arrays.deepHashCode(new Object[] {values}));
    }

    @Override
    public String toString() {
        return dataType + Arrays.toString(shape);
    }
}
