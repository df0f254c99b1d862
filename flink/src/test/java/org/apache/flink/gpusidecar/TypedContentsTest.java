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

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import inference.GrpcService.InferTensorContents;
import inference.GrpcService.ModelInferResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.Test;

/**
 * An answer in typed contents (as Triton sends when asked) decodes to the same tensor as the
 * same answer in raw contents, for every datatype: the extremes of each integer type included,
 * and text of several lengths (BYTES).
 */
class TypedContentsTest {

    /** Values at the edges of each type, as longs (unsigned ones by their bits). */
    private static long[] edges(DataType type) {
        switch (type) {
            case BOOL:
                return new long[] {0, 1, 1, 0};
            case INT8:
                return new long[] {Byte.MIN_VALUE, -1, 0, Byte.MAX_VALUE};
            case UINT8:
                return new long[] {0, 1, 128, 255};
            case INT16:
                return new long[] {Short.MIN_VALUE, -1, 300, Short.MAX_VALUE};
            case UINT16:
                return new long[] {0, 1, 40_000, 65_535};
            case INT32:
                return new long[] {Integer.MIN_VALUE, -1, 70_000, Integer.MAX_VALUE};
            case UINT32:
                return new long[] {0, 1, 3_000_000_000L, 4_294_967_295L};
            case INT64:
                return new long[] {Long.MIN_VALUE, -1, 5_000_000_000L, Long.MAX_VALUE};
            case UINT64:
                return new long[] {0, 1, Long.MAX_VALUE, -1 /* 2^64 - 1 */};
            default:
                throw new AssertionError(type);
        }
    }

    private static final double[] FLOATS = {-1.5e30, -0.0, 3.25, 1.0e-40};

    private static final String[] TEXTS = {"", "pos", "Zürich 🚆", "mobile wallet"};

    @ParameterizedTest
    @EnumSource(DataType.class)
    void typedContentsDecodeAsTheirRawForm(DataType type) {
        if (type == DataType.BYTES) {
            InferTensorContents.Builder typed = InferTensorContents.newBuilder();
            for (String text : TEXTS) {
                typed.addBytesContents(ByteString.copyFromUtf8(text));
            }
            Tensor text = Tensor.ofStrings(TEXTS, 2, 2);
            Tensor fromRaw = decode(answer(type).addRawOutputContents(ByteString.copyFrom(text.toRawBytes())));
            assertEquals(text, fromRaw);
            assertEquals(text, decode(typedAnswer(type, typed)));
            return;
        }
        ByteBuffer raw = ByteBuffer.allocate(4 * type.bytesPerElement()).order(ByteOrder.LITTLE_ENDIAN);
        InferTensorContents.Builder typed = InferTensorContents.newBuilder();
        if (type == DataType.FP32 || type == DataType.FP64 || type == DataType.FP16) {
            for (double value : FLOATS) {
                if (type == DataType.FP32) {
                    raw.putFloat((float) value);
                    typed.addFp32Contents((float) value);
                } else if (type == DataType.FP64) {
                    raw.putDouble(value);
                    typed.addFp64Contents(value);
                } else {
                    raw.putShort(Half.fromFloat((float) value));
                    typed.addFp32Contents((float) value);
                }
            }
        } else {
            for (long value : edges(type)) {
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
                if (type == DataType.BOOL) {
                    typed.addBoolContents(value != 0);
                } else if (type == DataType.INT64) {
                    typed.addInt64Contents(value);
                } else if (type == DataType.UINT64) {
                    typed.addUint64Contents(value);
                } else if (type.name().startsWith("UINT")) {
                    typed.addUintContents((int) value);
                } else {
                    typed.addIntContents((int) value);
                }
            }
        }
        raw.flip();
        Tensor fromRaw = decode(answer(type).addRawOutputContents(ByteString.copyFrom(raw)));
        if (type == DataType.FP16) {
            // The protocol has no typed field for FP16: a clear refusal, never a guess.
            IllegalArgumentException refused =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> decode(typedAnswer(type, typed)));
            assertTrue(refused.getMessage().contains("FP16"), refused.getMessage());
            assertEquals(3.25, fromRaw.doubleAt(2));
            return;
        }
        assertEquals(fromRaw, decode(typedAnswer(type, typed)), type.name());
        if (type != DataType.BOOL && type != DataType.BYTES && !type.name().startsWith("FP")) {
            long[] expected = edges(type);
            for (int i = 0; i < expected.length; i++) {
                double wanted = type == DataType.UINT64 && expected[i] < 0
                        ? 18_446_744_073_709_551_615.0
                        : type == DataType.UINT32 || type == DataType.UINT16 || type == DataType.UINT8
                                ? expected[i] & ((1L << (8 * type.bytesPerElement())) - 1)
                                : expected[i];
                assertEquals(wanted, fromRaw.doubleAt(i), type + " value " + i);
            }
        }
    }

    @Test
    void halfPrecisionRoundsAsIeeeDoes() {
        float[] values = {1.0f, -2.0f, 65504f, 0x1p-24f, 0x1p-14f, 0.1f, 65520f, Float.NaN};
        int[] bits = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x2e66, 0x7c00, 0x7e00};
        for (int i = 0; i < values.length; i++) {
            assertEquals(bits[i], Half.fromFloat(values[i]) & 0xffff, "bits of " + values[i]);
        }
        for (int i = 0; i < 6; i++) {
            assertEquals(values[i], Half.toFloat((short) bits[i]), 1e-3 * Math.abs(values[i]));
        }
        assertEquals(Float.POSITIVE_INFINITY, Half.toFloat((short) 0x7c00));
    }

    private static ModelInferResponse.Builder answer(DataType type) {
        return ModelInferResponse.newBuilder()
                .addOutputs(
                        ModelInferResponse.InferOutputTensor.newBuilder()
                                .setName("y")
                                .setDatatype(type.name())
                                .addShape(2)
                                .addShape(2));
    }

    private static ModelInferResponse.Builder typedAnswer(DataType type, InferTensorContents.Builder typed) {
        ModelInferResponse.Builder answer = answer(type);
        answer.getOutputsBuilder(0).setContents(typed);
        return answer;
    }

    private static Tensor decode(ModelInferResponse.Builder answer) {
        Map<String, Tensor> outputs = KServeCodec.decode(answer.build());
        return outputs.get("y");
    }
}
