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

"""Does what the example programs of Triton's client repository do (written here, not copied),
with Triton's own Python client, against a gpu-sidecar serving the `simple` and `simple_int8`
fixtures (INPUT0, INPUT1 [-1, 16] in; their sum and difference out), and exits non-zero on
the first disagreement with what ONNX Runtime computed in process:

    python3 tests/clients/triton_examples_check.py unix:/tmp/s.sock   (or host:port)

Synchronous, callback and asyncio inference; a client with keepalive and channel options,
headers, request ids and timeouts; requests built by hand with explicit INT32 and INT8
contents (the protocol's typed fields, no raw bytes).
"""

import asyncio
import json
import os
import queue
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def check(condition, what):
    if not condition:
        sys.exit(f"triton examples check failed: {what}")


def expected(model):
    with open(os.path.join(HERE, "..", "fixtures", "models", model + ".expected.json")) as f:
        record = json.load(f)
    np_type = np.int32 if model == "simple" else np.int8

    def tensor(part, name):
        t = record[part][name]
        return np.array(t["data"], dtype=np_type).reshape(t["shape"])
    inputs = [tensor("inputs", n) for n in ("INPUT0", "INPUT1")]
    outputs = [tensor("outputs", n) for n in ("OUTPUT0", "OUTPUT1")]
    return inputs, outputs, "INT32" if np_type == np.int32 else "INT8"


def infer_inputs(module, inputs, datatype):
    tensors = []
    for name, data in zip(("INPUT0", "INPUT1"), inputs):
        tensors.append(module.InferInput(name, list(data.shape), datatype))
        tensors[-1].set_data_from_numpy(data)
    return tensors


def check_result(result, outputs, what):
    for name, want in zip(("OUTPUT0", "OUTPUT1"), outputs):
        got = result.as_numpy(name)
        check(got is not None and np.array_equal(got, want), f"{what}: {name} {got} != {want}")


def sync_and_callback(url):
    client = grpcclient.InferenceServerClient(url)
    for model in ("simple", "simple_int8"):
        inputs, outputs, datatype = expected(model)
        wanted = [grpcclient.InferRequestedOutput(n) for n in ("OUTPUT0", "OUTPUT1")]
        check_result(client.infer(model, infer_inputs(grpcclient, inputs, datatype), outputs=wanted),
                     outputs, f"{model} infer")
        answers = queue.Queue()
        for _ in range(4):
            client.async_infer(model, infer_inputs(grpcclient, inputs, datatype),
                               lambda result, error: answers.put((result, error)))
        for _ in range(4):
            result, error = answers.get(timeout=30)
            check(error is None, f"{model} async_infer: {error}")
            check_result(result, outputs, f"{model} async_infer")
    client.close()


async def with_asyncio(url):
    async with aioclient.InferenceServerClient(url) as client:
        check(await client.is_server_live(), "aio: server live")
        check(await client.is_model_ready("simple"), "aio: simple ready")
        inputs, outputs, datatype = expected("simple")
        results = await asyncio.gather(*[
            client.infer("simple", infer_inputs(aioclient, inputs, datatype)) for _ in range(8)])
        for result in results:
            check_result(result, outputs, "aio infer")


def custom_arguments(url):
    """Keepalive pings, channel arguments, headers, request ids and a client timeout."""
    keepalive = grpcclient.KeepAliveOptions(
        keepalive_time_ms=2000, keepalive_timeout_ms=1000,
        keepalive_permit_without_calls=True, http2_max_pings_without_data=2)
    client = grpcclient.InferenceServerClient(
        url, keepalive_options=keepalive,
        channel_args=[("grpc.max_receive_message_length", 8 << 20)])
    inputs, outputs, datatype = expected("simple")
    result = client.infer("simple", infer_inputs(grpcclient, inputs, datatype),
                          request_id="request-7", headers={"x-caller": "examples-check"},
                          client_timeout=30.0)
    check(result.get_response().id == "request-7", f"request id {result.get_response().id}")
    check_result(result, outputs, "custom arguments")
    check(client.is_server_ready(headers={"x-caller": "examples-check"}), "ready with headers")
    client.close()


def explicit_contents(url):
    """Requests built with the generated stubs, their inputs in the typed int_contents."""
    target = url if url.startswith("unix:") else url
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    for model in ("simple", "simple_int8"):
        inputs, outputs, datatype = expected(model)
        request = service_pb2.ModelInferRequest(model_name=model)
        for name, data in zip(("INPUT0", "INPUT1"), inputs):
            tensor = service_pb2.ModelInferRequest().InferInputTensor(
                name=name, datatype=datatype, shape=list(data.shape))
            tensor.contents.int_contents[:] = [int(v) for v in data.ravel()]
            request.inputs.extend([tensor])
        response = stub.ModelInfer(request)
        np_type = np.int32 if datatype == "INT32" else np.int8
        for i, want in enumerate(outputs):
            got = np.frombuffer(response.raw_output_contents[i], dtype=np_type).reshape(want.shape)
            check(np.array_equal(got, want), f"{model} explicit contents: output {i} {got}")


def main():
    url = sys.argv[1]
    sync_and_callback(url)
    asyncio.run(with_asyncio(url))
    custom_arguments(url)
    explicit_contents(url)
    print("triton examples check passed over", url)


if __name__ == "__main__":
    main()
