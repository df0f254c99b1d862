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
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * The ready-made codec: each model input comes from a {@code float[]} or {@code long[]} that a
 * function reads off the record, one batch row per record; the result is a {@link Prediction}
 * with every output tensor. Values are converted to the datatype the model declares (a {@code
 * float[]} for an FP64 input, say), and shaped from the model's metadata.
 *
 * <pre>{@code
 * ArrayTensorCodec<Event> codec = ArrayTensorCodec.<Event>create()
 *         .floats("features", event -> event.features);
 * }</pre>
 */
public final class ArrayTensorCodec<IN> implements TensorCodec<IN, Prediction<IN>> {
    private static final long serialVersionUID = 1L;

    /** Reads one input's values off a record; serializable, so a lambda will do. */
    @FunctionalInterface
    public interface Field<IN, T> extends Function<IN, T>, Serializable {}

    private static final class Input<IN> implements Serializable {
        private static final long serialVersionUID = 1L;

        final String name;
        final Field<IN, ?> field;

        Input(String name, Field<IN, ?> field) {
            this.name = name;
            this.field = field;
        }
    }

    private final List<Input<IN>> inputs;

    private ArrayTensorCodec(List<Input<IN>> inputs) {
        this.inputs = inputs;
    }

    /** A codec with no inputs yet; add them with {@link #floats} and {@link #longs}. */
    public static <IN> ArrayTensorCodec<IN> create() {
        return new ArrayTensorCodec<>(List.of());
    }

    /** Adds the input {@code name}, read as a {@code float[]}. */
    public ArrayTensorCodec<IN> floats(String name, Field<IN, float[]> field) {
        return with(name, field);
    }

    /** Adds the input {@code name}, read as a {@code long[]}. */
    public ArrayTensorCodec<IN> longs(String name, Field<IN, long[]> field) {
        return with(name, field);
    }

    /** Adds the BYTES input {@code name}, read as one {@code String}. */
    public ArrayTensorCodec<IN> string(String name, Field<IN, String> field) {
        return with(name, field);
    }

    /** Adds the BYTES input {@code name}, read as a {@code String[]}. */
    public ArrayTensorCodec<IN> strings(String name, Field<IN, String[]> field) {
        return with(name, field);
    }

    private ArrayTensorCodec<IN> with(String name, Field<IN, ?> field) {
        List<Input<IN>> more = new ArrayList<>(inputs);
        more.add(new Input<>(name, field));
        return new ArrayTensorCodec<>(List.copyOf(more));
    }

    @Override
    public Map<String, Tensor> encode(IN record, ModelInfo model) {
        if (inputs.isEmpty()) {
            throw new IllegalStateException("the codec names no inputs; add them with floats() or longs()");
        }
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (Input<IN> input : inputs) {
            Object values = input.field.apply(record);
            if (values == null) {
                throw new IllegalArgumentException("input '" + input.name + "': the record has no values");
            }
            ModelInfo.TensorInfo info = model.input(input.name);
            Tensor tensor;
            if (values instanceof float[]) {
                float[] floats = (float[]) values;
                tensor = Tensor.of(floats, floats.length);
            } else if (values instanceof String) {
                tensor = Tensor.ofStrings(new String[] {(String) values}, 1);
            } else if (values instanceof String[]) {
                String[] strings = (String[]) values;
                tensor = Tensor.ofStrings(strings, strings.length);
            } else {
                long[] longs = (long[]) values;
                tensor = Tensor.of(longs, longs.length);
            }
            tensors.put(input.name, info.recordTensor(tensor));
        }
        return tensors;
    }

    @Override
    public Prediction<IN> decode(IN record, Map<String, Tensor> outputs) {
        return new Prediction<>(record, outputs);
    }
}
