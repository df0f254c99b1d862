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
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * One tensor: its datatype, shape and row-major values, held in the Java array that matches
 * the datatype's width ({@code float[]} for FP32, {@code double[]} for FP64, {@code long[]} for
 * INT64 and UINT64, {@code int[]} for INT32 and UINT32, {@code short[]} for INT16, UINT16 and
 * FP16 (its IEEE bits), {@code byte[]} for INT8 and UINT8, {@code boolean[]} for BOOL, {@code
 * String[]} for BYTES (text); unsigned values in their two's-complement bits).
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

    /** A BYTES tensor of text, each element sent as UTF-8. */
    public static Tensor ofStrings(String[] values, long... shape) {
        for (int i = 0; i < values.length; i++) {
            if (values[i] == null) {
                throw new IllegalArgumentException("text value " + i + " is null");
            }
        }
        return new Tensor(DataType.BYTES, shape, values.clone());
    }

    /** The values of a BYTES tensor. */
    public String[] strings() {
        return as(String[].class, DataType.BYTES).clone();
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

    /** Value {@code i} (row-major) widened to a double, whatever the (numeric) datatype. */
    public double doubleAt(int i) {
        switch (dataType) {
            case BYTES:
                throw new IllegalStateException("a BYTES tensor holds text, not numbers");
            case FP32:
                return ((float[]) values)[i];
            case FP64:
                return ((double[]) values)[i];
            case FP16:
                return Half.toFloat(((short[]) values)[i]);
            case UINT64: {
                long value = ((long[]) values)[i];
                return value >= 0 ? value : (double) (value >>> 1) * 2.0 + (value & 1);
            }
            default:
                return longAt(i);
        }
    }

    /** Value {@code i} (row-major) as a long; fractional values and UINT64 values past
     * {@code Long.MAX_VALUE} are refused. */
    public long longAt(int i) {
        switch (dataType) {
            case BYTES:
                throw new IllegalStateException("a BYTES tensor holds text, not numbers");
            case BOOL:
                return ((boolean[]) values)[i] ? 1 : 0;
            case INT8:
                return ((byte[]) values)[i];
            case UINT8:
                return Byte.toUnsignedInt(((byte[]) values)[i]);
            case INT16:
                return ((short[]) values)[i];
            case UINT16:
                return Short.toUnsignedInt(((short[]) values)[i]);
            case INT32:
                return ((int[]) values)[i];
            case UINT32:
                return Integer.toUnsignedLong(((int[]) values)[i]);
            case INT64:
                return ((long[]) values)[i];
            case UINT64: {
                long value = ((long[]) values)[i];
                if (value < 0) {
                    throw new IllegalStateException(
                            "value " + Long.toUnsignedString(value) + " of a UINT64 tensor does not fit a long");
                }
                return value;
            }
            default: {
                double value = doubleAt(i);
                if (value != Math.rint(value)) {
                    throw new IllegalStateException(
                            "value " + value + " of a " + dataType + " tensor is not an integer");
                }
                return (long) value;
            }
        }
    }

    /**
     * This tensor's values as a tensor of {@code target} with {@code shape}: widened or
     * narrowed value by value; a value the target cannot hold is refused with a message.
     */
    public Tensor convertTo(DataType target, long... shape) {
        int n = size();
        if ((target == DataType.BYTES) != (dataType == DataType.BYTES)) {
            throw new IllegalArgumentException(
                    dataType == DataType.BYTES
                            ? "text cannot feed a " + target + " tensor"
                            : "a " + target + " tensor takes text, not " + dataType + " values");
        }
        switch (target) {
            case BYTES:
                return new Tensor(target, shape, values);
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
            case FP16: {
                short[] values = new short[n];
                for (int i = 0; i < n; i++) {
                    values[i] = Half.fromFloat((float) doubleAt(i));
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
                long[] integers = new long[n];
                for (int i = 0; i < n; i++) {
                    integers[i] = checkedInteger(longAt(i), target);
                }
                return fromLongs(target, shape, integers);
            }
        }
    }

    /** {@code value}, if {@code target} (an integer type) holds it. */
    private static long checkedInteger(long value, DataType target) {
        int bits = target.bytesPerElement() * 8;
        boolean unsigned = target.name().startsWith("UINT");
        long low = unsigned ? 0 : bits == 64 ? Long.MIN_VALUE : -(1L << (bits - 1));
        long high = bits == 64 ? Long.MAX_VALUE : unsigned ? (1L << bits) - 1 : (1L << (bits - 1)) - 1;
        if (value < low || value > high) {
            throw new IllegalArgumentException("value " + value + " does not fit " + target);
        }
        return value;
    }

    /** An integer tensor of {@code target} from values known to fit it. */
    private static Tensor fromLongs(DataType target, long[] shape, long[] integers) {
        int n = integers.length;
        switch (target.bytesPerElement()) {
            case 1: {
                byte[] values = new byte[n];
                for (int i = 0; i < n; i++) {
                    values[i] = (byte) integers[i];
                }
                return new Tensor(target, shape, values);
            }
            case 2: {
                short[] values = new short[n];
                for (int i = 0; i < n; i++) {
                    values[i] = (short) integers[i];
                }
                return new Tensor(target, shape, values);
            }
            case 4: {
                int[] values = new int[n];
                for (int i = 0; i < n; i++) {
                    values[i] = (int) integers[i];
                }
                return new Tensor(target, shape, values);
            }
            default:
                return new Tensor(target, shape, integers);
        }
    }

    /** The values in the protocol's raw encoding: little-endian, row-major. */
    public byte[] toRawBytes() {
        return RawTensorFormat.encode(dataType, values, size());
    }

    /** A tensor from the protocol's raw encoding, checked against its shape. */
    public static Tensor fromRawBytes(DataType dataType, long[] shape, ByteBuffer raw) {
        return RawTensorFormat.decode(dataType, shape, raw);
    }

    /** A tensor of {@code values} as they are (the array that matches the datatype's width). */
    static Tensor wrap(DataType dataType, long[] shape, Object values) {
        return new Tensor(dataType, shape, values);
    }

    /**
     * The tensors joined along their first dimension (several records' rows in one request):
     * each of the same type and the same shape past the first dimension.
     */
    static Tensor concat(List<Tensor> parts) {
        Tensor first = parts.get(0);
        long rows = 0;
        int elements = 0;
        for (Tensor part : parts) {
            if (part.dataType != first.dataType
                    || part.shape.length != first.shape.length
                    || part.shape.length == 0
                    || !Arrays.equals(
                            Arrays.copyOfRange(part.shape, 1, part.shape.length),
                            Arrays.copyOfRange(first.shape, 1, first.shape.length))) {
                throw new IllegalArgumentException(
                        "cannot join a " + part.dataType + " " + Arrays.toString(part.shape) + " tensor to a "
                                + first.dataType + " " + Arrays.toString(first.shape) + " one");
            }
            rows += part.shape[0];
            elements += length(part.values);
        }
        Object joined = java.lang.reflect.Array.newInstance(first.values.getClass().getComponentType(), elements);
        int at = 0;
        for (Tensor part : parts) {
            int n = length(part.values);
            System.arraycopy(part.values, 0, joined, at, n);
            at += n;
        }
        long[] shape = first.shape.clone();
        shape[0] = rows;
        return new Tensor(first.dataType, shape, joined);
    }

    /** Rows {@code from} to {@code from + count} (along the first dimension) of this tensor. */
    Tensor rows(long from, long count) {
        if (shape.length == 0 || from < 0 || count < 0 || from + count > shape[0]) {
            throw new IllegalArgumentException(
                    "rows " + from + " to " + (from + count) + " of a tensor of shape " + Arrays.toString(shape));
        }
        int perRow = shape[0] == 0 ? 0 : Math.toIntExact(length(values) / shape[0]);
        Object part = java.lang.reflect.Array.newInstance(values.getClass().getComponentType(), Math.toIntExact(count * perRow));
        System.arraycopy(values, Math.toIntExact(from * perRow), part, 0, Math.toIntExact(count * perRow));
        long[] partShape = shape.clone();
        partShape[0] = count;
        return new Tensor(dataType, partShape, part);
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
