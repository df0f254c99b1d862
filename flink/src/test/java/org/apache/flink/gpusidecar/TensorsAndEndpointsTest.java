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

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Endpoints, record shapes and tensor encoding, without a sidecar. */
class TensorsAndEndpointsTest {

    @Test
    void endpointsParseAsTheSidecarsConfigDoes() {
        assertEquals("/run/gpu-sidecar/sidecar.sock", Endpoint.parse("unix:/run/gpu-sidecar/sidecar.sock").socketPath());
        assertEquals("/tmp/s.sock", Endpoint.parse("unix:///tmp/s.sock").socketPath());
        Endpoint tcp = Endpoint.parse("127.0.0.1:50051");
        assertEquals("127.0.0.1", tcp.host());
        assertEquals(50051, tcp.port());
        assertEquals("::1", Endpoint.parse("[::1]:8001").host());
        assertEquals("sidecar-0.local", Endpoint.parse("sidecar-0.local:8001").host());
        for (String[] bad :
                List.of(
                        new String[] {"unix:relative.sock", "must be absolute"},
                        new String[] {"unix:", "the socket path is empty"},
                        new String[] {"unix://host/x.sock", "unix:/abs/path or unix:///abs/path"},
                        new String[] {"http://localhost:80", "use unix:/abs/path.sock or host:port"},
                        new String[] {"localhost", "expected unix:/abs/path.sock or host:port"},
                        new String[] {"localhost:http", "the port is not a number"},
                        new String[] {"localhost:70000", "the port must be 1 to 65535"},
                        new String[] {"::1:80", "write an IPv6 address in brackets"},
                        new String[] {"unix:/run/gpu-sidecar/", "names a folder, not a file"},
                        new String[] {"unix:/" + "x".repeat(107), "is 108 bytes, more than the 107"},
                        new String[] {"bad host:80", "\"bad host\" is not a host name or IP address"},
                        new String[] {"-host:80", "\"-host\" is not a host name"})) {
            IllegalArgumentException e =
                    assertThrows(IllegalArgumentException.class, () -> Endpoint.parse(bad[0]), bad[0]);
            assertTrue(e.getMessage().contains("\"" + bad[0] + "\""), e.getMessage());
            assertTrue(e.getMessage().contains(bad[1]), e.getMessage());
        }
    }

    @Test
    void recordShapesFollowTheModelsDimensions() {
        assertArrayEquals(new long[] {1, 4}, info(-1, 4).recordShape(4));
        assertArrayEquals(new long[] {1, 3, 2}, info(-1, -1, 2).recordShape(6));
        assertArrayEquals(new long[] {1}, info(-1).recordShape(1));
        assertArrayEquals(new long[] {1, 1}, info(-1, 1).recordShape(1));
        // Values that fit no shape of the model go flat, for the sidecar to refuse by name.
        assertArrayEquals(new long[] {1, 3}, info(-1, 4).recordShape(3));
        assertArrayEquals(new long[] {1, 5}, info(-1, -1, 2).recordShape(5));
        assertArrayEquals(new long[] {1, 6}, info(-1, -1, -1).recordShape(6));
    }

    @Test
    void recordTensorsTakeTheModelsDatatype() {
        Tensor doubles = new ModelInfo.TensorInfo("x", "FP64", new long[] {-1, 2}).recordTensor(Tensor.of(new float[] {1.5f, 2f}, 2));
        assertEquals(DataType.FP64, doubles.dataType());
        assertArrayEquals(new double[] {1.5, 2.0}, doubles.doubles());
        assertArrayEquals(new long[] {1, 2}, doubles.shape());
        Tensor ints = new ModelInfo.TensorInfo("i", "INT32", new long[] {-1, 1}).recordTensor(Tensor.of(new long[] {7}, 1));
        assertArrayEquals(new int[] {7}, ints.ints());
        IllegalArgumentException fraction =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> new ModelInfo.TensorInfo("i", "INT64", new long[] {-1}).recordTensor(Tensor.of(new float[] {0.5f}, 1)));
        assertTrue(fraction.getMessage().contains("input 'i' (INT64)"), fraction.getMessage());
        IllegalArgumentException strings =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> new ModelInfo.TensorInfo("s", "BYTES", new long[] {-1}).recordTensor(Tensor.of(new float[] {1}, 1)));
        assertTrue(
                strings.getMessage().contains("input 's' (BYTES): a BYTES tensor takes text, not FP32 values"),
                strings.getMessage());
        Tensor text = new ModelInfo.TensorInfo("s", "BYTES", new long[] {-1, 1})
                .recordTensor(Tensor.ofStrings(new String[] {"web"}, 1));
        assertArrayEquals(new String[] {"web"}, text.strings());
        assertArrayEquals(new long[] {1, 1}, text.shape());
        IllegalArgumentException numbers =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> new ModelInfo.TensorInfo("x", "FP32", new long[] {-1}).recordTensor(Tensor.ofStrings(new String[] {"1"}, 1)));
        assertTrue(numbers.getMessage().contains("text cannot feed a FP32 tensor"), numbers.getMessage());
    }

    @Test
    void rawEncodingIsLittleEndianRowMajorAndRoundTrips() {
        Tensor floats = Tensor.of(new float[] {1f, -2.5f, 3f, 4f}, 2, 2);
        byte[] raw = floats.toRawBytes();
        assertEquals(16, raw.length);
        assertEquals(0x3f800000, ByteBuffer.wrap(raw, 0, 4).order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt());
        assertEquals(floats, Tensor.fromRawBytes(DataType.FP32, new long[] {2, 2}, ByteBuffer.wrap(raw)));
        for (Tensor tensor :
                List.of(
                        Tensor.of(new long[] {Long.MIN_VALUE, 5}, 2),
                        Tensor.of(new double[] {Math.PI}, 1, 1),
                        Tensor.of(new int[] {-1, 2, 3}, 3),
                        Tensor.of(new boolean[] {true, false}, 2),
                        Tensor.ofBytes(DataType.UINT8, new byte[] {(byte) 255}, 1))) {
            assertEquals(tensor, Tensor.fromRawBytes(tensor.dataType(), tensor.shape(), ByteBuffer.wrap(tensor.toRawBytes())));
        }
        IllegalArgumentException shortData =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> Tensor.fromRawBytes(DataType.FP32, new long[] {1, 4}, ByteBuffer.allocate(12)));
        assertTrue(shortData.getMessage().contains("takes 16 bytes, but 12 came"), shortData.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Tensor.of(new float[3], 2, 2));
    }

    private static ModelInfo.TensorInfo info(long... shape) {
        return new ModelInfo.TensorInfo("x", "FP32", shape);
    }
}
