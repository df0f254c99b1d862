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
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/** A record and the output tensors the model answered for it: what {@link ArrayTensorCodec} gives. */
public final class Prediction<IN> implements Serializable {
    private static final long serialVersionUID = 1L;

    private final IN record;
    // A plain LinkedHashMap, which Flink's Kryo fallback can copy and serialize.
    private final LinkedHashMap<String, Tensor> outputs;

    public Prediction(IN record, Map<String, Tensor> outputs) {
        this.record = record;
        this.outputs = new LinkedHashMap<>(outputs);
    }

    public IN record() {
        return record;
    }

    /** Every output tensor, by name, in the model's order. */
    public Map<String, Tensor> outputs() {
        return Collections.unmodifiableMap(outputs);
    }

    /** The output named {@code name}, or an exception that lists the outputs there are. */
    public Tensor output(String name) {
        Tensor tensor = outputs.get(name);
        if (tensor == null) {
            throw new IllegalArgumentException(
                    "no output '" + name + "'; the answer holds " + outputs.keySet());
        }
        return tensor;
    }

    /** An FP32 output's values. */
    public float[] floats(String name) {
        return output(name).floats();
    }

    /** An INT64 output's values. */
    public long[] longs(String name) {
        return output(name).longs();
    }

    /** An FP64 output's values. */
    public double[] doubles(String name) {
        return output(name).doubles();
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof Prediction
                && Objects.equals(record, ((Prediction<?>) other).record)
                && outputs.equals(((Prediction<?>) other).outputs);
    }

    @Override
    public int hashCode() {
        return Objects.hash(record, outputs);
    }

    @Override
    public String toString() {
        return "Prediction{" + record + " -> " + outputs + "}";
    }
}
