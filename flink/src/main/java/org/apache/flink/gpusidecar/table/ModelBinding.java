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
import java.util.List;
import org.apache.flink.gpusidecar.SidecarOptions;

/**
 * A {@code CREATE MODEL} bound to a sidecar: where it listens, the model's name there, the
 * client options, and the columns that are its input and output tensors.
 */
record ModelBinding(
        String endpoint,
        String model,
        SidecarOptions options,
        List<TensorColumn> inputs,
        List<TensorColumn> outputs)
        implements Serializable {

    ModelBinding {
        inputs = List.copyOf(inputs);
        outputs = List.copyOf(outputs);
    }
}
