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

# Starts and stops gpu-sidecar beside a Flink TaskManager, following the conventions of
# Flink's bin/flink-daemon.sh (pid file, log and out files, start-foreground).
#
#   gpu-sidecar.sh start             start in the background; wait until /health is READY
#   gpu-sidecar.sh stop              SIGTERM; SIGKILL after the grace period plus a margin
#   gpu-sidecar.sh status            running and READY (0), running but not ready (1),
#                                    stopped (3)
#   gpu-sidecar.sh start-foreground  run in the foreground (containers, supervisors)
#
# Disabled unless GPU_SIDECAR_ENABLED=true: then `start` and `start-foreground` say so and
# exit 0 without starting anything, so a TaskManager that always calls them is unaffected.
#
# Environment (all optional):
#   GPU_SIDECAR_ENABLED        "true" to run the sidecar at all
#   GPU_SIDECAR_CONF           config file (default: $FLINK_CONF_DIR/sidecar.toml)
#   GPU_SIDECAR_BIN            the binary (default: gpu-sidecar beside this script, else the
#                              build output target/release, then target/debug)
#   GPU_SIDECAR_START_TIMEOUT  seconds `start` waits for READY (default 120)
#   GPU_SIDECAR_STOP_MARGIN    seconds `stop` waits beyond the grace period (default 15)
#   FLINK_CONF_DIR             default: $FLINK_HOME/conf, else conf/ beside bin/
#   FLINK_PID_DIR              default: /tmp
#   FLINK_LOG_DIR              default: $FLINK_HOME/log, else log/ beside bin/
#   FLINK_IDENT_STRING         default: $USER
#
# Exit codes: 0 done (or disabled), 1 failed, 2 bad usage or configuration; `status` as above.

set -o nounset -o pipefail

USAGE="Usage: gpu-sidecar.sh (start|stop|status|start-foreground)"
DAEMON=gpu-sidecar
# Log files kept besides the current one, as Flink rotates its own.
LOG_FILES_KEPT=5

bin=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${FLINK_HOME:-$(dirname "$bin")}
FLINK_CONF_DIR=${FLINK_CONF_DIR:-$home/conf}
FLINK_PID_DIR=${FLINK_PID_DIR:-/tmp}
FLINK_LOG_DIR=${FLINK_LOG_DIR:-$home/log}
FLINK_IDENT_STRING=${FLINK_IDENT_STRING:-${USER:-$(id -un)}}
conf=${GPU_SIDECAR_CONF:-$FLINK_CONF_DIR/sidecar.toml}
start_timeout=${GPU_SIDECAR_START_TIMEOUT:-120}
stop_margin=${GPU_SIDECAR_STOP_MARGIN:-15}
pid_file=$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-$DAEMON.pid
log_prefix=$FLINK_LOG_DIR/flink-$FLINK_IDENT_STRING-$DAEMON-${HOSTNAME:-$(uname -n)}
log=$log_prefix.log
out=$log_prefix.out

say() { echo "gpu-sidecar.sh: $*"; }
fail() { echo "gpu-sidecar.sh: $*" >&2; exit "${2:-1}"; }

for setting in GPU_SIDECAR_START_TIMEOUT:$start_timeout GPU_SIDECAR_STOP_MARGIN:$stop_margin; do
    [[ ${setting#*:} =~ ^[0-9]+$ ]] ||
        fail "${setting%%:*} must be a whole number of seconds, not '${setting#*:}'" 2
done

# The binary: $GPU_SIDECAR_BIN, else beside this script, else the build output.
find_binary() {
    if [ -n "${GPU_SIDECAR_BIN:-}" ]; then
        [ -x "$GPU_SIDECAR_BIN" ] || fail "GPU_SIDECAR_BIN=$GPU_SIDECAR_BIN is not an executable file" 2
        echo "$GPU_SIDECAR_BIN"
        return
    fi
    local candidate
    for candidate in "$bin/$DAEMON" "$bin/../target/release/$DAEMON" "$bin/../target/debug/$DAEMON"; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    fail "no $DAEMON binary beside $bin or in the build output; set GPU_SIDECAR_BIN" 2
}

# Validates the config with the binary itself and reads the settings this script needs:
# sets health_host, health_port and grace_ms.
read_config() {
    [ -f "$conf" ] || fail "config file $conf does not exist (set GPU_SIDECAR_CONF or FLINK_CONF_DIR)" 2
    local effective
    if ! effective=$("$binary" --check-config -c "$conf" 2>&1); then
        fail "invalid config: $effective" 2
    fi
    health_host=$(sed -n 's/^sidecar\.health\.host = "\(.*\)"$/\1/p' <<<"$effective")
    health_port=$(sed -n 's/^sidecar\.health\.port = \([0-9]*\)$/\1/p' <<<"$effective")
    grace_ms=$(sed -n 's/^sidecar\.shutdown\.grace-period = .*# \([0-9]*\) ms$/\1/p' <<<"$effective")
    if [ -z "$health_host" ] || [ -z "$health_port" ] || [ -z "$grace_ms" ]; then
        fail "cannot read the health address and grace period from '$binary --check-config'"
    fi
    # A wildcard bind is probed on loopback.
    case $health_host in
        0.0.0.0) health_host=127.0.0.1 ;;
        ::) health_host=::1 ;;
    esac
}

# True while process $1 exists and has not exited (a zombie has exited).
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

# Prints the pid of the running sidecar from the pid file. A pid file whose process is gone
# (or is another program) is stale: it is removed, and the function fails.
running_pid() {
    [ -f "$pid_file" ] || return 1
    local pid
    pid=$(head -n 1 "$pid_file")
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(basename "$binary" | cut -c1-15)" ]; then
        echo "$pid"
        return 0
    fi
    say "removing stale pid file $pid_file (pid ${pid:-none} is not a running $DAEMON)" >&2
    rm -f "$pid_file"
    return 1
}

# Asks /health and prints READY or NOT_READY, or nothing when nobody answers.
probe_health() {
    local status_line
    { exec 3<>"/dev/tcp/$health_host/$health_port"; } 2>/dev/null || return 0
    printf 'GET /health HTTP/1.0\r\nHost: %s\r\n\r\n' "$health_host" >&3
    IFS= read -r -t 2 status_line <&3 || status_line=
    exec 3<&- 3>&-
    case $status_line in
        "HTTP/1."?" 200 "*) echo READY ;;
        "HTTP/1."?" 503 "*) echo NOT_READY ;;
    esac
}

# With `port = 0` the sidecar picks its health port: read it from this run's log.
resolve_health_port() {
    [ "$health_port" = 0 ] || return 0
    local address
    address=$(sed -n 's|.*health endpoint listening on http://\(.*\)/health$|\1|p' "$log" | tail -n 1)
    [ -n "$address" ] && health_port=${address##*:}
}

rotate_logs() {
    local file i
    for file in "$log" "$out"; do
        [ -f "$file" ] || continue
        for ((i = LOG_FILES_KEPT - 1; i >= 1; i--)); do
            [ -f "$file.$i" ] && mv -f "$file.$i" "$file.$((i + 1))"
        done
        mv -f "$file" "$file.1"
    done
}

require_enabled() {
    if [ "${GPU_SIDECAR_ENABLED:-false}" != true ]; then
        say "the sidecar is disabled (set GPU_SIDECAR_ENABLED=true to run it); nothing started"
        exit 0
    fi
}

# Sends SIGTERM to $1 and waits for it to end: the grace period plus the margin, then
# SIGKILL. Returns 0 when it ended on SIGTERM, 1 when it took SIGKILL, 2 when it survived
# even that (a process stuck in the kernel, in a GPU driver call for instance).
terminate() {
    local pid=$1 waited_ms=0
    local limit_ms=$((grace_ms + stop_margin * 1000))
    kill -TERM "$pid" 2>/dev/null
    while alive "$pid"; do
        if [ "$waited_ms" -ge "$limit_ms" ]; then
            kill -KILL "$pid" 2>/dev/null
            say "pid $pid did not stop within $((limit_ms / 1000)) s of SIGTERM (grace period + ${stop_margin} s); sent SIGKILL" >&2
            waited_ms=0
            while alive "$pid"; do
                if [ "$waited_ms" -ge 10000 ]; then
                    say "pid $pid still exists 10 s after SIGKILL (stuck in the kernel?); keeping $pid_file" >&2
                    return 2
                fi
                sleep 0.1
                waited_ms=$((waited_ms + 100))
            done
            return 1
        fi
        sleep 0.1
        waited_ms=$((waited_ms + 100))
    done
}

start() {
    require_enabled
    binary=$(find_binary) || exit
    read_config
    local pid
    if pid=$(running_pid); then
        fail "$DAEMON is already running as pid $pid (pid file $pid_file); stop it first"
    fi
    mkdir -p "$FLINK_PID_DIR" "$FLINK_LOG_DIR" || fail "cannot create $FLINK_PID_DIR or $FLINK_LOG_DIR"
    rotate_logs
    nohup "$binary" -c "$conf" >"$out" 2>"$log" </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"
    say "starting $DAEMON as pid $pid (config $conf, log $log)"

    local deadline=$((SECONDS + start_timeout)) state=
    while true; do
        if ! alive "$pid"; then
            local code=0
            wait "$pid" || code=$?
            rm -f "$pid_file"
            echo "gpu-sidecar.sh: $DAEMON died during start-up with exit code $code; the end of $log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        resolve_health_port
        state=$(probe_health)
        if [ "$state" = READY ]; then
            say "$DAEMON is READY (pid $pid, health http://$health_host:$health_port/health)"
            exit 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "gpu-sidecar.sh: $DAEMON was not READY within $start_timeout s (health: ${state:-no answer}); stopping it. The end of $log:" >&2
            tail -n 20 "$log" >&2
            terminate "$pid"
            [ $? -eq 2 ] || rm -f "$pid_file"
            exit 1
        fi
        sleep 0.2
    done
}

stop() {
    binary=$(find_binary) || exit
    local pid
    if ! pid=$(running_pid); then
        say "no $DAEMON to stop (no live process in $pid_file)"
        exit 0
    fi
    if ! read_config 2>/dev/null; then
        grace_ms=30000
        say "cannot read $conf; assuming a 30 s grace period" >&2
    fi
    say "stopping $DAEMON (pid $pid)"
    terminate "$pid"
    [ $? -eq 2 ] && exit 1
    rm -f "$pid_file"
    say "$DAEMON stopped"
}

status() {
    binary=$(find_binary) || exit
    local pid state
    if ! pid=$(running_pid); then
        say "$DAEMON is stopped"
        exit 3
    fi
    read_config
    resolve_health_port
    state=$(probe_health)
    if [ "$state" = READY ]; then
        say "$DAEMON is running as pid $pid and READY"
        exit 0
    fi
    say "$DAEMON is running as pid $pid but not ready (health: ${state:-no answer})"
    exit 1
}

start_foreground() {
    require_enabled
    binary=$(find_binary) || exit
    [ -f "$conf" ] || fail "config file $conf does not exist (set GPU_SIDECAR_CONF or FLINK_CONF_DIR)" 2
    exec "$binary" -c "$conf"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    start-foreground) start_foreground ;;
    *) fail "$USAGE" 2 ;;
esac
