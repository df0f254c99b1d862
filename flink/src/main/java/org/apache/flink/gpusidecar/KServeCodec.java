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

import com.google.protobuf.UnsafeByteOperations;
import inference.GrpcService.InferTensorContents;
import inference.GrpcService.ModelInferRequest;
import inference.GrpcService.ModelInferResponse;
import inference.GrpcService.ModelMetadataResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The Open Inference Protocol's wire format (KServe v2, as Triton and gpu-sidecar speak it):
 * requests with raw little-endian contents, answers with raw or typed contents, model metadata,
 * and the status code a stream's error message starts with. Stateless.
 */
final class KServeCodec {
    private KServeCodec() {}

    /** A request for {@code model} with {@code id}, its inputs as raw contents. */
    static ModelInferRequest request(
            String model, String version, String id, Map<String, Tensor> inputs) {
        ModelInferRequest.Builder request =
                ModelInferRequest.newBuilder().setModelName(model).setModelVersion(version).setId(id);
        for (Map.Entry<String, Tensor> input : inputs.entrySet()) {
            Tensor tensor = input.getValue();
            ModelInferRequest.InferInputTensor.Builder spec =
                    request.addInputsBuilder()
                            .setName(input.getKey())
                            .setDatatype(tensor.dataType().name());
            for (long dimension : tensor.shape()) {
                spec.addShape(dimension);
            }
            request.addRawInputContents(UnsafeByteOperations.unsafeWrap(tensor.toRawBytes()));
        }
        return request.build();
    }


    static ModelInfo modelInfo(ModelMetadataResponse metadata) {
        List<ModelInfo.TensorInfo> inputs = new ArrayList<>();
        for (ModelMetadataResponse.TensorMetadata tensor : metadata.getInputsList()) {
            inputs.add(tensorInfo(tensor));
        }
        List<ModelInfo.TensorInfo> outputs = new ArrayList<>();
        for (ModelMetadataResponse.TensorMetadata tensor : metadata.getOutputsList()) {
            outputs.add(tensorInfo(tensor));
        }
        return new ModelInfo(metadata.getName(), inputs, outputs);
    }

    private static ModelInfo.TensorInfo tensorInfo(ModelMetadataResponse.TensorMetadata tensor) {
        long[] shape = tensor.getShapeList().stream().mapToLong(Long::longValue).toArray();
        return new ModelInfo.TensorInfo(tensor.getName(), tensor.getDatatype(), shape);
    }

    /** The output tensors of an answer, from its raw contents or its typed contents. */
    static Map<String, Tensor> decode(ModelInferResponse response) {
        Map<String, Tensor> outputs = new LinkedHashMap<>();
        boolean raw = response.getRawOutputContentsCount() > 0;
        if (raw && response.getRawOutputContentsCount() != response.getOutputsCount()) {
            throw new IllegalArgumentException(
                    response.getOutputsCount() + " outputs but "
                            + response.getRawOutputContentsCount() + " raw contents");
        }
        for (int i = 0; i < response.getOutputsCount(); i++) {
            ModelInferResponse.InferOutputTensor output = response.getOutputs(i);
            DataType type = DataType.fromProtocol(output.getDatatype());
            long[] shape = output.getShapeList().stream().mapToLong(Long::longValue).toArray();
            Tensor tensor =
                    raw
                            ? Tensor.fromRawBytes(
                                    type, shape, response.getRawOutputContents(i).asReadOnlyByteBuffer())
                            : Tensor.fromRawBytes(type, shape, rawOf(type, output.getName(), output.getContents()));
            outputs.put(output.getName(), tensor);
        }
        return outputs;
    }

    /**
     * Typed contents in the raw encoding of {@code type}: each protocol field read as the type
     * it carries (INT8, INT16 and INT32 in {@code int_contents}, the unsigned ones up to 32 bits
     * in {@code uint_contents}, ...) and written at the type's width. FP16 has no typed field
     * in the protocol: a server must send it raw.
     */
    static ByteBuffer rawOf(DataType type, String name, InferTensorContents contents) {
        if (type == DataType.BYTES) {
            java.io.ByteArrayOutputStream raw = new java.io.ByteArrayOutputStream();
            for (com.google.protobuf.ByteString element : contents.getBytesContentsList()) {
                raw.writeBytes(allocate(4).putInt(element.size()).array());
                raw.writeBytes(element.toByteArray());
            }
            return ByteBuffer.wrap(raw.toByteArray());
        }
        if (type == DataType.FP16) {
            throw new IllegalArgumentException(
                    "output " + name + " is FP16 in typed contents, which the protocol does not"
                            + " define (FP16 travels as raw_output_contents only)");
        }
        long[] integers;
        switch (type) {
            case FP32: {
                ByteBuffer raw = allocate(contents.getFp32ContentsCount() * 4);
                contents.getFp32ContentsList().forEach(raw::putFloat);
                return raw.flip();
            }
            case FP64: {
                ByteBuffer raw = allocate(contents.getFp64ContentsCount() * 8);
                contents.getFp64ContentsList().forEach(raw::putDouble);
                return raw.flip();
            }
            case BOOL: {
                ByteBuffer raw = allocate(contents.getBoolContentsCount());
                contents.getBoolContentsList().forEach(value -> raw.put((byte) (value ? 1 : 0)));
                return raw.flip();
            }
            case INT64:
                integers = contents.getInt64ContentsList().stream().mapToLong(Long::longValue).toArray();
                break;
            case UINT64:
                integers = contents.getUint64ContentsList().stream().mapToLong(Long::longValue).toArray();
                break;
            case UINT8:
            case UINT16:
            case UINT32:
                integers =
                        contents.getUintContentsList().stream()
                                .mapToLong(Integer::toUnsignedLong)
                                .toArray();
                break;
            default:
                integers = contents.getIntContentsList().stream().mapToLong(Integer::longValue).toArray();
        }
        ByteBuffer raw = allocate(integers.length * type.bytesPerElement());
        for (long value : integers) {
            switch (type.bytesPerElement()) {
                case 1:
                    raw.put((byte) value);
                    break;
                case 2:
                    raw.putShort((short) value);
                    break;
                case 4:
                    raw.putInt((int) value);
                    break;
                default:
                    raw.putLong(value);
            }
        }
        return raw.flip();
    }

    private static ByteBuffer allocate(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** The status code an answer's "CODE: message" starts with, or UNKNOWN. */
    static String codeOf(String errorMessage) {
        int colon = errorMessage.indexOf(':');
        if (colon <= 0) {
            return "UNKNOWN";
        }
        for (int i = 0; i < colon; i++) {
            char c = errorMessage.charAt(i);
            if (!(c >= 'A' && c <= 'Z') && c != '_') {
                return "UNKNOWN";
            }
        }
        return errorMessage.substring(0, colon);
    }

    /** gRPC's refusal of a message over its receive limit: "larger than max (N vs. M)". */
    private static final java.util.regex.Pattern LARGER_THAN_MAX =
            java.util.regex.Pattern.compile("larger than max \\((\\d+) vs\\. (\\d+)\\)");

    /**
     * The receive limit M of a status by which gRPC refused a message too large to take in
     * ("Received message larger than max (N vs. M)", RESOURCE_EXHAUSTED), or -1 for any other
     * status (a full queue is RESOURCE_EXHAUSTED too, and is worth a retry).
     */
    static long receiveLimitOf(io.grpc.Status status) {
        if (status.getCode() != io.grpc.Status.Code.RESOURCE_EXHAUSTED || status.getDescription() == null) {
            return -1;
        }
        java.util.regex.Matcher matcher = LARGER_THAN_MAX.matcher(status.getDescription());
        return matcher.find() ? Long.parseLong(matcher.group(2)) : -1;
    }
}
