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

package org.apache.flink.gpusidecar.table;

import java.io.Serializable;
import org.apache.flink.gpusidecar.Tensor;
import org.apache.flink.table.data.ArrayData;
import org.apache.flink.table.data.GenericArrayData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.types.logical.ArrayType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

/**
 * One model column and the tensor of the same name: ARRAY&lt;FLOAT|DOUBLE|BIGINT|INT|STRING&gt;
 * for a tensor of a row's values, FLOAT, DOUBLE, BIGINT, INT or STRING for a single value.
 * STRING (and CHAR, VARCHAR) columns are the model's BYTES tensors, as UTF-8 text.
 */
final class TensorColumn implements Serializable {
    private static final long serialVersionUID = 1L;

    private final String name;
    private final String typeText;
    private final boolean array;
    private final LogicalTypeRoot element;

    private TensorColumn(String name, String typeText, boolean array, LogicalTypeRoot element) {
        this.name = name;
        this.typeText = typeText;
        this.array = array;
        this.element = element;
    }

    /** The column, or an exception naming it and the types it may have. */
    static TensorColumn of(String name, LogicalType type) {
        boolean array = type.getTypeRoot() == LogicalTypeRoot.ARRAY;
        LogicalTypeRoot element =
                array ? ((ArrayType) type).getElementType().getTypeRoot() : type.getTypeRoot();
        switch (element) {
            case FLOAT:
            case DOUBLE:
            case BIGINT:
            case INTEGER:
                return new TensorColumn(name, type.asSummaryString(), array, element);
            case CHAR:
            case VARCHAR:
                return new TensorColumn(name, type.asSummaryString(), array, LogicalTypeRoot.VARCHAR);
            default:
                throw new IllegalArgumentException(
                        "'" + name + "' has type " + type.asSummaryString()
                                + "; a gpu-sidecar model column is ARRAY<FLOAT>, ARRAY<DOUBLE>,"
                                + " ARRAY<BIGINT>, ARRAY<INT>, ARRAY<STRING>, FLOAT, DOUBLE,"
                                + " BIGINT, INT or STRING");
        }
    }

    String name() {
        return name;
    }

    /** Field {@code pos} of {@code row} as a flat tensor of its values; NULLs are refused. */
    Tensor read(RowData row, int pos) {
        if (row.isNullAt(pos)) {
            throw new IllegalArgumentException("column '" + name + "' (" + typeText + ") is NULL");
        }
        if (!array) {
            switch (element) {
                case FLOAT:
                    return Tensor.of(new float[] {row.getFloat(pos)}, 1);
                case DOUBLE:
                    return Tensor.of(new double[] {row.getDouble(pos)}, 1);
                case BIGINT:
                    return Tensor.of(new long[] {row.getLong(pos)}, 1);
                case VARCHAR:
                    return Tensor.ofStrings(new String[] {row.getString(pos).toString()}, 1);
                default:
                    return Tensor.of(new int[] {row.getInt(pos)}, 1);
            }
        }
        ArrayData values = row.getArray(pos);
        int n = values.size();
        for (int i = 0; i < n; i++) {
            if (values.isNullAt(i)) {
                throw new IllegalArgumentException(
                        "column '" + name + "' (" + typeText + ") has a NULL at index " + i);
            }
        }
        switch (element) {
            case FLOAT:
                return Tensor.of(values.toFloatArray(), n);
            case DOUBLE:
                return Tensor.of(values.toDoubleArray(), n);
            case BIGINT:
                return Tensor.of(values.toLongArray(), n);
            case VARCHAR: {
                String[] strings = new String[n];
                for (int i = 0; i < n; i++) {
                    strings[i] = values.getString(i).toString();
                }
                return Tensor.ofStrings(strings, n);
            }
            default:
                return Tensor.of(values.toIntArray(), n);
        }
    }

    /** An output tensor as this column's internal value; a scalar column takes one value. */
    Object write(Tensor tensor) {
        int n = tensor.size();
        if (!array) {
            if (n != 1) {
                throw new IllegalArgumentException(
                        "output column '" + name + "' (" + typeText + ") takes one value, but the"
                                + " model answered " + tensor + " with " + n);
            }
            switch (element) {
                case FLOAT:
                    return (float) tensor.doubleAt(0);
                case DOUBLE:
                    return tensor.doubleAt(0);
                case BIGINT:
                    return tensor.longAt(0);
                case VARCHAR:
                    return StringData.fromString(text(tensor)[0]);
                default:
                    return Math.toIntExact(tensor.longAt(0));
            }
        }
        switch (element) {
            case FLOAT: {
                float[] values = new float[n];
                for (int i = 0; i < n; i++) {
                    values[i] = (float) tensor.doubleAt(i);
                }
                return new GenericArrayData(values);
            }
            case DOUBLE: {
                double[] values = new double[n];
                for (int i = 0; i < n; i++) {
                    values[i] = tensor.doubleAt(i);
                }
                return new GenericArrayData(values);
            }
            case BIGINT: {
                long[] values = new long[n];
                for (int i = 0; i < n; i++) {
                    values[i] = tensor.longAt(i);
                }
                return new GenericArrayData(values);
            }
            case VARCHAR: {
                String[] strings = text(tensor);
                StringData[] values = new StringData[n];
                for (int i = 0; i < n; i++) {
                    values[i] = StringData.fromString(strings[i]);
                }
                return new GenericArrayData(values);
            }
            default: {
                int[] values = new int[n];
                for (int i = 0; i < n; i++) {
                    values[i] = Math.toIntExact(tensor.longAt(i));
                }
                return new GenericArrayData(values);
            }
        }
    }

    /** The text of a BYTES output, or an exception naming this STRING column and what came. */
    private String[] text(Tensor tensor) {
        if (tensor.dataType() != org.apache.flink.gpusidecar.DataType.BYTES) {
            throw new IllegalArgumentException(
                    "output column '" + name + "' (" + typeText + ") takes text, but the model"
                            + " answered " + tensor);
        }
        return tensor.strings();
    }

    @Override
    public String toString() {
        return name + " " + typeText;
    }
}
