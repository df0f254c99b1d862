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

# End to end, as an operator and a data scientist would: the release tarball in a real Flink
# distribution (`bin/dev.sh e2e` fetches both and runs this).
#
#   tests/e2e/flink_cluster.sh FLINK_HOME TARBALL
#
# FLINK_HOME is a pristine Flink distribution: it is copied, never changed. Checks, each on a
# fresh copy in a temp folder:
#   1. the tarball, unpacked with an empty environment, serves the sample model to Triton's
#      own Python client;
#   2. install-flink puts everything in place (a second install says so), and
#      uninstall-flink restores the distribution byte for byte;
#   3. with gpu-sidecar.enabled, start-cluster.sh starts the sidecar (READY, its log beside the
#      TaskManager's, a plain `gpu-sidecar.sh status` agrees); an ML_PREDICT query through the
#      SQL client answers every row as ONNX Runtime computed it; a paced streaming query
#      survives a SIGKILL of the sidecar (the supervisor restarts it) with every row exactly
#      once; stop-cluster.sh leaves no sidecar, supervisor, pid file or socket; uninstall-flink
#      restores the distribution byte for byte.
# Prints a line per check and ends with "N passed, M failed"; exits 1 if any failed. Every
# process it starts is stopped by pid, whatever happens; its temp folder is removed unless
# E2E_KEEP is set.

# Functions here run through check, require and wait_for: shellcheck cannot see them called.
# shellcheck disable=SC2317
set -o nounset -o pipefail

[ $# -eq 2 ] || { echo "usage: $0 FLINK_HOME TARBALL" >&2; exit 2; }
# The installed sidecar must find the runtime it ships, as on a TaskManager host.
unset ORT_DYLIB_PATH
root=$(cd "$(dirname "$0")/../.." && pwd)
pristine=$(cd "$1" && pwd)
tarball=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
work=$(mktemp -d /tmp/gpu-sidecar-e2e.XXXXXX)
passed=0
failed=0
# Pid files of everything this test may have started: the cluster's daemons, the sidecar and
# its supervisor, and the standalone sidecar.
pid_dirs=()
standalone=

cleanup() {
    local dir file pid
    [ -n "$standalone" ] && kill -KILL "$standalone" 2>/dev/null
    # Supervisors first, so that they restart nothing.
    for dir in "${pid_dirs[@]}"; do
        for file in "$dir"/*supervisor.pid "$dir"/*.pid; do
            [ -f "$file" ] || continue
            while read -r pid; do
                [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null
            done <"$file"
        done
    done
    if [ -n "${E2E_KEEP:-}" ]; then
        echo "e2e: kept $work (E2E_KEEP is set)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

ok() { echo "ok: $1"; passed=$((passed + 1)); }
not_ok() { echo "FAILED: $1"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: runs the command, counts and prints the outcome.
check() {
    local what=$1
    shift
    if "$@"; then
        ok "$what"
    else
        not_ok "$what"
        return 1
    fi
}
finish() {
    echo "e2e: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
# require DESCRIPTION COMMAND...: like check, but the rest makes no sense without it.
require() {
    check "$@" || finish
}
# wait_for SECONDS COMMAND...: polls the command every 0.2 s until it succeeds or time is up.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Every path under $1 but log/, with its type, mode, size, link target and content's sha256.
snapshot() {
    (cd "$1" && find . -path ./log -prune -o -printf '%p %y %m %s %l\n' | sort &&
        find . -path ./log -prune -o -type f -print0 | sort -z | xargs -0 sha256sum)
}
http_get() {
    python3 - "$1" <<'PYTHON'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
        print(answer.read().decode())
except Exception as e:
    sys.exit(f"{sys.argv[1]}: {e}")
PYTHON
}

release=$work/release
mkdir -p "$release"
tar -C "$release" -xzf "$tarball"
release=$(echo "$release"/gpu-sidecar-*)

deploy_check() {
    test -s "$release/deploy/grafana/gpu-sidecar.json" &&
        (cd "$release/deploy/prometheus" && promtool test rules gpu-sidecar-alerts.test.yml)
}
check "the tarball's deploy/ has the Grafana dashboard, and alert rules that pass promtool's unit tests" deploy_check

# --- 1. The tarball alone, with an empty environment ------------------------------------------
standalone_check() {
    local socket=$work/standalone.sock port config log
    port=$(free_port)
    config=$release/conf/e2e.toml
    log=$work/standalone.log
    # The sample config as shipped, on a temp socket and a free port.
    sed -e "s|^endpoint = .*|endpoint = \"unix:$socket\"|" -e "s|^port = .*|port = $port|" \
        "$release/conf/sidecar.toml" >"$config"
    (cd "$release" && exec env -i bin/gpu-sidecar -c conf/e2e.toml) >/dev/null 2>"$log" &
    standalone=$!
    if ! wait_for 30 http_get "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        echo "not READY; its log:" && cat "$log"
        return 1
    fi
    "$root/.clients/bin/python" "$root/tests/clients/tritonclient_check.py" "unix:$socket" || return 1
    grep -q "ONNX Runtime 1.32.0 loaded from the runtime beside the binary, $release/lib/onnxruntime/" "$log" ||
        { echo "the runtime did not come from lib/onnxruntime/:" && cat "$log" && return 1; }
    kill -TERM "$standalone" && wait "$standalone"
    local code=$?
    standalone=
    rm -f "$config"
    [ "$code" -eq 0 ]
}
check "the tarball, unpacked with an empty environment, serves the sample model to tritonclient" standalone_check

# --- 2. install-flink and uninstall-flink -----------------------------------------------------
install_check() {
    local home=$work/install/flink
    mkdir -p "$work/install" && cp -a "$pristine" "$home"
    snapshot "$home" >"$work/install/before"
    "$release/bin/gpu-sidecar.sh" install-flink "$home" || return 1
    local item
    for item in lib/onnxruntime/libonnxruntime.so bin/gpu-sidecar bin/gpu-sidecar.sh \
        bin/gpu-sidecar-taskmanager.sh models/affine.onnx conf/sidecar.toml; do
        [ -e "$home/$item" ] || { echo "install-flink put no $item into $home" && return 1; }
    done
    compgen -G "$home/lib/flink-gpu-sidecar-client-*.jar" >/dev/null || { echo "no client jar in lib/" && return 1; }
    # shellcheck disable=SC2016 # the line as written into taskmanager.sh
    grep -qxF '. "$bin"/gpu-sidecar-taskmanager.sh' "$home/bin/taskmanager.sh" || { echo "taskmanager.sh not hooked" && return 1; }
    "$home/bin/gpu-sidecar" --check-config -c "$home/conf/sidecar.toml" >/dev/null || return 1
    local again
    again=$("$release/bin/gpu-sidecar.sh" install-flink "$home") || return 1
    [[ $again == *"is installed in $home already; nothing to do"* ]] || { echo "second install: $again" && return 1; }
    "$release/bin/gpu-sidecar.sh" uninstall-flink "$home" || return 1
    snapshot "$home" >"$work/install/after"
    diff "$work/install/before" "$work/install/after"
}
check "install-flink installs and hooks, a second install says so, uninstall-flink restores every byte" install_check

# --- 3. A cluster ---------------------------------------------------------------------------
home=$work/cluster/flink
mkdir -p "$work/cluster" && cp -a "$pristine" "$home"
pid_dirs+=("$work/cluster/pid" "$work/cluster/foreground")
socket=$work/cluster/sidecar.sock
health_port=$(free_port)
rest_port=$(free_port)
rpc_port=$(free_port)
# The test's own settings, in place before the snapshot: Flink's pid folder and ports, the
# sidecar enabled, and its config (on a temp socket and a free port; install-flink keeps it).
# config.yaml is nested YAML with env: and rest: blocks already: the keys go into them.
sed -i -e "s|^env:\$|env:\n  pid:\n    dir: $work/cluster/pid|" \
    -e "s|^rest:\$|rest:\n  port: $rest_port\n  bind-address: localhost|" \
    -e "s|^    port: 6123\$|    port: $rpc_port|" "$home/conf/config.yaml"
printf 'gpu-sidecar:\n  enabled: true\n' >>"$home/conf/config.yaml"
sed -e "s|^endpoint = .*|endpoint = \"unix:$socket\"|" -e "s|^port = .*|port = $health_port|" \
    -e 's|^uri = .*|uri = "../models/affine.onnx"|' "$release/conf/sidecar.toml" >"$home/conf/sidecar.toml"
snapshot "$home" >"$work/cluster/before"
require "install-flink into the cluster's distribution" "$release/bin/gpu-sidecar.sh" install-flink "$home"

sidecar_ready() { [ "$(http_get "http://127.0.0.1:$health_port/health" 2>/dev/null)" = READY ]; }
require "start-cluster.sh starts the cluster" "$home/bin/start-cluster.sh"
require "the sidecar is READY beside the TaskManager" wait_for 60 sidecar_ready
beside_the_taskmanager() {
    compgen -G "$home/log/flink-*-gpu-sidecar-*.log" >/dev/null &&
        compgen -G "$home/log/flink-*-taskexecutor-*.log" >/dev/null
}
check "its log sits beside the TaskManager's" wait_for 60 beside_the_taskmanager
status=$(env -u FLINK_PID_DIR -u FLINK_LOG_DIR -u GPU_SIDECAR_ENABLED "$home/bin/gpu-sidecar.sh" status)
check "a plain gpu-sidecar.sh status says READY, from Flink's pid folder ($status)" \
    bash -c "[[ '$status' == *'and READY; supervised by pid'* ]] && ls '$work/cluster/pid'/*-gpu-sidecar.pid >/dev/null"

# The SQL client: one query over 200 records whose outputs ONNX Runtime computed in process.
sql_client() {
    "$home/bin/sql-client.sh" -f "$1" >"$1.out" 2>&1 || { echo "sql-client.sh -f $1:" && tail -n 40 "$1.out" && return 1; }
}
python3 - "$root/tests/fixtures/models/affine.records.json" "$socket" "$work/cluster" <<'PYTHON'
import json, sys
records, socket, folder = sys.argv[1:]
data = json.load(open(records))
features = data["inputs"]["features"]["data"]
rows = ",\n  ".join(
    "(%d, ARRAY[%s])" % (i, ", ".join("CAST(%r AS FLOAT)" % x for x in features[4 * i:4 * i + 4]))
    for i in range(200))
model = f"""CREATE MODEL affine
  INPUT (features ARRAY<FLOAT>)
  OUTPUT (scores ARRAY<FLOAT>, best BIGINT)
  WITH ('provider' = 'gpu-sidecar', 'endpoint' = 'unix:{socket}', 'model' = 'affine');
"""
common = """SET 'execution.runtime-mode' = 'streaming';
SET 'execution.checkpointing.interval' = '1 s';
"""
open(f"{folder}/predict.sql", "w").write(common + model + f"""SET 'table.dml-sync' = 'true';
CREATE TEMPORARY VIEW records AS
  SELECT CAST(id AS BIGINT) AS id, CAST(features AS ARRAY<FLOAT>) AS features
  FROM (VALUES
  {rows}) AS t(id, features);
CREATE TABLE predictions (id BIGINT, scores ARRAY<FLOAT>, best BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'file://{folder}/predictions', 'format' = 'json');
INSERT INTO predictions
  SELECT id, scores, best FROM ML_PREDICT(TABLE records, MODEL affine, DESCRIPTOR(features));
""")
open(f"{folder}/paced.sql", "w").write(common + model + f"""SET 'table.dml-sync' = 'false';
CREATE TABLE ticks (id BIGINT)
  WITH ('connector' = 'datagen', 'rows-per-second' = '40',
        'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '400');
CREATE TEMPORARY VIEW paced AS
  SELECT id, CAST(ARRAY[CAST(id AS FLOAT), CAST(1 AS FLOAT), CAST(-1 AS FLOAT), CAST(0.5 AS FLOAT)]
              AS ARRAY<FLOAT>) AS features
  FROM ticks;
CREATE TABLE paced_predictions (id BIGINT, scores ARRAY<FLOAT>, best BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'file://{folder}/paced', 'format' = 'json');
INSERT INTO paced_predictions
  SELECT id, scores, best FROM ML_PREDICT(TABLE paced, MODEL affine, DESCRIPTOR(features));
""")
PYTHON
# Reads the rows of a filesystem sink's committed JSON files and compares them: with the
# expected outputs of the records (`expected`), or only their ids (`ids N`: 1..N once each).
compare_rows() {
    python3 - "$root/tests/fixtures/models/affine.records.json" "$@" <<'PYTHON'
import glob, json, os, sys
records, folder, mode = sys.argv[1:4]
rows = []
for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
    name = os.path.basename(path)
    if os.path.isfile(path) and not name.startswith("."):
        rows += [json.loads(line) for line in open(path) if line.strip()]
if mode == "ids":
    n = int(sys.argv[4])
    ids = sorted(row["id"] for row in rows)
    if ids != list(range(1, n + 1)):
        seen = {i: ids.count(i) for i in set(ids)}
        sys.exit(f"{len(ids)} rows; missing {sorted(set(range(1, n + 1)) - set(ids))[:10]}, "
                 f"repeated {[i for i, c in seen.items() if c > 1][:10]}")
    sys.exit(0)
data = json.load(open(records))
scores, best = data["outputs"]["scores"]["data"], data["outputs"]["best"]["data"]
ids = sorted(row["id"] for row in rows)
if ids != list(range(200)):
    sys.exit(f"expected ids 0..199 once each, got {len(ids)} rows: {ids[:10]}...")
for row in rows:
    i = row["id"]
    want = scores[3 * i:3 * i + 3]
    if row["best"] != best[i] or any(abs(a - b) > 1e-5 * max(1, abs(b)) for a, b in zip(row["scores"], want)) or len(row["scores"]) != 3:
        sys.exit(f"row {i}: {row}, ONNX Runtime computed scores {want}, best {best[i]}")
PYTHON
}
check "ML_PREDICT through the SQL client answers 200 rows as ONNX Runtime computed them" \
    sql_client "$work/cluster/predict.sql" &&
    check "... every one of them, once" compare_rows "$work/cluster/predictions" expected

# The paced query: the sidecar is killed while it runs; the supervisor restarts it; the job
# finishes with every row once.
# The requests answered, summed over every model and version.
requests_ok() {
    http_get "http://127.0.0.1:$health_port/metrics" 2>/dev/null |
        awk '/^gpu_sidecar_inference_requests_total\{[^}]*outcome="ok"/ { sum += $NF } END { print sum + 0 }'
}
some_answered() { [ "$(requests_ok)" -ge "$1" ] 2>/dev/null; }
job_state() {
    http_get "http://localhost:$rest_port/jobs/overview" | python3 -c '
import json, sys
jobs = [j for j in json.load(sys.stdin)["jobs"] if "paced_predictions" in j["name"]]
print(jobs[0]["state"] if jobs else "NONE")'
}
job_finished() { [ "$(job_state 2>/dev/null)" = FINISHED ]; }
paced_check() {
    sql_client "$work/cluster/paced.sql" || return 1
    local before=$(($(requests_ok) + 0))
    wait_for 60 some_answered $((before + 60)) || { echo "the paced query answered nothing" && return 1; }
    local pid_file old new
    pid_file=$(echo "$work"/cluster/pid/*-gpu-sidecar.pid)
    old=$(cat "$pid_file")
    echo "killing the sidecar (pid $old) after $(($(requests_ok) - before)) answers to the paced query"
    kill -KILL "$old" || return 1
    restarted() { new=$(cat "$pid_file" 2>/dev/null) && [ -n "$new" ] && [ "$new" != "$old" ] && sidecar_ready; }
    wait_for 60 restarted || { echo "no sidecar replaced pid $old" && return 1; }
    echo "the supervisor restarted it as pid $new"
    grep -q "ended with signal 9 (crash 1 of at most 5 within 5 minutes); restarting in 1.000 s" "$home"/log/flink-*-gpu-sidecar-*.log ||
        { echo "the supervisor's log line is missing" && return 1; }
    wait_for 120 job_finished || { echo "the job did not finish: $(job_state)" && return 1; }
}
check "a paced streaming query outlives a SIGKILL of the sidecar: the supervisor restarts it, the job finishes" paced_check &&
    check "... with every row exactly once" compare_rows "$work/cluster/paced" ids 400

# Stopping.
check "stop-cluster.sh stops the cluster" "$home/bin/stop-cluster.sh"
nothing_left() {
    local leftovers
    leftovers=$(ls -A "$work/cluster/pid" 2>/dev/null)
    [ -z "$leftovers" ] && [ ! -e "$socket" ] && ! pgrep -f "$home/bin/gpu-sidecar" >/dev/null
}
check "stop-cluster.sh leaves no sidecar, supervisor, pid file or socket" wait_for 30 nothing_left ||
    { ls -la "$work/cluster/pid" "$socket" 2>&1; pgrep -af "$home/bin/gpu-sidecar"; }

# One TaskManager in the foreground (as in a container): flink-console.sh execs it into the
# script's process; its end, however it comes, stops the sidecar.
foreground_check() {
    "$home/bin/taskmanager.sh" start-foreground >"$work/cluster/foreground.out" 2>&1 &
    local taskmanager=$!
    mkdir -p "$work/cluster/foreground"
    echo "$taskmanager" >"$work/cluster/foreground/taskmanager.pid"
    wait_for 60 sidecar_ready || { echo "no sidecar for the foreground TaskManager:" && tail "$work/cluster/foreground.out" && return 1; }
    wait_for 60 java_runs "$taskmanager" || { echo "the TaskManager did not become java" && return 1; }
    kill -KILL "$taskmanager"
    wait "$taskmanager" 2>/dev/null
    wait_for 60 none_of_ours_left || { echo "the sidecar outlived the foreground TaskManager" && return 1; }
    # Flink's own pid file keeps the killed TaskManager's line (flink-console.sh cannot remove
    # it after a SIGKILL); Flink's next start-foreground would clean it up.
    rm -f "$work"/cluster/pid/*-taskexecutor.pid
}
# Nothing of the sidecar's: no process, pid file or socket.
none_of_ours_left() {
    ! compgen -G "$work/cluster/pid/*gpu-sidecar*" >/dev/null && [ ! -e "$socket" ] &&
        ! pgrep -f "$home/bin/gpu-sidecar" >/dev/null
}
# A TaskManager of Flink's pid file that runs.
live_taskmanager() {
    local pid
    while read -r pid; do
        kill -0 "$pid" 2>/dev/null && return 0
    done < <(cat "$work"/cluster/pid/*-taskexecutor.pid 2>/dev/null)
    return 1
}
java_runs() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = java ]; }
check "a foreground TaskManager starts the sidecar, and its end (SIGKILL) stops it" foreground_check

# Two TaskManagers on one host share one sidecar: started with the first, stopped with the last.
shared_check() {
    "$home/bin/taskmanager.sh" start >/dev/null || return 1
    wait_for 60 sidecar_ready || { echo "no sidecar for the first TaskManager" && return 1; }
    local sidecar
    sidecar=$(cat "$work"/cluster/pid/*-gpu-sidecar.pid)
    "$home/bin/taskmanager.sh" start >/dev/null || return 1
    [ "$(grep -c . "$work"/cluster/pid/*-taskexecutor.pid)" = 2 ] || { echo "not two TaskManagers" && return 1; }
    [ "$(cat "$work"/cluster/pid/*-gpu-sidecar.pid)" = "$sidecar" ] || { echo "a second sidecar started" && return 1; }
    "$home/bin/taskmanager.sh" stop >/dev/null || return 1
    if ! sidecar_ready || ! kill -0 "$sidecar"; then
        echo "the sidecar stopped with the first of two TaskManagers"
        return 1
    fi
    "$home/bin/taskmanager.sh" stop >/dev/null || return 1
    wait_for 60 nothing_left || { echo "the sidecar outlived the last TaskManager" && return 1; }
}
check "two TaskManagers of one host share one sidecar, which stops with the last of them" shared_check

# A sidecar that cannot start keeps the TaskManager from starting, unless not required.
broken=$work/cluster/broken.toml
sed 's|^uri = .*|uri = "/nonexistent/model.onnx"|' "$home/conf/sidecar.toml" >"$broken"
required_check() {
    local said code=0
    said=$(GPU_SIDECAR_CONF=$broken "$home/bin/taskmanager.sh" start 2>&1) || code=$?
    [ "$code" -ne 0 ] || { echo "taskmanager.sh exited 0: $said" && return 1; }
    [[ $said == *"/nonexistent/model.onnx does not exist"* && $said == *"gpu-sidecar did not start (see above), so this TaskManager does not either"* ]] ||
        { echo "$said" && return 1; }
    ! live_taskmanager || { echo "a TaskManager started" && return 1; }
}
check "a sidecar that cannot start keeps the TaskManager from starting; taskmanager.sh exits non-zero with its reason" required_check
not_required_check() {
    local said
    cp -p "$home/conf/config.yaml" "$work/cluster/config.yaml.kept"
    printf '  required: false\n' >>"$home/conf/config.yaml"
    said=$(GPU_SIDECAR_CONF=$broken "$home/bin/taskmanager.sh" start 2>&1) || { echo "$said" && return 1; }
    [[ $said == *"starting the TaskManager without it (gpu-sidecar.required: false)"* ]] || { echo "$said" && return 1; }
    live_taskmanager || { echo "no TaskManager started: $said" && return 1; }
    "$home/bin/taskmanager.sh" stop >/dev/null
    cp -p "$work/cluster/config.yaml.kept" "$home/conf/config.yaml"
    wait_for 60 nothing_left
}
check "with gpu-sidecar.required: false the TaskManager starts without it" not_required_check

check "uninstall-flink after the cluster ran" "$release/bin/gpu-sidecar.sh" uninstall-flink "$home"
snapshot "$home" >"$work/cluster/after"
check "... restores the distribution byte for byte" diff "$work/cluster/before" "$work/cluster/after"
finish
