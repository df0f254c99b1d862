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

"""Renders the panels of gpu-sidecar.json to a PNG from real data: spawns a sidecar (a model
repository of two models), a Prometheus that scrapes it every 2 s, and gpu-sidecar-bench
load against it (a new version of one model published a third of the way in), then asks
Prometheus for every panel's queries over the run, as Grafana would, and draws them in the
dashboard's own grid. `bin/dev.sh dashboard-png` runs it with the release build:

    python3 deploy/grafana/render.py --sidecar target/release/gpu-sidecar \\
        --bench target/release/gpu-sidecar-bench --runtime .onnxruntime/libonnxruntime.so \\
        --models tests/fixtures/models/affine.onnx,/tmp/small_mlp.onnx --out deploy/grafana/gpu-sidecar.png

Needs matplotlib, and Prometheus on the PATH (Debian's package).
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEP = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {seconds} s")


def query_range(prometheus, expr, start, end):
    url = f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": STEP}
    )
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = json.load(answer)
    if body["status"] != "success":
        raise SystemExit(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template or "").strip()


def scaled(values, unit):
    if unit == "bytes":
        return [v / 2**20 for v in values], "MiB"
    if unit == "s":
        return [v * 1e3 for v in values], "ms"
    if unit == "percentunit":
        return [v * 100 for v in values], "%"
    return values, {"reqps": "req/s", "ops": "ops/s", "short": ""}.get(unit, "")


def draw(dashboard, prometheus, start, end, out):
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_height = 0.42
    figure = plt.figure(figsize=(20, rows * unit_height))
    figure.patch.set_facecolor("#181b1f")
    for panel in panels:
        grid = panel["gridPos"]
        left, width = grid["x"] / 24, grid["w"] / 24
        bottom = 1 - (grid["y"] + grid["h"]) / rows
        height = grid["h"] / rows
        if panel["type"] == "row":
            figure.text(left + 0.005, bottom + height / 2, panel["title"], color="#d8d9da",
                        fontsize=13, fontweight="bold", va="center")
            continue
        axes = figure.add_axes([left + 0.03, bottom + 0.012, width - 0.04, height - 0.035])
        axes.set_facecolor("#111217")
        for side in axes.spines.values():
            side.set_color("#33363c")
        axes.tick_params(colors="#9fa1a6", labelsize=7)
        axes.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        # A target with a unit of its own (an override by refId) goes on a right-hand axis.
        own_units, own_labels = {}, {}
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            if override["matcher"]["id"] == "byFrameRefID":
                properties = {prop["id"]: prop["value"] for prop in override["properties"]}
                if "unit" in properties:
                    own_units[override["matcher"]["options"]] = properties["unit"]
                    own_labels[properties["unit"]] = properties.get("custom.axisLabel", "")
        series = []
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "10s").replace("$job", "gpu-sidecar")
                    .replace("$instance", ".*").replace("$model", ".*"))
            for result in query_range(prometheus, expr, start, end):
                times = [float(t) - start for t, _ in result["values"]]
                values = [float(v) for _, v in result["values"]]
                series.append((legend(target.get("legendFormat"), result["metric"]), times, values,
                               own_units.get(target.get("refId"))))
        if panel["type"] == "stat":
            axes.set_xticks([])
            axes.set_yticks([])
            text = "  ".join(f"{name}: {values[-1]:g}" for name, _, values, _ in series if values) or "no data"
            axes.text(0.5, 0.45, text, color="#73bf69", fontsize=12, ha="center", va="center",
                      transform=axes.transAxes, wrap=True)
            continue
        shown = 0
        right = None
        for name, times, values, own_unit in series:
            on = axes
            if own_unit is not None:
                if right is None:
                    right = axes.twinx()
                    right.tick_params(colors="#9fa1a6", labelsize=7)
                on = right
            values, suffix = scaled(values, own_unit or unit)
            on.plot(times, values, linewidth=1.2, label=name, color=f"C{shown}")
            shown += 1
            on.set_ylabel(own_labels.get(own_unit, suffix) if on is right else suffix,
                          color="#9fa1a6", fontsize=7)
        if shown:
            if right is not None:
                handles = axes.get_legend_handles_labels()
                more = right.get_legend_handles_labels()
                axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=6, loc="upper left",
                            facecolor="#181b1f", edgecolor="#33363c", labelcolor="#d8d9da", ncol=2)
                axes.set_xlabel("seconds", color="#9fa1a6", fontsize=7)
                continue
            axes.legend(fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#33363c",
                        labelcolor="#d8d9da", ncol=2)
        else:
            axes.text(0.5, 0.5, "no data (no GPU here)", color="#9fa1a6", ha="center",
                      va="center", transform=axes.transAxes, fontsize=9)
        axes.set_xlabel("seconds", color="#9fa1a6", fontsize=7)
    figure.savefig(out, dpi=72, facecolor=figure.get_facecolor())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sidecar", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--models", required=True, help="two ONNX files, comma-separated")
    parser.add_argument("--seconds", type=int, default=150)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(os.path.join(HERE, "gpu-sidecar.json")) as f:
        dashboard = json.load(f)
    work = tempfile.mkdtemp(prefix="dashboard-png-")
    processes = []
    try:
        models = args.models.split(",")
        names = [os.path.splitext(os.path.basename(m))[0] for m in models]
        for model, name in zip(models, names):
            os.makedirs(os.path.join(work, "models", name, "1"))
            shutil.copy(model, os.path.join(work, "models", name, "1", "model.onnx"))
        health = free_port()
        sock = os.path.join(work, "sidecar.sock")
        with open(os.path.join(work, "sidecar.toml"), "w") as f:
            f.write(f'[sidecar]\nrepository = "{work}/models"\nrepository-control = "poll"\n'
                    f'repository-poll-interval = "1 s"\nruntime-library = "{os.path.abspath(args.runtime)}"\n'
                    f'[sidecar.rpc]\nendpoint = "unix:{sock}"\n[sidecar.health]\nport = {health}\n'
                    f'[sidecar.batching]\nmax-queue-size = 256\n')
        log = open(os.path.join(work, "sidecar.log"), "w")
        processes.append(subprocess.Popen([args.sidecar, "-c", os.path.join(work, "sidecar.toml")],
                                          stdout=log, stderr=log))
        wait_for(f"http://127.0.0.1:{health}/health", "the sidecar")
        port = free_port()
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"global:\n  scrape_interval: {STEP}s\nscrape_configs:\n  - job_name: gpu-sidecar\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{health}']\n")
        processes.append(subprocess.Popen(
            ["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        prometheus = f"http://127.0.0.1:{port}"
        wait_for(f"{prometheus}/-/ready", "Prometheus")
        start = time.time()
        # Load in phases (1, 16, then 64 streaming clients, then unary), on the first model;
        # the second model's new version lands a third of the way in.
        bench = subprocess.Popen(
            [args.bench, "--target", f"unix:{sock}", "--mode", "stream,unary", "--rows", "1",
             "--concurrency", "1,16,64", "--duration", f"{args.seconds // 6}s", "--warmup", "0s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(bench)
        time.sleep(args.seconds / 3)
        staging = os.path.join(work, "models", names[1], ".2")
        os.makedirs(staging)
        shutil.copy(models[1], os.path.join(staging, "model.onnx"))
        os.rename(staging, os.path.join(work, "models", names[1], "2"))
        bench.wait(timeout=args.seconds * 2)
        time.sleep(3 * STEP)
        draw(dashboard, prometheus, start, time.time(), args.out)
        print(f"wrote {args.out}")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
