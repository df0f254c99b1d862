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
import java.util.Map;

/**
 * Turns a record into the model's named input tensors, and the model's named output tensors
 * (with the record) into the result. Runs on the Flink task thread ({@code encode}) and on the
 * client's callback thread ({@code decode}); keep it stateless.
 *
 * @param <IN> the record type
 * @param <OUT> the result type
 */
public interface TensorCodec<IN, OUT> extends Serializable {

    /** The input tensors for one record, one batch row each; {@code model} says their shapes. */
    Map<String, Tensor> encode(IN record, ModelInfo model);

    /** The result for {@code record}, from the output tensors the sidecar answered with. */
    OUT decode(IN record, Map<String, Tensor> outputs);
}
