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
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.jar.JarFile;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The packaged jar, as a Flink distribution gets it: gRPC, protobuf and the stubs relocated,
 * and working on its own (with only slf4j beside it, as Flink provides) over a Unix socket.
 */
@Timeout(120)
class ShadedJarIT {
    private static final String SHADED = "org/apache/flink/gpusidecar/shaded/";

    @TempDir Path folder;

    private static Path jar() {
        Path jar = Paths.get(System.getProperty("client.jar"));
        assertTrue(Files.exists(jar), jar + " was not built");
        return jar;
    }

    @Test
    void theJarHoldsOnlyItsOwnAndRelocatedClasses() throws Exception {
        try (JarFile jar = new JarFile(jar().toFile())) {
            List<String> strays =
                    jar.stream()
                            .map(entry -> entry.getName())
                            .filter(name -> name.endsWith(".class"))
                            .filter(name -> !name.startsWith("org/apache/flink/gpusidecar/"))
                            .collect(Collectors.toList());
            assertEquals(List.of(), strays, "classes outside org.apache.flink.gpusidecar");
            assertTrue(jar.getEntry(SHADED + "io/grpc/ManagedChannel.class") != null, "relocated gRPC");
            assertTrue(
                    jar.getEntry(SHADED + "com/google/protobuf/Message.class") != null, "relocated protobuf");
            assertTrue(
                    jar.getEntry(
                                    "META-INF/native/liborg_apache_flink_gpusidecar_shaded_io_grpc_netty_shaded_netty_transport_native_epoll_x86_64.so")
                            != null,
                    "the epoll library renamed for the relocated Netty");
            assertTrue(
                    jar.getEntry("META-INF/services/org.apache.flink.table.factories.Factory") != null,
                    "the model provider's service file");
        }
    }

    @Test
    void theJarAloneInfersOverAUnixSocket() throws Exception {
        try (SidecarProcess sidecar = SidecarProcess.start(folder, "affine")) {
            String slf4j =
                    Paths.get(org.slf4j.LoggerFactory.class.getProtectionDomain().getCodeSource().getLocation().toURI())
                            .toString();
            Path output = folder.resolve("check.out");
            Process check =
                    new ProcessBuilder(
                                    Paths.get(System.getProperty("java.home"), "bin", "java").toString(),
                                    "-cp",
                                    jar() + File.pathSeparator + slf4j,
                                    SidecarCheck.class.getName(),
                                    sidecar.endpoint(),
                                    "affine")
                            .redirectErrorStream(true)
                            .redirectOutput(output.toFile())
                            .start();
            assertTrue(check.waitFor(60, TimeUnit.SECONDS), "SidecarCheck did not finish within 60 s");
            String printed = Files.readString(output);
            assertEquals(0, check.exitValue(), printed);
            assertTrue(printed.contains("repository: model affine version 1 READY"), printed);
            assertTrue(printed.contains("model affine [features FP32[-1, 4]]"), printed);
            assertTrue(printed.contains("output scores FP32[1, 3]"), printed);
            assertTrue(printed.contains("output best INT64[1]"), printed);
        }
    }
}
