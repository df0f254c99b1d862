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

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * One sidecar for a whole test class, on a fixture model: started before its first test in a
 * temp folder of its own, stopped (SIGTERM, by pid) and the folder removed after its last.
 */
final class SidecarExtension implements BeforeAllCallback, AfterAllCallback {
    private final String model;
    private final String[] lines;
    private Path folder;
    private SidecarProcess sidecar;

    /** The sidecar serving the fixture {@code model}, with {@code lines} added to its config. */
    SidecarExtension(String model, String... lines) {
        this.model = model;
        this.lines = lines;
    }

    String endpoint() {
        return sidecar.endpoint();
    }

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        folder = Files.createTempDirectory("gpu-sidecar-test");
        sidecar = SidecarProcess.start(folder, model, lines);
    }

    @Override
    public void afterAll(ExtensionContext context) throws Exception {
        try {
            if (sidecar != null) {
                sidecar.close();
            }
        } finally {
            SidecarProcess.deleteTree(folder);
        }
    }
}
