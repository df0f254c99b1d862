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

"""Talks to a gpu-sidecar serving tests/fixtures/models/affine.onnx with Triton's own Python
client (tritonclient[grpc], unmodified), and exits non-zero on the first disagreement:

    python3 tests/clients/tritonclient_check.py unix:/tmp/s.sock   (or host:port)
    python3 tests/clients/tritonclient_check.py unix:/tmp/s.sock strings
        (a sidecar serving tests/fixtures/models/strings.onnx: BYTES in, the same text out)
    python3 tests/clients/tritonclient_check.py unix:/tmp/s.sock simple_string
        (a sidecar serving tests/fixtures/models/simple_string.onnx: numbers as strings)
    python3 tests/clients/tritonclient_check.py unix:/tmp/s.sock repository
        (a sidecar with a repository in explicit control: "affine" loaded at start, version 1
        the affine fixture; "second" not loaded, version 1 affine_v2's fixture)
"""

import json
import os
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import (InferenceServerException, serialize_byte_tensor,
                                serialized_byte_size)

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "affine"


def check(condition, what):
    if not condition:
        sys.exit(f"tritonclient check failed: {what}")


def regions(client, sizes):
    """Fresh system shared memory regions of `sizes` (name -> bytes), registered; returns
    their handles. Keys are per process, so that checks running at once do not meet."""
    client.unregister_system_shared_memory()
    handles = {}
    for name, size in sizes.items():
        key = f"/gpu_sidecar_check_{os.getpid()}_{name}"
        handles[name] = shm.create_shared_memory_region(name, key, size)
        client.register_system_shared_memory(name, key, size)
    return handles


def drop_regions(client, handles):
    client.unregister_system_shared_memory()
    for handle in handles.values():
        shm.destroy_shared_memory_region(handle)


def check_shared_memory(client, features, scores, best):
    """Inputs read from, and outputs written into, system shared memory (Triton's
    extension, through the client's own helpers); and its refusals, one by one."""
    metadata = client.get_server_metadata(as_json=True)
    check("system_shared_memory" in metadata["extensions"], f"extensions {metadata}")
    scores_size, best_size = scores.nbytes, best.nbytes
    handles = regions(client, {"in": features.nbytes, "out": scores_size + best_size})
    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    check(set(status) == {"in", "out"} and int(status["in"]["byte_size"]) == features.nbytes,
          f"status {status}")
    shm.set_shared_memory_region(handles["in"], [features])
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_shared_memory("in", features.nbytes)
    wanted = [grpcclient.InferRequestedOutput("scores"), grpcclient.InferRequestedOutput("best")]
    wanted[0].set_shared_memory("out", scores_size)
    wanted[1].set_shared_memory("out", best_size, offset=scores_size)
    result = client.infer(MODEL, [tensor], outputs=wanted)
    check(all(len(raw) == 0 for raw in result.get_response().raw_output_contents),
          "the outputs are in shared memory, not in the message")
    shape = list(result.get_output("scores").shape)
    got = shm.get_contents_as_numpy(handles["out"], np.float32, shape)
    check(np.allclose(got, scores, rtol=1e-5, atol=1e-6), "scores read from shared memory")
    got = shm.get_contents_as_numpy(handles["out"], np.int64, list(result.get_output("best").shape),
                                    offset=scores_size)
    check(list(got) == list(best), f"best read from shared memory: {got}")

    def infer_with(input_region="in", input_size=features.nbytes, output_size=scores_size):
        tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
        tensor.set_shared_memory(input_region, input_size)
        out = grpcclient.InferRequestedOutput("scores")
        out.set_shared_memory("out", output_size)
        return lambda: client.infer(MODEL, [tensor], outputs=[out])

    for message, words in [
        (refusal(infer_with(input_region="nowhere")),
         "Unable to find system shared memory region: 'nowhere'"),
        (refusal(infer_with(input_size=features.nbytes * 2)),
         "Invalid offset + byte size for shared memory region: 'in'"),
        (refusal(infer_with(output_size=8)), "is too small for output \"scores\""),
        (refusal(lambda: client.register_system_shared_memory("in", "/absent_region", 8)),
         "shared memory region 'in' already in manager"),
        (refusal(lambda: client.register_system_shared_memory("other", "/gpu_sidecar_absent", 8)),
         "Unable to open system shared memory region: '/gpu_sidecar_absent'"),
    ]:
        check(message.startswith(words) or words in message, f"{message!r} lacks {words!r}")
    drop_regions(client, handles)
    check(client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {},
          "every region unregistered")


def check_strings(url):
    """BYTES (text) in and out, through the client's own BYTES encoding, both ways."""
    client = grpcclient.InferenceServerClient(url)
    texts = np.array(["", "pos", "mobile wallet", "Zürich 🚆".encode(), b"web"], dtype=np.object_)
    text = grpcclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(texts)
    same = client.infer("strings", [text]).as_numpy("same")
    want = [t if isinstance(t, bytes) else t.encode() for t in texts]
    check(list(same) == want, f"strings back {list(same)} != {want}")
    metadata = client.get_model_metadata("strings", as_json=True)
    check(metadata["inputs"][0]["datatype"] == "BYTES", f"metadata {metadata}")
    # Strings through system shared memory, in Triton's serialised form, both ways.
    serialized = serialize_byte_tensor(np.array(want, dtype=np.object_))
    size = serialized_byte_size(serialized)
    handles = regions(client, {"texts_in": size, "texts_out": size})
    shm.set_shared_memory_region(handles["texts_in"], [serialized])
    text = grpcclient.InferInput("text", [len(texts)], "BYTES")
    text.set_shared_memory("texts_in", size)
    out = grpcclient.InferRequestedOutput("same")
    out.set_shared_memory("texts_out", size)
    result = client.infer("strings", [text], outputs=[out])
    got = shm.get_contents_as_numpy(handles["texts_out"], np.object_, [len(texts)])
    check(list(got) == want, f"strings back through shared memory {list(got)} != {want}")
    drop_regions(client, handles)
    print("tritonclient strings check passed over", url)


def refusal(call):
    """The message of the InferenceServerException that `call` raises."""
    try:
        call()
    except InferenceServerException as e:
        return e.message()
    check(False, "refused")


def check_triton_wording(client, features):
    """The refusals that Triton's clients and tools match begin with Triton's own words."""
    def affine(name="features", datatype="FP32", data=features[:2], version=""):
        tensor = grpcclient.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        return lambda: client.infer(MODEL, [tensor], model_version=version)

    for message, words in [
        (refusal(lambda: client.get_model_metadata("no-such-model")),
         "Request for unknown model: 'no-such-model' is not found"),
        (refusal(lambda: client.get_model_config("no-such-model")),
         "Request for unknown model: 'no-such-model' is not found"),
        (refusal(affine(version="7")), f"Request for unknown model: '{MODEL}' version 7 is not found"),
        (refusal(affine(name="pixels")), f"unexpected inference input 'pixels' for model '{MODEL}'"),
        (refusal(affine(data=features[:2, :3])),
         f"unexpected shape for input 'features' for model '{MODEL}'. Expected [-1,4], got [2,3]"),
        (refusal(affine(datatype="FP64", data=features[:2].astype(np.float64))),
         f"inference input 'features' data-type is 'FP64', but model '{MODEL}' expects 'FP32'"),
    ]:
        check(message.startswith(words), f"{message!r} does not begin with Triton's {words!r}")


def check_simple_string(url):
    """Numbers written as strings (Triton's simple_string): BYTES in, parsed by the model,
    BYTES out, equal to what ONNX Runtime computed in process."""
    client = grpcclient.InferenceServerClient(url)
    path = os.path.join(HERE, "..", "fixtures", "models", "simple_string.expected.json")
    with open(path) as f:
        expected = json.load(f)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = expected["inputs"][name]
        data = np.array([t.encode() for t in tensor["data"]], dtype=np.object_).reshape(tensor["shape"])
        inputs.append(grpcclient.InferInput(name, list(data.shape), "BYTES"))
        inputs[-1].set_data_from_numpy(data)
    result = client.infer("simple_string", inputs)
    for name in ("OUTPUT0", "OUTPUT1"):
        got = [v.decode() for v in result.as_numpy(name).ravel()]
        check(got == expected["outputs"][name]["data"], f"{name}: {got}")
    print("tritonclient simple_string check passed over", url)


def load_expected(fixture):
    with open(os.path.join(HERE, "..", "fixtures", "models", fixture + ".expected.json")) as f:
        expected = json.load(f)
    features = np.array(expected["inputs"]["features"]["data"], dtype=np.float32).reshape(
        expected["inputs"]["features"]["shape"])
    scores = np.array(expected["outputs"]["scores"]["data"], dtype=np.float32).reshape(
        expected["outputs"]["scores"]["shape"])
    return features, scores


def refused_not_found(call, name, what):
    """Checks that `call` fails with NOT_FOUND, its message naming `name`."""
    try:
        call()
    except InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND" and name in e.message(),
              f"{what}: {e.status()} {e.message()}")
        return
    check(False, f"{what} is refused")


def check_config_override(client, features, scores):
    """load_model with a config override (Triton's ModelConfig as JSON): applied to that load
    and shown by ModelConfig; a malformed one, or model files in the request, fail with
    "failed to load" and leave what serves as it was."""
    override = {
        "max_batch_size": 2,
        "dynamic_batching": {"max_queue_delay_microseconds": 500,
                             "default_queue_policy": {"max_queue_size": 8}},
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
    }
    client.load_model("second", config=json.dumps(override))

    def shown():
        config = client.get_model_config("second", as_json=True)["config"]
        return (int(config["max_batch_size"]), config["instance_group"][0]["count"],
                int(config["dynamic_batching"]["max_queue_delay_microseconds"]),
                int(config["dynamic_batching"]["default_queue_policy"]["max_queue_size"]))
    check(shown() == (2, 2, 500, 8), f"the override in ModelConfig: {shown()}")
    two = grpcclient.InferInput("features", [2, features.shape[1]], "FP32")
    two.set_data_from_numpy(features[:2])
    got = client.infer("second", [two]).as_numpy("scores")
    check(np.allclose(got, scores[:2], rtol=1e-5, atol=1e-6), "second's scores after the override")
    for bad, words in [
        ('{"max_batch_size": ', "is not JSON"),
        ('{"sequence_batching": {}}', 'sets "sequence_batching"'),
        ('{"version_policy": {"specific": {"versions": [0]}}}', "versions 0"),
    ]:
        message = refusal(lambda: client.load_model("second", config=bad))
        check("failed to load 'second'" in message and words in message, f"{bad}: {message}")
    message = refusal(lambda: client.load_model(
        "second", config=json.dumps(override), files={"file:1/model.onnx": b"not a model"}))
    check("failed to load 'second'" in message and "model files" in message, message)
    check(client.is_model_ready("second") and shown() == (2, 2, 500, 8),
          f"what serves stays after refused loads: {shown()}")


def check_repository(url):
    """The repository extension through the client's own calls: index, load, unload."""
    client = grpcclient.InferenceServerClient(url)
    index = {(m.get("name"), m.get("version", ""), m.get("state", ""))
             for m in client.get_model_repository_index(as_json=True)["models"]}
    check(("affine", "1", "READY") in index, f"affine READY in the index {index}")
    check(any(name == "second" and state != "READY" for name, _, state in index),
          f"second known and not ready in the index {index}")
    check(client.is_model_ready("affine"), "affine ready")
    check(not client.is_model_ready("second"), "second not ready before its load")
    check(client.is_server_ready(), "the server is ready with second not loaded")
    features, scores_v2 = load_expected("affine_v2")
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    refused_not_found(lambda: client.infer("second", [tensor]), "second", "a model not loaded")
    client.load_model("second")
    check(client.is_model_ready("second"), "second ready after load_model")
    check(client.is_model_ready("second", "1"), "second version 1 ready")
    check(not client.is_model_ready("second", "2"), "second version 2 not ready (not there)")
    got = client.infer("second", [tensor]).as_numpy("scores")
    check(np.allclose(got, scores_v2, rtol=1e-5, atol=1e-6), "second's scores")
    check_config_override(client, features, scores_v2)
    ready = {m["name"] for m in client.get_model_repository_index(as_json=True)["models"]
             if m.get("state") == "READY"}
    check(ready == {"affine", "second"}, f"ready index {ready}")
    client.unload_model("second")
    check(not client.is_model_ready("second"), "second not ready after unload_model")
    check(client.is_server_ready(), "an explicit unload leaves the server ready")
    refused_not_found(lambda: client.infer("second", [tensor]), "second", "an unloaded model")
    try:
        client.load_model("no-such-model")
        check(False, "an unknown model's load is refused")
    except InferenceServerException as e:
        check("no-such-model" in e.message(), f"unknown load: {e.message()}")
    print("tritonclient repository check passed over", url)


def main():
    url = sys.argv[1]
    if sys.argv[2:] == ["strings"]:
        return check_strings(url)
    if sys.argv[2:] == ["repository"]:
        return check_repository(url)
    if sys.argv[2:] == ["simple_string"]:
        return check_simple_string(url)
    with open(os.path.join(HERE, "..", "fixtures", "models", "affine.expected.json")) as f:
        expected = json.load(f)
    features = np.array(expected["inputs"]["features"]["data"], dtype=np.float32).reshape(
        expected["inputs"]["features"]["shape"])
    scores = np.array(expected["outputs"]["scores"]["data"], dtype=np.float32).reshape(
        expected["outputs"]["scores"]["shape"])
    best = np.array(expected["outputs"]["best"]["data"], dtype=np.int64)

    client = grpcclient.InferenceServerClient(url)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    check(client.is_model_ready(MODEL), "model ready")
    metadata = client.get_model_metadata(MODEL, as_json=True)
    check(metadata["platform"] == "onnxruntime_onnx", f"platform in {metadata}")
    check(metadata["inputs"][0]["shape"] == ["-1", "4"], f"input shape in {metadata}")
    config = client.get_model_config(MODEL, as_json=True)["config"]
    check(int(config["max_batch_size"]) > 0 and "dynamic_batching" in config, f"config {config}")
    # One value per row ([-1] in the metadata): dims [1] and an empty reshape, as Triton writes it.
    outputs = {output["name"]: output for output in config["output"]}
    check(outputs["best"]["dims"] == ["1"] and outputs["best"].get("reshape") == {},
          f"best in {config['output']}")
    check(outputs["scores"]["dims"] == ["3"] and "reshape" not in outputs["scores"],
          f"scores in {config['output']}")

    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    result = client.infer(MODEL, [tensor], request_id="unary")
    check(result.get_response().id == "unary", "the id is echoed")
    check(np.allclose(result.as_numpy("scores"), scores, rtol=1e-5, atol=1e-6), "unary scores")
    check((result.as_numpy("best") == best).all(), "unary best")
    only_best = client.infer(MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput("best")])
    check(only_best.as_numpy("scores") is None, "only the requested output")
    # The classification extension, read by Triton's own client: "score:index", best first.
    top = client.infer(MODEL, [tensor], outputs=[
        grpcclient.InferRequestedOutput("scores", class_count=2)]).as_numpy("scores")
    want = [[f"{row[i]:.6f}:{i}" for i in np.argsort(-row, kind="stable")[:2]] for row in scores]
    got = [[element.decode() for element in row] for row in top]
    check(got == want, f"classification {got} != {want}")

    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for row in range(features.shape[0]):
        one = grpcclient.InferInput("features", [1, 4], "FP32")
        one.set_data_from_numpy(features[row:row + 1])
        client.async_stream_infer(MODEL, [one], request_id=str(row))
    bad = grpcclient.InferInput("features", [1, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    client.async_stream_infer(MODEL, [bad], request_id="bad")
    seen, errors = set(), []
    for _ in range(features.shape[0] + 1):
        result, error = answers.get(timeout=20)
        if error is not None:
            errors.append(str(error))
            continue
        row = int(result.get_response().id)
        check(np.allclose(result.as_numpy("scores")[0], scores[row], rtol=1e-5, atol=1e-6),
              f"stream row {row}")
        seen.add(row)
    client.stop_stream()
    check(seen == set(range(features.shape[0])), f"every row answered once: {seen}")
    check(len(errors) == 1 and "INVALID_ARGUMENT" in errors[0] and "features" in errors[0],
          f"the bad request's error: {errors}")

    try:
        client.infer("no-such-model", [tensor])
        check(False, "an unknown model is refused")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND", f"unknown model status {e.status()}")
        check(e.message().startswith("Request for unknown model: 'no-such-model' is not found"),
              f"Triton's words for an unknown model: {e.message()}")
    check_triton_wording(client, features)
    check_shared_memory(client, features[:2], scores[:2], best[:2])
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    check(int(stats["inference_stats"]["success"]["count"]) >= 2 + features.shape[0],
          f"statistics {stats}")
    check(int(stats["execution_count"]) > 0, f"statistics {stats}")
    print("tritonclient check passed over", url)


if __name__ == "__main__":
    main()
