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

import org.apache.flink.table.functions.AsyncPredictFunction;
import org.apache.flink.table.ml.AsyncPredictRuntimeProvider;
import org.apache.flink.table.ml.ModelProvider;

/** A gpu-sidecar model as the planner sees it: it predicts asynchronously. */
public final class GpuSidecarModelProvider implements AsyncPredictRuntimeProvider {
    private final ModelBinding binding;

    GpuSidecarModelProvider(ModelBinding binding) {
        this.binding = binding;
    }

    @Override
    public AsyncPredictFunction createAsyncPredictFunction(ModelProvider.Context context) {
        return new GpuSidecarPredictFunction(binding);
    }

    @Override
    public ModelProvider copy() {
        return new GpuSidecarModelProvider(binding);
    }
}
