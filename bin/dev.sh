#!/usr/bin/env bash
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

# Sets up a fresh Debian machine (with only Rust installed) to build gpu-sidecar, then runs
# the sidecar or its tests. Installs the missing system packages with apt-get (as root, or
# through sudo), or says which to install and exits 1.
#
#   bin/dev.sh run  [ARGS...]   build and run the sidecar; ARGS default to -c sidecar.toml
#   bin/dev.sh test [ARGS...]   run the README's whole test command (Rust, then flink/); ARGS
#                               go to `cargo test`
#                               (e.g. `bin/dev.sh test -- --ignored` on a GPU machine)
#   bin/dev.sh runtime          fetch ONNX Runtime's CPU library (the `onnxruntime` wheel
#                               from PyPI) into .onnxruntime/ and print its path
#   bin/dev.sh clients          make .clients/, a Python virtual environment holding
#                               Triton's own client (tritonclient[grpc]), which a test runs
#   bin/dev.sh flink [GOALS...] build the Flink client module (flink/) with Maven and run its
#                               tests against the debug binary; GOALS default to `verify`
#                               (options alone, e.g. -q, add to it)
#   bin/dev.sh flink-bench [ARGS...]  the Flink bench (FlinkBench) against the release
#                               binaries, next to gpu-sidecar-bench's figures
#
# `run` and `test` fetch the runtime first when .onnxruntime/ lacks it; ORT_DYLIB_PATH, when
# set, names another library instead (e.g. the `onnxruntime-gpu` wheel's, for CUDA).

set -euo pipefail

cd "$(dirname "$0")/.."

# What the build and the tests need beyond Rust: cmake, make and a C++ compiler for the
# gRPC C core (grpcio-sys), readelf for the test that checks libcuda is not linked,
# and the shellcheck linter, which a test runs on the scripts.
ensure_packages() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    command -v readelf >/dev/null 2>&1 || missing+=(binutils)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    [ "${#missing[@]}" -eq 0 ] && return 0

    local apt=()
    if [ "$(id -u)" -eq 0 ]; then
        apt=(apt-get)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        apt=(sudo apt-get)
    else
        echo "gpu-sidecar needs these packages: ${missing[*]}" >&2
        echo "install them, then run this again:  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} with apt-get" >&2
    "${apt[@]}" update -q
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}"
}

# The ONNX Runtime release whose CPU library the tests and `run` use.
ONNXRUNTIME_VERSION=1.32.0
RUNTIME_DIR=.onnxruntime

# Puts libonnxruntime.so from the `onnxruntime` wheel into $RUNTIME_DIR (the project's own
# folder, never system-wide) unless it is there, and exports ORT_DYLIB_PATH to it unless set.
ensure_runtime() {
    if [ -n "${ORT_DYLIB_PATH:-}" ]; then
        return 0
    fi
    local library="$RUNTIME_DIR/libonnxruntime.so"
    if [ ! -e "$library" ]; then
        command -v python3 >/dev/null 2>&1 || {
            echo "fetching ONNX Runtime needs python3 with pip (apt-get install python3-pip)" >&2
            exit 1
        }
        local download
        download="$(mktemp -d)"
        echo "fetching ONNX Runtime $ONNXRUNTIME_VERSION (the onnxruntime wheel) into $RUNTIME_DIR/" >&2
        python3 -m pip download -q --no-deps --only-binary=:all: -d "$download" \
            "onnxruntime==$ONNXRUNTIME_VERSION"
        mkdir -p "$RUNTIME_DIR"
        python3 - "$download" "$RUNTIME_DIR" <<'PYTHON'
import glob, os, sys, zipfile
download, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(download, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/libonnxruntime.so") or base == "LICENSE" or base == "ThirdPartyNotices.txt":
            with archive.open(name) as source, open(os.path.join(target, base), "wb") as sink:
                sink.write(source.read())
            if base.startswith("libonnxruntime.so"):
                os.chmod(os.path.join(target, base), 0o755)
PYTHON
        rm -rf "$download"
        local versioned
        versioned="$(find "$RUNTIME_DIR" -maxdepth 1 -name 'libonnxruntime.so.*' -printf '%f\n' | head -n 1)"
        ln -sf "$versioned" "$library"
    fi
    ORT_DYLIB_PATH="$(pwd)/$library"
    export ORT_DYLIB_PATH
}

# The Triton client release the compatibility test runs.
TRITONCLIENT_VERSION=2.73.0
CLIENTS_DIR=.clients

# Makes $CLIENTS_DIR, a virtual environment with tritonclient[grpc], unless it is there.
ensure_clients() {
    if [ -x "$CLIENTS_DIR/bin/python" ] &&
        "$CLIENTS_DIR/bin/python" -c "import tritonclient.grpc" 2>/dev/null; then
        return 0
    fi
    echo "installing tritonclient[grpc]==$TRITONCLIENT_VERSION into $CLIENTS_DIR/" >&2
    python3 -m venv "$CLIENTS_DIR"
    "$CLIENTS_DIR/bin/python" -m pip install -q "tritonclient[grpc]==$TRITONCLIENT_VERSION"
}

# Maven's local repository, inside the project's folder (git ignores it): a fresh clone
# resolves everything once, and nothing is cached outside the project.
MAVEN_REPOSITORY=.maven

# Runs Maven on flink/ in batch mode with the project's own local repository.
maven() {
    command -v mvn >/dev/null 2>&1 || {
        echo "the Flink module needs Maven and a JDK 17 (apt-get install maven openjdk-17-jdk-headless)" >&2
        exit 1
    }
    mvn -B --no-transfer-progress -f flink/pom.xml -Dmaven.repo.local="$(pwd)/$MAVEN_REPOSITORY" "$@"
}

usage() {
    echo "usage: bin/dev.sh run [ARGS...] | test [ARGS...] | runtime | clients | flink [GOALS...] | flink-bench [ARGS...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
    run)
        ensure_packages
        ensure_runtime
        [ $# -gt 0 ] || set -- -c sidecar.toml
        exec cargo run --bin gpu-sidecar -- "$@"
        ;;
    test)
        ensure_packages
        ensure_runtime
        ensure_clients
        # The README's test command: the workspace's Rust tests (`failpoints` compiles in the
        # fault injection that tests/it/faults.rs uses), then the Flink module's.
        cargo test --workspace --features failpoints "$@"
        exec "$0" flink
        ;;
    runtime)
        ensure_runtime
        echo "$ORT_DYLIB_PATH"
        ;;
    clients)
        ensure_clients
        ;;
    flink)
        ensure_packages
        ensure_runtime
        # The tests start the debug binary; built with the features `test` uses, this is a
        # no-op right after it.
        cargo build --features failpoints --bin gpu-sidecar
        # Options alone (e.g. -q) still run the default goal.
        goal=verify
        for arg in "$@"; do
            case "$arg" in -*) ;; *) goal= ;; esac
        done
        maven -Dsidecar.runtime="$ORT_DYLIB_PATH" "$@" $goal
        ;;
    flink-bench)
        ensure_packages
        ensure_runtime
        cargo build --release --workspace --bins
        maven -q test-compile
        maven -q exec:exec -Dexec.executable=java -Dexec.classpathScope=test \
            -Dexec.args="-Dsidecar.binary=$(pwd)/target/release/gpu-sidecar -Dsidecar.runtime=$ORT_DYLIB_PATH -Dsidecar.fixtures=$(pwd)/tests/fixtures/models -classpath %classpath org.apache.flink.gpusidecar.FlinkBench $*"
        ;;
    *)
        usage
        ;;
esac
