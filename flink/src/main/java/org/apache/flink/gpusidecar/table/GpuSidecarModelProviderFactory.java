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

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.gpusidecar.Endpoint;
import org.apache.flink.gpusidecar.SidecarOptions;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.catalog.Column;
import org.apache.flink.table.catalog.ResolvedSchema;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.factories.ModelProviderFactory;
import org.apache.flink.table.ml.ModelProvider;

/**
 * Makes {@code CREATE MODEL ... WITH ('provider' = 'gpu-sidecar', ...)} models: each model
 * input column becomes the sidecar input tensor of the same name, each output column the output
 * tensor of that name. Found by Flink through {@code META-INF/services}.
 */
public class GpuSidecarModelProviderFactory implements ModelProviderFactory {
    public static final String IDENTIFIER = "gpu-sidecar";

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Set.of(GpuSidecarModelOptions.ENDPOINT, GpuSidecarModelOptions.MODEL);
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Set.of(
                GpuSidecarModelOptions.MODEL_VERSION,
                GpuSidecarModelOptions.TIMEOUT,
                GpuSidecarModelOptions.MAX_IN_FLIGHT,
                GpuSidecarModelOptions.MAX_RECORDS_PER_REQUEST,
                GpuSidecarModelOptions.CONNECT_TIMEOUT,
                GpuSidecarModelOptions.TLS_CA,
                GpuSidecarModelOptions.TLS_CERT,
                GpuSidecarModelOptions.TLS_KEY);
    }

    @Override
    public ModelProvider createModelProvider(Context context) {
        FactoryUtil.ModelProviderFactoryHelper helper =
                FactoryUtil.createModelProviderFactoryHelper(this, context);
        helper.validate();
        ReadableConfig config = helper.getOptions();
        String model = context.getObjectIdentifier().asSummaryString();
        String endpoint = config.get(GpuSidecarModelOptions.ENDPOINT);
        try {
            Endpoint.parse(endpoint);
        } catch (IllegalArgumentException e) {
            throw new ValidationException("model " + model + ": " + e.getMessage(), e);
        }
        SidecarOptions options;
        try {
            options =
                    SidecarOptions.defaults()
                            .withRequestTimeout(config.get(GpuSidecarModelOptions.TIMEOUT))
                            .withMaxInFlight(config.get(GpuSidecarModelOptions.MAX_IN_FLIGHT))
                            .withMaxRecordsPerRequest(
                                    config.get(GpuSidecarModelOptions.MAX_RECORDS_PER_REQUEST))
                            .withConnectTimeout(config.get(GpuSidecarModelOptions.CONNECT_TIMEOUT))
                            .withModelVersion(
                                    config.getOptional(GpuSidecarModelOptions.MODEL_VERSION).orElse(""));
            java.util.Optional<String> ca = config.getOptional(GpuSidecarModelOptions.TLS_CA);
            java.util.Optional<String> cert = config.getOptional(GpuSidecarModelOptions.TLS_CERT);
            java.util.Optional<String> key = config.getOptional(GpuSidecarModelOptions.TLS_KEY);
            if (ca.isPresent() || cert.isPresent() || key.isPresent()) {
                if (Endpoint.parse(endpoint).isUnix()) {
                    throw new IllegalArgumentException(
                            "tls-ca, tls-cert and tls-key are for host:port endpoints, not " + endpoint);
                }
                options = options.withTls(ca.orElse(""), cert.orElse(""), key.orElse(""));
            }
        } catch (IllegalArgumentException e) {
            throw new ValidationException("model " + model + ": " + e.getMessage(), e);
        }
        List<TensorColumn> inputs =
                columns(model, "input", context.getCatalogModel().getResolvedInputSchema());
        List<TensorColumn> outputs =
                columns(model, "output", context.getCatalogModel().getResolvedOutputSchema());
        return new GpuSidecarModelProvider(
                new ModelBinding(
                        endpoint, config.get(GpuSidecarModelOptions.MODEL), options, inputs, outputs));
    }

    private static List<TensorColumn> columns(String model, String side, ResolvedSchema schema) {
        List<TensorColumn> columns = new ArrayList<>();
        for (Column column : schema.getColumns()) {
            try {
                columns.add(TensorColumn.of(column.getName(), column.getDataType().getLogicalType()));
            } catch (IllegalArgumentException e) {
                throw new ValidationException(
                        "model " + model + ", " + side + " column " + e.getMessage(), e);
            }
        }
        return columns;
    }
}
