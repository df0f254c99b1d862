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
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** What the sidecar's {@code ModelMetadata} says of the model: its inputs and outputs. */
public final class ModelInfo implements Serializable {
    private static final long serialVersionUID = 1L;

    /** One input or output: its name, protocol datatype and shape (-1 for a free dimension). */
    public static final class TensorInfo implements Serializable {
        private static final long serialVersionUID = 1L;

        private final String name;
        private final String dataType;
        private final long[] shape;

        public TensorInfo(String name, String dataType, long[] shape) {
            this.name = name;
            this.dataType = dataType;
            this.shape = shape.clone();
        }

        public String name() {
            return name;
        }

        /** The protocol's datatype name (FP32, INT64, ...). */
        public String dataType() {
            return dataType;
        }

        public long[] shape() {
            return shape.clone();
        }

        /**
         * The shape of one record's tensor of {@code count} values: a batch of one, then the
         * model's own dimensions with a free one filled in. Values that fit no such shape get a
         * flat {@code [1, count]}, for the sidecar to refuse with its own message.
         */
        public long[] recordShape(int count) {
            if (shape.length <= 1) {
                return new long[] {count};
            }
            long[] record = shape.clone();
            record[0] = 1;
            long fixed = 1;
            int free = -1;
            for (int i = 1; i < record.length; i++) {
                if (record[i] < 0) {
                    if (free >= 0) {
                        return new long[] {1, count};
                    }
                    free = i;
                } else {
                    fixed *= record[i];
                }
            }
            if (free >= 0 && fixed > 0 && count % fixed == 0) {
                record[free] = count / fixed;
                return record;
            }
            return free < 0 && fixed == count ? record : new long[] {1, count};
        }

        /**
         * One record's values (any shape, any numeric datatype) as the tensor this input takes:
         * converted to its datatype, shaped by {@link #recordShape}. Fails naming the input.
         */
        public Tensor recordTensor(Tensor values) {
            long[] record = recordShape(values.size());
            DataType target;
            try {
                target = DataType.fromProtocol(dataType);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("input '" + name + "': " + e.getMessage(), e);
            }
            try {
                return values.convertTo(target, record);
            } catch (RuntimeException e) {
                throw new IllegalArgumentException(
                        "input '" + name + "' (" + dataType + "): " + e.getMessage(), e);
            }
        }

        @Override
        public String toString() {
            return name + " " + dataType + Arrays.toString(shape);
        }
    }

    private final String name;
    private final Map<String, TensorInfo> inputs;
    private final Map<String, TensorInfo> outputs;

    public ModelInfo(String name, List<TensorInfo> inputs, List<TensorInfo> outputs) {
        this.name = name;
        this.inputs = byName(inputs);
        this.outputs = byName(outputs);
    }

    /**
     * Whether requests may carry several records: every input and output has a free first
     * dimension, the batch one (the sidecar serves a model that batches so).
     */
    public boolean batched() {
        for (Map<String, TensorInfo> tensors : List.of(inputs, outputs)) {
            for (TensorInfo tensor : tensors.values()) {
                if (tensor.shape().length == 0 || tensor.shape()[0] != -1) {
                    return false;
                }
            }
        }
        return !inputs.isEmpty();
    }

    private static Map<String, TensorInfo> byName(List<TensorInfo> tensors) {
        Map<String, TensorInfo> map = new LinkedHashMap<>();
        for (TensorInfo tensor : tensors) {
            map.put(tensor.name(), tensor);
        }
        return Collections.unmodifiableMap(map);
    }

    public String name() {
        return name;
    }

    /** The inputs in the model's order, by name. */
    public Map<String, TensorInfo> inputs() {
        return inputs;
    }

    /** The outputs in the model's order, by name. */
    public Map<String, TensorInfo> outputs() {
        return outputs;
    }

    /** The input named {@code name}, or an exception that lists the model's inputs. */
    public TensorInfo input(String name) {
        TensorInfo input = inputs.get(name);
        if (input == null) {
            throw new IllegalArgumentException(
                    "model '" + this.name + "' has no input '" + name + "'; its inputs are "
                            + inputs.values());
        }
        return input;
    }

    /** The output named {@code name}, or an exception that lists the model's outputs. */
    public TensorInfo output(String name) {
        TensorInfo output = outputs.get(name);
        if (output == null) {
            throw new IllegalArgumentException(
                    "model '" + this.name + "' has no output '" + name + "'; its outputs are "
                            + outputs.values());
        }
        return output;
    }

    @Override
    public String toString() {
        return name + " " + inputs.values() + " -> " + outputs.values();
    }
}
