#!/usr/bin/env python3
# Copyright 2026 The gpu-sidecar Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Triton's own Python client over TLS, unmodified (`ssl=True`), against a gpu-sidecar that
serves the `simple` fixture on a TCP endpoint with [sidecar.rpc.tls]; exits non-zero on the
first disagreement with what ONNX Runtime computed in process:

    python3 tests/clients/tls_check.py 127.0.0.1:PORT CA.pem [CLIENT.pem CLIENT.key]

With a client certificate and key, the client presents them (the sidecar requires one when
client-ca-file is set).
"""

import json
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient

HERE = os.path.dirname(os.path.abspath(__file__))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    target, ca = sys.argv[1], sys.argv[2]
    identity = {}
    if len(sys.argv) > 4:
        identity = {"certificate_chain": sys.argv[3], "private_key": sys.argv[4]}
    client = grpcclient.InferenceServerClient(url=target, ssl=True, root_certificates=ca, **identity)
    assert client.is_server_live(), "not live"
    assert client.is_model_ready("simple"), "simple not ready"
    with open(os.path.join(HERE, "..", "fixtures", "models", "simple.expected.json")) as f:
        record = json.load(f)

    def tensor(part, name):
        t = record[part][name]
        return np.array(t["data"], dtype=np.int32).reshape(t["shape"])

    inputs = []
    for name in ("INPUT0", "INPUT1"):
        values = tensor("inputs", name)
        infer_input = grpcclient.InferInput(name, list(values.shape), "INT32")
        infer_input.set_data_from_numpy(values)
        inputs.append(infer_input)
    result = client.infer("simple", inputs)
    for name in ("OUTPUT0", "OUTPUT1"):
        got = result.as_numpy(name)
        want = tensor("outputs", name)
        if not np.array_equal(got, want):
            sys.exit(f"{name}: got {got.tolist()}, ONNX Runtime computed {want.tolist()}")
    client.close()
    print("tls check passed: ssl=True" + (" with a client certificate" if identity else ""))


if __name__ == "__main__":
    main()
