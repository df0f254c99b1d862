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

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Checks from a TaskManager host that its sidecar serves a model, through this jar's own
 * (shaded) client: lists every model the sidecar knows with each version's state, prints the
 * model's inputs and outputs, infers one all-zero record, and prints its outputs. Exit 0 when
 * it answered, 1 when not, 2 on a bad command line.
 *
 * <pre>
 * java -cp flink-gpu-sidecar-client.jar:$FLINK_HOME/lib/'*' \
 *     org.apache.flink.gpusidecar.SidecarCheck unix:/tmp/gpu-sidecar.sock mlp
 * </pre>
 */
public final class SidecarCheck {
    private SidecarCheck() {}

    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: SidecarCheck ENDPOINT MODEL   (ENDPOINT: unix:/path.sock or host:port)");
            System.exit(2);
        }
        SidecarOptions options =
                SidecarOptions.defaults()
                        .withConnectTimeout(Duration.ofSeconds(10))
                        .withRequestTimeout(Duration.ofSeconds(10));
        try (SidecarClient client = SidecarClient.connect(args[0], args[1], options)) {
            for (IndexEntry entry : client.repositoryIndex()) {
                System.out.println("repository: " + entry);
            }
            ModelInfo model = client.model();
            System.out.println("model " + model);
            Map<String, Tensor> zeros = new LinkedHashMap<>();
            for (ModelInfo.TensorInfo input : model.inputs().values()) {
                long[] shape = input.shape();
                int count = 1;
                for (int i = 1; i < shape.length; i++) {
                    count *= (int) Math.max(shape[i], 1);
                }
                zeros.put(input.name(), input.recordTensor(Tensor.of(new float[count], count)));
            }
            Map<String, Tensor> outputs = client.infer(zeros).join();
            for (Map.Entry<String, Tensor> output : outputs.entrySet()) {
                System.out.println("output " + output.getKey() + " " + output.getValue() + " "
                        + describe(output.getValue()));
            }
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            System.exit(2);
        } catch (RuntimeException e) {
            Throwable cause = e.getCause() instanceof SidecarException ? e.getCause() : e;
            System.err.println(cause.getMessage());
            System.exit(1);
        }
    }

    /** The values, integers as integers; a UINT64 past Long.MAX_VALUE as its double. */
    private static String describe(Tensor tensor) {
        boolean fractional = tensor.dataType().name().startsWith("FP");
        StringBuilder values = new StringBuilder("[");
        for (int i = 0; i < tensor.size(); i++) {
            values.append(i == 0 ? "" : ", ");
            if (fractional || (tensor.dataType() == DataType.UINT64 && tensor.doubleAt(i) > Long.MAX_VALUE)) {
                values.append(tensor.doubleAt(i));
            } else {
                values.append(tensor.longAt(i));
            }
        }
        return values.append(']').toString();
    }
}
