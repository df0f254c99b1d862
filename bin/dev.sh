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
#   bin/dev.sh dist [--runtime cpu|gpu] [--debug]
#                               the release tarball, target/dist/gpu-sidecar-VERSION-linux-x86_64.tar.gz
#   bin/dev.sh e2e              the end-to-end test in a real Flink distribution (fetched into
#                               .flink/): the tarball installed, a cluster started, SQL queries
#                               through the SQL client, the sidecar killed mid-query, uninstalled
#   bin/dev.sh gpu-check [REPORT]  on a machine with an NVIDIA GPU: the GPU tests (--ignored),
#                               the sample model served with gpu.mode = "required" and its
#                               answers compared with ONNX Runtime's on the CPU, the bench at
#                               1/16/64 clients, the cost per request of the bench's MLP
#                               (target/mlp.onnx, made or carried); a Markdown report (default
#                               target/gpu-check.md). Without a GPU it says so and exits 0
#
# `run` and `test` fetch the runtime first when .onnxruntime/ lacks it; ORT_DYLIB_PATH, when
# set, names another library instead (e.g. the `onnxruntime-gpu` wheel's, for CUDA).

set -euo pipefail

cd "$(dirname "$0")/.."

# What the build and the tests need beyond Rust: cmake, make and a C++ compiler for the
# gRPC C core (grpcio-sys), OpenSSL's headers (libssl-dev, found by pkg-config), readelf for the test that checks libcuda is not linked,
# and the shellcheck linter, which a test runs on the scripts.
ensure_packages() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    # The gRPC core's TLS, and the openssl crate, build against the system's OpenSSL.
    [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v readelf >/dev/null 2>&1 || missing+=(binutils)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    # promtool and a real Prometheus server, for the tests of deploy/prometheus/.
    { command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
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
    # Debian's package enables a Prometheus service (on :9090); the tests start their own on
    # a loopback port, so one installed here for them does not stay running as a service.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        "${apt[@]:0:${#apt[@]}-1}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

# The ONNX Runtime release whose CPU library the tests and `run` use.
ONNXRUNTIME_VERSION=1.32.0
# The onnxruntime-gpu release `dist --runtime gpu` ships: the newest on PyPI (it trails the CPU
# wheel by a release at times).
ONNXRUNTIME_GPU_VERSION=1.31.1
RUNTIME_DIR=.onnxruntime

# Puts the shared libraries of ONNX Runtime's wheel $1 (`onnxruntime`, or `onnxruntime-gpu`
# with its CUDA provider) at version $3 into folder $2, with its LICENSE and
# ThirdPartyNotices.txt, and links libonnxruntime.so to the versioned library; nothing when $2
# has it already.
fetch_runtime() {
    local wheel=$1 target=$2 version=$3
    [ -e "$target/libonnxruntime.so" ] && return 0
    command -v python3 >/dev/null 2>&1 || {
        echo "fetching ONNX Runtime needs python3 with pip (apt-get install python3-pip)" >&2
        exit 1
    }
    local download
    download="$(mktemp -d)"
    echo "fetching ONNX Runtime $version (the $wheel wheel) into $target/" >&2
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$download" "$wheel==$version"
    mkdir -p "$target"
    python3 - "$download" "$target" <<'PYTHON'
import glob, os, sys, zipfile
download, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(download, "onnxruntime*.whl"))[0]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        base = os.path.basename(name)
        library = name.startswith("onnxruntime/capi/lib") and ".so" in base
        if library or base in ("LICENSE", "ThirdPartyNotices.txt"):
            with archive.open(name) as source, open(os.path.join(target, base), "wb") as sink:
                sink.write(source.read())
            os.chmod(os.path.join(target, base), 0o755 if library else 0o644)
PYTHON
    rm -rf "$download"
    local versioned
    versioned="$(find "$target" -maxdepth 1 -name 'libonnxruntime.so.*' -printf '%f\n' | head -n 1)"
    ln -sf "$versioned" "$target/libonnxruntime.so"
}

# Puts libonnxruntime.so from the `onnxruntime` wheel into $RUNTIME_DIR (the project's own
# folder, never system-wide) unless it is there, and exports ORT_DYLIB_PATH to it unless set.
ensure_runtime() {
    if [ -n "${ORT_DYLIB_PATH:-}" ]; then
        return 0
    fi
    fetch_runtime onnxruntime "$RUNTIME_DIR" "$ONNXRUNTIME_VERSION"
    ORT_DYLIB_PATH="$(pwd)/$RUNTIME_DIR/libonnxruntime.so"
    export ORT_DYLIB_PATH
}

# Builds the release tarball target/dist/gpu-sidecar-VERSION-linux-x86_64.tar.gz: the binary,
# the scripts, the sample config and model, the client jar and ONNX Runtime's library (the CPU
# one, or with `--runtime gpu` the onnxruntime-gpu one), the Grafana dashboard and Prometheus
# alert rules (deploy/), LICENSE, NOTICE and INSTALL, in one
# folder gpu-sidecar-VERSION/ that runs wherever it is unpacked. `--debug` packs the debug
# binary (for the tests: no second, optimised build of the gRPC core).
# Builds the image of deploy/container/Containerfile from the release tarball with
# onnxruntime-gpu's library, with podman, buildah or docker, whichever is there; $1: its tag.
image() {
    local builder
    if command -v podman >/dev/null 2>&1; then
        builder=(podman build)
    elif command -v buildah >/dev/null 2>&1; then
        builder=(buildah bud)
    elif docker info >/dev/null 2>&1; then
        builder=(docker build)
    else
        echo "no container builder here: install podman (apt-get install podman), buildah, or docker with its daemon" >&2
        exit 1
    fi
    local version tarball
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    tarball=$(dist --runtime gpu | tail -n 1)
    "${builder[@]}" -f deploy/container/Containerfile --build-arg "VERSION=$version" \
        -t "${1:-gpu-sidecar:$version}" "$(dirname "$tarball")"
}

dist() {
    local runtime=cpu profile=release
    while [ $# -gt 0 ]; do
        case $1 in
            --runtime) runtime=${2:-}; shift 2 ;;
            --debug) profile=debug; shift ;;
            *) echo "usage: bin/dev.sh dist [--runtime cpu|gpu] [--debug]" >&2; exit 2 ;;
        esac
    done
    local runtime_dir
    case $runtime in
        cpu) runtime_dir=$RUNTIME_DIR; fetch_runtime onnxruntime "$runtime_dir" "$ONNXRUNTIME_VERSION" ;;
        gpu) runtime_dir=$RUNTIME_DIR-gpu; fetch_runtime onnxruntime-gpu "$runtime_dir" "$ONNXRUNTIME_GPU_VERSION" ;;
        *) echo "--runtime is cpu or gpu, not '$runtime'" >&2; exit 2 ;;
    esac
    local version
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    if [ "$profile" = release ]; then
        cargo build --release --bin gpu-sidecar >&2
    else
        cargo build --bin gpu-sidecar >&2
    fi
    # Maven's output goes to stderr: this function's stdout is the tarball's path alone.
    maven -q -DskipTests package >&2
    local jar
    jar=$(find flink/target -maxdepth 1 -name 'flink-gpu-sidecar-client-*.jar' ! -name '*-original*' | head -n 1)
    [ -n "$jar" ] || { echo "the Maven build made no flink-gpu-sidecar-client jar" >&2; exit 1; }

    local name=gpu-sidecar-$version
    local stage=target/dist/$name
    rm -rf "$stage" "target/dist/$name-linux-x86_64.tar.gz"
    mkdir -p "$stage/bin" "$stage/conf" "$stage/models" "$stage/lib/onnxruntime" \
        "$stage/deploy/grafana" "$stage/deploy/prometheus" "$stage/deploy/kubernetes" "$stage/deploy/container"
    cp deploy/grafana/gpu-sidecar.json "$stage/deploy/grafana/"
    cp deploy/prometheus/gpu-sidecar-alerts.yml deploy/prometheus/gpu-sidecar-alerts.test.yml "$stage/deploy/prometheus/"
    cp deploy/kubernetes/*.yaml "$stage/deploy/kubernetes/"
    cp deploy/container/Containerfile "$stage/deploy/container/"
    cp "target/$profile/gpu-sidecar" bin/gpu-sidecar.sh bin/gpu-sidecar-taskmanager.sh "$stage/bin/"
    cp -P "$runtime_dir"/lib*.so* "$runtime_dir/LICENSE" "$runtime_dir/ThirdPartyNotices.txt" "$stage/lib/onnxruntime/"
    cp "$jar" "$stage/lib/"
    cp tests/fixtures/models/affine.onnx "$stage/models/"
    # The sample config, with the sample model where the release keeps it.
    sed 's|^uri = "tests/fixtures/models/affine.onnx"$|uri = "../models/affine.onnx"|' sidecar.toml >"$stage/conf/sidecar.toml"
    grep -q '^uri = "../models/affine.onnx"$' "$stage/conf/sidecar.toml" || {
        echo "sidecar.toml no longer names tests/fixtures/models/affine.onnx; update bin/dev.sh dist" >&2
        exit 1
    }
    cp LICENSE NOTICE "$stage/"
    install_text "$version" "$runtime" "$(basename "$jar")" >"$stage/INSTALL"
    tar -C target/dist -czf "target/dist/$name-linux-x86_64.tar.gz" "$name"
    echo "target/dist/$name-linux-x86_64.tar.gz"
}

# The ONNX Runtime release a `dist` of runtime $1 (cpu or gpu) ships.
runtime_version_of() {
    if [ "$1" = gpu ]; then echo "$ONNXRUNTIME_GPU_VERSION"; else echo "$ONNXRUNTIME_VERSION"; fi
}

# The release's INSTALL: $1 version, $2 runtime (cpu or gpu), $3 the client jar's name.
install_text() {
    cat <<TEXT
gpu-sidecar $1 (linux-x86_64, ONNX Runtime $(runtime_version_of "$2"), $2 build)
===========================================================================

Unpacked anywhere, this folder runs as it is:

  bin/gpu-sidecar -c conf/sidecar.toml        serves the sample model (models/affine.onnx)
                                              on unix:/tmp/gpu-sidecar.sock, health on
                                              http://127.0.0.1:8558/health
  bin/gpu-sidecar --check-config -c conf/sidecar.toml
                                              checks the config, the model file and the runtime

The binary finds ONNX Runtime in lib/onnxruntime/ beside it, unless
sidecar.model.runtime-library in the config, or ORT_DYLIB_PATH, names another library.
TEXT
    if [ "$2" = gpu ]; then
        cat <<TEXT
This build carries onnxruntime-gpu's library and its CUDA execution provider; the CUDA 12
and cuDNN 9 libraries it loads come from the machine (the NVIDIA driver, and the CUDA and
cuDNN runtime libraries on the loader's path).
TEXT
    fi
    cat <<TEXT

Into a Flink distribution (one sidecar per host, beside its TaskManagers):

  bin/gpu-sidecar.sh install-flink \$FLINK_HOME
      puts lib/$3 into \$FLINK_HOME/lib/, bin/gpu-sidecar, bin/gpu-sidecar.sh and
      lib/onnxruntime/ into \$FLINK_HOME, the sample model into \$FLINK_HOME/models/ and
      conf/sidecar.toml into \$FLINK_HOME/conf/ (unless one is there), and hooks
      bin/taskmanager.sh; a second install says it is installed already.
  echo 'gpu-sidecar.enabled: true' >>\$FLINK_HOME/conf/config.yaml
      turns it on: start-cluster.sh and taskmanager.sh start|start-foreground|stop|stop-all
      then start the sidecar (under a supervisor that restarts it) before the first
      TaskManager of the host, and stop it after the last. A sidecar that cannot start keeps
      the TaskManager from starting, unless 'gpu-sidecar.required: false'.
  \$FLINK_HOME/bin/gpu-sidecar.sh status
      says whether it runs and is READY; its log is beside the TaskManager's
      (flink-\$USER-gpu-sidecar-\$HOSTNAME.log in Flink's log folder).
  bin/gpu-sidecar.sh uninstall-flink \$FLINK_HOME
      restores the distribution as it was (conf/sidecar.toml stays if you changed it).

Flink jobs reach it at 'unix:/tmp/gpu-sidecar.sock' (the 'endpoint' option of the
gpu-sidecar model provider, or GpuSidecarAsyncFunction's first argument). README.md in the
source repository documents everything else.

LICENSE and NOTICE cover gpu-sidecar and what it bundles; lib/onnxruntime/LICENSE (MIT) and
lib/onnxruntime/ThirdPartyNotices.txt cover ONNX Runtime.
TEXT
}

# The Triton client release the compatibility test runs.
TRITONCLIENT_VERSION=2.73.0
# Kubernetes' schemas, for the check of deploy/kubernetes/; and the Flink Kubernetes
# Operator release whose CRD it reads (the newest the Maven repository here serves).
KUBERNETES_VALIDATE_VERSION=1.37.0
OPERATOR_API_VERSION=1.10.0
CLIENTS_DIR=.clients

# Makes $CLIENTS_DIR, a virtual environment with tritonclient[grpc] and kubernetes-validate, and
# fetches the operator API jar into it, unless they are there.
ensure_clients() {
    if ! { [ -x "$CLIENTS_DIR/bin/python" ] &&
        "$CLIENTS_DIR/bin/python" -c "import tritonclient.grpc, kubernetes_validate" 2>/dev/null; }; then
        echo "installing tritonclient[grpc]==$TRITONCLIENT_VERSION and kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $CLIENTS_DIR/" >&2
        python3 -m venv "$CLIENTS_DIR"
        "$CLIENTS_DIR/bin/python" -m pip install -q "tritonclient[grpc]==$TRITONCLIENT_VERSION" \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    fi
    # The Flink Kubernetes Operator's CRDs, in its API jar, from Maven Central (through
    # the project's Maven repository): the schema test of deploy/kubernetes/ reads them.
    local jar="$CLIENTS_DIR/flink-kubernetes-operator-api-$OPERATOR_API_VERSION.jar"
    if [ ! -f "$jar" ]; then
        maven -q dependency:copy \
            "-Dartifact=org.apache.flink:flink-kubernetes-operator-api:$OPERATOR_API_VERSION" \
            "-DoutputDirectory=$(pwd)/$CLIENTS_DIR"
    fi
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
    mvn -B --no-transfer-progress -Dstyle.color=never -f flink/pom.xml -Dmaven.repo.local="$(pwd)/$MAVEN_REPOSITORY" "$@"
}

# The Flink release the end-to-end test installs into, and where it is kept (git ignores it).
FLINK_VERSION=2.3.0
FLINK_CACHE=.flink

# Assembles a Flink $FLINK_VERSION distribution in $FLINK_CACHE/flink-$FLINK_VERSION/ unless it
# is there: bin/*.sh and conf/ from PyPI's apache-flink wheel; lib/, opt/, plugins/ and
# bin/bash-java-utils.jar from its apache-flink-libraries wheel (what `pip install
# apache-flink` unpacks as pyflink/); opt/flink-sql-gateway-$FLINK_VERSION.jar, which the
# SQL client needs and the wheels lack, from Maven Central. Prints its path.
ensure_flink() {
    local home=$FLINK_CACHE/flink-$FLINK_VERSION
    if [ ! -f "$home/opt/flink-sql-gateway-$FLINK_VERSION.jar" ]; then
        local download
        download="$(mktemp -d)"
        echo "fetching Flink $FLINK_VERSION (PyPI's apache-flink and apache-flink-libraries wheels) into $home/" >&2
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux2014_x86_64 -d "$download" \
            "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION" >&2
        rm -rf "$home"
        mkdir -p "$home"
        python3 - "$download" "$home" <<'PYTHON'
import glob, os, stat, sys, zipfile
download, home = sys.argv[1], sys.argv[2]
for wheel in glob.glob(os.path.join(download, "apache_flink*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.startswith("pyflink/") or name.endswith("/"):
                continue
            part = name[len("pyflink/"):]
            if part.split("/")[0] not in ("bin", "conf", "lib", "opt", "plugins", "licenses"):
                continue
            target = os.path.join(home, part)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as sink:
                sink.write(source.read())
            if part.startswith("bin/") and not part.endswith((".jar", ".bat")):
                os.chmod(target, 0o755)
PYTHON
        rm -rf "$download"
        # The empty log folder of Flink's own distribution tarball, which the wheels lack.
        mkdir -p "$home/log"
        maven -q dependency:copy "-Dartifact=org.apache.flink:flink-sql-gateway:$FLINK_VERSION" \
            "-DoutputDirectory=$(pwd)/$home/opt" >&2
    fi
    echo "$home"
}

usage() {
    echo "usage: bin/dev.sh run [ARGS...] | test [ARGS...] | runtime | clients | flink [GOALS...] | flink-bench [ARGS...] | dist [--runtime cpu|gpu] [--debug] | e2e | gpu-check [REPORT] | image [TAG] | dashboard-png" >&2
    exit 2
}

# The GPU acceptance check (see the header). Uses the release binaries in target/release/
# (built here when cargo is at hand: a GPU machine may have no Rust toolchain, so build them
# elsewhere and bring them), and ONNX Runtime's CUDA library from ORT_DYLIB_PATH or the
# onnxruntime-gpu wheel fetched into .onnxruntime-gpu/.
gpu_check() {
    local report=${1:-target/gpu-check.md}
    mkdir -p "$(dirname "$report")"
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none): nothing to check" >&2
        printf '# gpu-sidecar GPU check\n\nNo NVIDIA GPU on this machine (nvidia-smi finds none): nothing was checked.\n' >"$report"
        return 0
    fi
    if [ -z "${ORT_DYLIB_PATH:-}" ]; then
        fetch_runtime onnxruntime-gpu "$RUNTIME_DIR-gpu" "$ONNXRUNTIME_GPU_VERSION"
        ORT_DYLIB_PATH="$(pwd)/$RUNTIME_DIR-gpu/libonnxruntime.so"
        export ORT_DYLIB_PATH
        LD_LIBRARY_PATH="$(pwd)/$RUNTIME_DIR-gpu:${LD_LIBRARY_PATH:-}"
        export LD_LIBRARY_PATH
    fi
    if command -v cargo >/dev/null 2>&1; then
        cargo build --release --workspace --bins >&2
    fi
    local sidecar=target/release/gpu-sidecar bench=target/release/gpu-sidecar-bench
    if [ ! -x "$sidecar" ] || [ ! -x "$bench" ]; then
        echo "gpu-check: $sidecar and $bench are needed: build them (cargo build --release --workspace --bins)" >&2
        exit 1
    fi
    local work tests_outcome="skipped: no cargo on this machine"
    work="$(mktemp -d)"
    # 1. The GPU tests, which also compare the CUDA provider's answers with the CPU's.
    if command -v cargo >/dev/null 2>&1; then
        if cargo test --features failpoints --test it gpu:: -- --ignored --nocapture >"$work/tests.log" 2>&1; then
            tests_outcome="passed ($(grep -c '^test .* ok$' "$work/tests.log") tests)"
        else
            tests_outcome="FAILED (see the log below)"
        fi
    fi
    # 2. The sample model served with gpu.mode = "required", then the bench against it.
    cat >"$work/sidecar.toml" <<TOML
[sidecar.rpc]
endpoint = "unix:$work/sidecar.sock"
[sidecar.model]
uri = "$(pwd)/tests/fixtures/models/affine.onnx"
name = "affine"
[sidecar.health]
port = 0
[sidecar.gpu]
mode = "required"
TOML
    "$sidecar" -c "$work/sidecar.toml" 2>"$work/sidecar.log" &
    local pid=$!
    local waited=0
    until grep -q "READY in" "$work/sidecar.log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || [ $waited -ge 600 ]; then
            echo "gpu-check: the sidecar did not become READY on the GPU:" >&2
            cat "$work/sidecar.log" >&2
            kill "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    local health
    health=$(sed -n 's|.*health endpoint listening on http://\([^/]*\)/health.*|\1|p' "$work/sidecar.log" | head -n 1)
    "$bench" --target "unix:$work/sidecar.sock" --health "$health" --mode unary,stream \
        --concurrency 1,16,64 --duration "5 s" --json >"$work/bench.json" 2>"$work/bench.log" || true
    kill -TERM "$pid"
    wait "$pid" || true
    # 3. The cost per request on the GPU (issue 26): the compute-heavy MLP in sidecars the
    # bench spawns (gpu.mode auto: on the GPU), their CPU and context switches per request
    # and the GPU-owner thread's CPU per execution, beside ONNX Runtime alone in the bench's
    # process (on the CPU). The model is made by make_models.py where onnx is installed, or
    # made elsewhere and carried as target/mlp.onnx.
    local mlp=target/mlp.onnx
    local cost_outcome="skipped: no $mlp, and no Python onnx package to make it"
    if [ ! -s "$mlp" ] && python3 -c 'import onnx' 2>/dev/null; then
        python3 tests/fixtures/make_models.py --mlp "$mlp" >&2 || rm -f "$mlp"
    fi
    if [ -s "$mlp" ]; then
        if "$bench" --spawn --sidecar "$sidecar" --transports unix --model "$mlp" --mode unary,stream \
            --concurrency 1,64 --rows 1 --duration "5 s" --startup-runs 0 --runtime-only --json \
            >"$work/cost.json" 2>"$work/cost.log"; then
            cost_outcome="measured"
        else
            cost_outcome="the bench failed: $(tail -n 3 "$work/cost.log" | tr '\n' ' ')"
        fi
    fi
    # 4. The report.
    {
        echo "# gpu-sidecar GPU check"
        echo
        echo "- machine: $(uname -srm), $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
        echo "- CUDA and cuDNN libraries found: $( (ldconfig -p 2>/dev/null; ls "$(dirname "$ORT_DYLIB_PATH")" 2>/dev/null) | grep -oE 'lib(cudart|cublas|cudnn)[a-z_]*\.so[.0-9]*' | sort -u | tr '\n' ' ')"
        echo "- ONNX Runtime: $ORT_DYLIB_PATH"
        echo "- sidecar: $(grep -m1 'using GPU' "$work/sidecar.log" | sed 's/.*) //')"
        echo "- GPU tests (--ignored): $tests_outcome"
        echo
        echo "## Bench (sample model, gpu.mode = \"required\")"
        echo
        python3 - "$work/bench.json" <<'PYTHON'
import json, sys
print("| mode | clients | requests/s | p50 µs | p99 µs | errors |")
print("|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    try:
        run = json.loads(line)
    except ValueError:
        continue
    latency = run.get("latency_us", {})
    print(f"| {run.get('kind')} | {run.get('concurrency')} | {run.get('throughput_per_second', 0):.0f} "
          f"| {latency.get('p50', 0):.0f} | {latency.get('p99', 0):.0f} | {sum(run.get('errors', {}).values())} |")
PYTHON
        echo
        echo "## Cost per request on the GPU (the bench's MLP, sidecars spawned by the bench): $cost_outcome"
        if [ -s "$work/cost.json" ]; then
            echo
            python3 - "$work/cost.json" <<'PYTHON'
import json, sys
print("| mode | clients | requests/s | rows/execution | CPU µs/request | context switches/request "
      "| GPU-owner µs/execution | ONNX Runtime alone, CPU, µs/execution |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    try:
        run = json.loads(line)
    except ValueError:
        continue
    if run.get("kind") != "inference":
        continue
    cpu = run.get("server_cpu", {})
    alone = run.get("runtime_only", {})
    rate = alone.get("rows_per_second")
    alone_us = f"{alone['batch'] / rate * 1e6:.0f} @{alone['batch']}" if rate else alone.get("error", "-")
    number = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"
    print(f"| {run.get('mode')} | {run.get('concurrency')} | {number(run.get('throughput_per_second'), '.0f')} "
          f"| {number(run.get('rows_per_execution'), '.1f')} | {number(cpu.get('us_per_request'), '.1f')} "
          f"| {number(cpu.get('context_switches_per_request'), '.2f')} "
          f"| {number(cpu.get('execution_threads_us_per_execution'), '.0f')} | {alone_us} |")
PYTHON
        fi
        if [ -s "$work/tests.log" ]; then
            echo
            echo "## GPU tests"
            echo
            echo '```'
            grep -E '^test |test result|spawn to READY|^GPU ' "$work/tests.log"
            echo '```'
        fi
    } >"$report"
    rm -rf "$work"
    echo "gpu-check: report in $report" >&2
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
        "$0" flink
        exec "$0" e2e
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
    dist)
        ensure_packages
        dist "$@"
        ;;
    e2e)
        ensure_packages
        ensure_runtime
        ensure_clients
        flink_home=$(ensure_flink)
        tarball=$(dist --debug | tail -n 1)
        exec tests/e2e/flink_cluster.sh "$flink_home" "$tarball"
        ;;
    flink-bench)
        ensure_packages
        ensure_runtime
        cargo build --release --workspace --bins
        maven -q test-compile
        maven -q exec:exec -Dexec.executable=java -Dexec.classpathScope=test \
            -Dexec.args="-Dsidecar.binary=$(pwd)/target/release/gpu-sidecar -Dsidecar.runtime=$ORT_DYLIB_PATH -Dsidecar.fixtures=$(pwd)/tests/fixtures/models -classpath %classpath org.apache.flink.gpusidecar.FlinkBench $*"
        ;;
    gpu-check)
        gpu_check "$@"
        ;;
    image)
        image "$@"
        ;;
    dashboard-png)
        # deploy/grafana/gpu-sidecar.png from real data: a sidecar under the bench's load,
        # scraped by a real Prometheus, drawn by matplotlib (in a venv of its own).
        ensure_packages
        ensure_runtime
        cargo build --release --workspace --bins
        [ -x target/plot/bin/python ] || { python3 -m venv target/plot && target/plot/bin/pip install -q matplotlib onnx; }
        target/plot/bin/python tests/fixtures/make_models.py --small-mlp target/small_mlp.onnx
        target/plot/bin/python deploy/grafana/render.py --sidecar target/release/gpu-sidecar \
            --bench target/release/gpu-sidecar-bench --runtime "$ORT_DYLIB_PATH" \
            --models tests/fixtures/models/affine.onnx,target/small_mlp.onnx --out deploy/grafana/gpu-sidecar.png "$@"
        ;;
    *)
        usage
        ;;
esac
