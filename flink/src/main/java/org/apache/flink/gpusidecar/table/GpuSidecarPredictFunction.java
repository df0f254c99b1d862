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

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Collectors;
import org.apache.flink.gpusidecar.ClientMetrics;
import org.apache.flink.gpusidecar.ModelInfo;
import org.apache.flink.gpusidecar.SidecarClient;
import org.apache.flink.gpusidecar.SidecarException;
import org.apache.flink.gpusidecar.Tensor;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.functions.AsyncPredictFunction;
import org.apache.flink.table.functions.FunctionContext;

/**
 * ML_PREDICT's function for a gpu-sidecar model: each row's input columns become one request
 * (one batch row per tensor), the answer's tensors the output columns. One {@link
 * SidecarClient} per subtask, opened in {@code open}.
 */
public final class GpuSidecarPredictFunction extends AsyncPredictFunction {
    private static final long serialVersionUID = 1L;

    private final ModelBinding binding;
    private final String model;
    private final List<TensorColumn> inputs;
    private final List<TensorColumn> outputs;

    private transient SidecarClient client;
    private transient ClientMetrics metrics;

    GpuSidecarPredictFunction(ModelBinding binding) {
        this.binding = binding;
        this.model = binding.model();
        this.inputs = binding.inputs();
        this.outputs = binding.outputs();
    }

    @Override
    public void open(FunctionContext context) throws Exception {
        client = SidecarClient.connect(binding.endpoint(), model, binding.options());
        metrics = ClientMetrics.register(context.getMetricGroup(), client);
        ModelInfo info = client.model();
        try {
            for (TensorColumn column : inputs) {
                info.input(column.name());
            }
            for (TensorColumn column : outputs) {
                info.output(column.name());
            }
        } catch (IllegalArgumentException e) {
            client.close();
            client = null;
            throw SidecarException.of(
                    "INVALID_ARGUMENT",
                    "the columns of model '" + model + "' at " + binding.endpoint()
                            + " must be named after its tensors: " + e.getMessage(),
                    e);
        }
    }

    @Override
    public CompletableFuture<Collection<RowData>> asyncPredict(RowData row) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        try {
            for (int i = 0; i < inputs.size(); i++) {
                TensorColumn column = inputs.get(i);
                tensors.put(
                        column.name(),
                        client.model().input(column.name()).recordTensor(column.read(row, i)));
            }
        } catch (IllegalArgumentException e) {
            return CompletableFuture.failedFuture(
                    SidecarException.of(
                            "INVALID_ARGUMENT",
                            "ML_PREDICT with model '" + model + "': " + e.getMessage(),
                            e));
        }
        CompletableFuture<Collection<RowData>> result = new CompletableFuture<>();
        long sent = metrics.sent();
        client.infer(tensors)
                .whenComplete(
                        (answer, error) -> {
                            metrics.answered(sent, error != null);
                            if (error != null) {
                                result.completeExceptionally(explain(error));
                                return;
                            }
                            try {
                                result.complete(List.of(toRow(answer)));
                            } catch (RuntimeException e) {
                                result.completeExceptionally(
                                        SidecarException.of(
                                                "INTERNAL",
                                                "ML_PREDICT with model '" + model + "': "
                                                        + e.getMessage(),
                                                e));
                            }
                        });
        return result;
    }

    private RowData toRow(Map<String, Tensor> answer) {
        GenericRowData row = new GenericRowData(outputs.size());
        for (int i = 0; i < outputs.size(); i++) {
            TensorColumn column = outputs.get(i);
            Tensor tensor = answer.get(column.name());
            if (tensor == null) {
                throw new IllegalArgumentException(
                        "the answer has no tensor for output column '" + column.name()
                                + "'; it holds " + answer.keySet());
            }
            row.setField(i, column.write(tensor));
        }
        return row;
    }

    /** The sidecar's error, with the input columns the refused row came from. */
    private Throwable explain(Throwable error) {
        Throwable cause = error.getCause() != null && !(error instanceof SidecarException) ? error.getCause() : error;
        if (!(cause instanceof SidecarException)) {
            return cause;
        }
        String columns =
                inputs.stream().map(TensorColumn::toString).collect(Collectors.joining(", "));
        return SidecarException.of(
                ((SidecarException) cause).code(),
                "ML_PREDICT with model '" + model + "' (input columns " + columns + "): "
                        + cause.getMessage(),
                cause);
    }

    @Override
    public void close() throws Exception {
        if (client != null) {
            client.close();
            client = null;
        }
    }
}
