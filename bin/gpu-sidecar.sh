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

# Starts, supervises and stops gpu-sidecar beside Flink TaskManagers, following the
# conventions of Flink's bin/flink-daemon.sh (pid files, log and out files, start-foreground),
# and installs it into a Flink distribution.
#
#   gpu-sidecar.sh start             start under a supervisor, in the background; wait for READY
#   gpu-sidecar.sh stop              stop the supervisor, then the sidecar: SIGTERM; SIGKILL
#                                    after the grace period plus a margin
#   gpu-sidecar.sh status            the sidecar running and READY (0), running but not ready
#                                    or being restarted (1), stopped (3); and its supervisor
#   gpu-sidecar.sh start-foreground  run in the foreground (containers, systemd)
#   gpu-sidecar.sh install-flink FLINK_HOME    (from an unpacked release) install into a Flink
#                                    distribution and hook into its bin/taskmanager.sh
#   gpu-sidecar.sh uninstall-flink FLINK_HOME  undo install-flink, byte for byte
#
# The supervisor (this script, in the background, with its own pid file) restarts a sidecar
# that exits after it was READY: after 1 s, doubling up to 30 s. It does not restart one that
# exits with code 2 (a bad configuration, or a model it cannot serve), nor one that crashes
# more than 5 times within 5 minutes; the log says why.
#
# Disabled unless enabled: GPU_SIDECAR_ENABLED=true, or, inside a Flink distribution,
# `gpu-sidecar.enabled: true` in its config.yaml. Disabled, `start` and `start-foreground` say
# so and exit 0 without starting anything, so a TaskManager that always calls them is
# unaffected.
#
# Inside a Flink distribution (Flink's config.sh beside this script), the pid and log folders
# are Flink's own (env.pid.dir, env.log.dir in config.yaml), read through config.sh.
#
# Environment (all optional):
#   GPU_SIDECAR_ENABLED        "true" to run the sidecar at all
#   GPU_SIDECAR_CONF           config file (default: $FLINK_CONF_DIR/sidecar.toml)
#   GPU_SIDECAR_BIN            the binary (default: gpu-sidecar beside this script, else the
#                              build output target/release, then target/debug)
#   GPU_SIDECAR_START_TIMEOUT  seconds `start` waits for READY (default 120)
#   GPU_SIDECAR_STOP_MARGIN    seconds `stop` waits beyond the grace period (default 15)
#   GPU_SIDECAR_RESTART_DELAY_MS      the supervisor's first wait before a restart (1000)
#   GPU_SIDECAR_RESTART_MAX_DELAY_MS  its longest wait (30000)
#   FLINK_CONF_DIR             default: $FLINK_HOME/conf, else conf/ beside bin/
#   FLINK_PID_DIR              default: Flink's env.pid.dir, else /tmp
#   FLINK_LOG_DIR              default: Flink's env.log.dir, else log/ beside bin/
#   FLINK_IDENT_STRING         default: $USER, as Flink's own scripts
#
# Exit codes: 0 done (or disabled), 1 failed, 2 bad usage or configuration; `status` as above.

USAGE="Usage: gpu-sidecar.sh (start|stop|status|start-foreground|install-flink FLINK_HOME|uninstall-flink FLINK_HOME)"
DAEMON=gpu-sidecar
# Log files kept besides the current one, as Flink rotates its own.
LOG_FILES_KEPT=5
# The supervisor gives up after more than this many crashes within CRASH_WINDOW seconds.
CRASHES_ALLOWED=5
CRASH_WINDOW=300

bin=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${FLINK_HOME:-$(dirname "$bin")}

# Inside a Flink distribution, Flink's own settings: config.sh computes the pid and log
# folders from config.yaml (it exports neither) and leaves the parsed configuration in
# YAML_CONF. The TaskManager hook passes them on, so this runs only when called by hand.
flink_config=
if [ -z "${FLINK_PID_DIR:-}" ] && [ -f "$bin/config.sh" ] && [ -f "$bin/bash-java-utils.jar" ] &&
    [[ ${1:-} =~ ^(start|stop|status|start-foreground)$ ]]; then
    # shellcheck source=/dev/null
    . "$bin/config.sh" >/dev/null
    flink_config=${YAML_CONF:-}
fi

set -o nounset -o pipefail

FLINK_CONF_DIR=${FLINK_CONF_DIR:-$home/conf}
FLINK_PID_DIR=${FLINK_PID_DIR:-/tmp}
FLINK_LOG_DIR=${FLINK_LOG_DIR:-$home/log}
FLINK_IDENT_STRING=${FLINK_IDENT_STRING:-${USER:-}}
conf=${GPU_SIDECAR_CONF:-$FLINK_CONF_DIR/sidecar.toml}
start_timeout=${GPU_SIDECAR_START_TIMEOUT:-120}
stop_margin=${GPU_SIDECAR_STOP_MARGIN:-15}
restart_delay_ms=${GPU_SIDECAR_RESTART_DELAY_MS:-1000}
restart_max_delay_ms=${GPU_SIDECAR_RESTART_MAX_DELAY_MS:-30000}
prefix=$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-$DAEMON
pid_file=$prefix.pid
supervisor_pid_file=$prefix-supervisor.pid
# Written by `start` once the sidecar was READY: from then on the supervisor restarts it.
ready_file=$prefix.ready
# Written by the supervisor when it gives up, for `status`.
failed_file=$prefix.failed
# TaskManagers in the foreground (no Flink pid file) that use the sidecar, one pid a line.
users_file=$prefix.users
log_prefix=$FLINK_LOG_DIR/flink-$FLINK_IDENT_STRING-$DAEMON-${HOSTNAME:-$(uname -n)}
log=$log_prefix.log
out=$log_prefix.out

say() { echo "gpu-sidecar.sh: $*"; }
fail() { echo "gpu-sidecar.sh: $1" >&2; exit "${2:-1}"; }

for setting in GPU_SIDECAR_START_TIMEOUT:$start_timeout GPU_SIDECAR_STOP_MARGIN:$stop_margin \
    GPU_SIDECAR_RESTART_DELAY_MS:$restart_delay_ms GPU_SIDECAR_RESTART_MAX_DELAY_MS:$restart_max_delay_ms; do
    [[ ${setting#*:} =~ ^[0-9]+$ ]] ||
        fail "${setting%%:*} must be a whole number, not '${setting#*:}'" 2
done

# Whether the sidecar is enabled: GPU_SIDECAR_ENABLED, else Flink's gpu-sidecar.enabled.
enabled() {
    local setting=${GPU_SIDECAR_ENABLED:-}
    if [ -z "$setting" ] && [ -n "$flink_config" ]; then
        setting=$(readFromConfig gpu-sidecar.enabled false "$flink_config")
    fi
    [ "$setting" = true ]
}

require_enabled() {
    if ! enabled; then
        say "the sidecar is disabled (set gpu-sidecar.enabled: true in Flink's config.yaml, or GPU_SIDECAR_ENABLED=true); nothing started"
        exit 0
    fi
}

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

# Validates the config with the binary itself (which also checks the model file and the
# runtime) and reads the settings this script needs: sets health_host, health_port, grace_ms.
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

# Prints the pid in pid file $1 if that process is alive and its command line matches the
# pattern $2 (what it is: $3). A pid file whose process is gone (or is another program) is
# stale: it is removed, and the function fails.
live_pid() {
    local file=$1 pattern=$2 what=$3 pid command
    [ -f "$file" ] || return 1
    pid=$(head -n 1 "$file")
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
        command=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
        # shellcheck disable=SC2053 # a pattern on purpose
        if [[ $command == $pattern ]]; then
            echo "$pid"
            return 0
        fi
    fi
    say "removing stale pid file $file (pid ${pid:-none} is not a running $what)" >&2
    rm -f "$file"
    return 1
}

running_pid() { live_pid "$pid_file" "*$(basename "$binary") -c *" "$DAEMON"; }
supervisor_pid() { live_pid "$supervisor_pid_file" "*gpu-sidecar.sh supervise*" "$DAEMON supervisor"; }

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

# With `port = 0` the sidecar picks its health port: read the latest one from the log.
resolve_health_port() {
    [ "$health_port" = 0 ] || return 0
    local address
    address=$(sed -n 's|.*health endpoint listening on http://\(.*\)/health$|\1|p' "$log" 2>/dev/null | tail -n 1)
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

# Takes the lock that keeps two starts (two TaskManagers, two shells) from racing: on the
# pid folder, as Flink's flink-daemon.sh does, so it leaves no file behind. It is held until
# this script exits; the supervisor and the sidecar never inherit it.
lock() {
    mkdir -p "$FLINK_PID_DIR" || fail "cannot create $FLINK_PID_DIR"
    exec {lock_fd}<"$FLINK_PID_DIR"
    command -v flock >/dev/null 2>&1 || return 0
    flock -w $((start_timeout + 30)) "$lock_fd" ||
        fail "another gpu-sidecar.sh has held the lock on $FLINK_PID_DIR for $((start_timeout + 30)) s"
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

# Ends the supervisor, if one runs, so that it restarts nothing: SIGTERM, which it obeys at
# once (also during a backoff wait), then SIGKILL after 10 s.
stop_supervisor() {
    local pid waited_ms=0
    pid=$(supervisor_pid) || { rm -f "$supervisor_pid_file"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    while alive "$pid"; do
        if [ "$waited_ms" -ge 10000 ]; then
            kill -KILL "$pid" 2>/dev/null
            say "the supervisor (pid $pid) did not end within 10 s of SIGTERM; sent SIGKILL" >&2
            break
        fi
        sleep 0.05
        waited_ms=$((waited_ms + 50))
    done
    rm -f "$supervisor_pid_file"
}

# The supervisor: runs the sidecar, and restarts it when it exits unexpectedly after it was
# READY once. Its output (these lines) goes to the sidecar's log.
supervise() {
    local child='' delay_ms=$restart_delay_ms code started crashes=() recent now seconds
    local stopping=false
    note() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) gpu-sidecar.sh supervisor (pid $$): $*"; }
    # Obeyed at once: `wait` returns early on a trapped signal, and so does the backoff wait.
    trap 'stopping=true; [ -n "${backoff:-}" ] && kill "$backoff" 2>/dev/null' TERM INT
    trap 'rm -f "$supervisor_pid_file"' EXIT
    while true; do
        rm -f "$failed_file"
        "$binary" -c "$conf" >>"$out" 2>>"$log" </dev/null &
        child=$!
        echo "$child" >"$pid_file"
        started=$SECONDS
        note "started $DAEMON as pid $child"
        code=0
        wait "$child" || code=$?
        # A signal to the supervisor interrupts `wait`; the sidecar runs on.
        while ! $stopping && alive "$child"; do
            code=0
            wait "$child" || code=$?
        done
        if $stopping; then
            note "asked to stop: restarting nothing"
            exit 0
        fi
        rm -f "$pid_file"
        local how="exit code $code"
        [ "$code" -gt 128 ] && how="signal $((code - 128))"
        if [ ! -f "$ready_file" ]; then
            note "$DAEMON (pid $child) ended with $how before it was READY; not restarting"
            exit "$code"
        fi
        if [ "$code" -eq 2 ]; then
            note "$DAEMON (pid $child) ended with exit code 2 (a bad configuration, or a model it cannot serve): not restarting it; fix the cause, then run gpu-sidecar.sh start"
            echo "it ended with exit code 2 (a bad configuration, or a model it cannot serve); not restarted" >"$failed_file"
            exit 2
        fi
        now=$SECONDS
        # A run that lasted the whole window starts the count and the backoff afresh.
        if [ $((now - started)) -ge "$CRASH_WINDOW" ]; then
            crashes=()
            delay_ms=$restart_delay_ms
        fi
        recent=()
        for seconds in "${crashes[@]}" "$now"; do
            [ $((now - seconds)) -lt "$CRASH_WINDOW" ] && recent+=("$seconds")
        done
        crashes=("${recent[@]}")
        if [ "${#crashes[@]}" -gt "$CRASHES_ALLOWED" ]; then
            note "$DAEMON (pid $child) ended with $how, its ${#crashes[@]}th crash within $((CRASH_WINDOW / 60)) minutes: giving up; see the log above, then run gpu-sidecar.sh start"
            echo "it crashed ${#crashes[@]} times within $((CRASH_WINDOW / 60)) minutes (last: $how); not restarted" >"$failed_file"
            exit 1
        fi
        note "$DAEMON (pid $child) ended with $how (crash ${#crashes[@]} of at most $CRASHES_ALLOWED within $((CRASH_WINDOW / 60)) minutes); restarting in $((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000))) s"
        sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))" &
        backoff=$!
        wait "$backoff" 2>/dev/null
        backoff=
        $stopping && exit 0
        delay_ms=$((delay_ms * 2))
        [ "$delay_ms" -gt "$restart_max_delay_ms" ] && delay_ms=$restart_max_delay_ms
    done
}

# Starts the supervisor (which starts the sidecar) and waits for READY; with the lock held.
start_locked() {
    local pid supervisor code=0
    if pid=$(running_pid); then
        fail "$DAEMON is already running as pid $pid (pid file $pid_file); stop it first"
    fi
    if supervisor=$(supervisor_pid); then
        fail "$DAEMON is already being started by its supervisor (pid $supervisor); stop it first"
    fi
    mkdir -p "$FLINK_PID_DIR" "$FLINK_LOG_DIR" || fail "cannot create $FLINK_PID_DIR or $FLINK_LOG_DIR"
    rotate_logs
    rm -f "$ready_file" "$failed_file"
    # In its own session with every standard stream on files: nothing holds the caller's
    # terminal (`ssh host gpu-sidecar.sh start` returns), and the lock stays here.
    setsid bash "$bin/gpu-sidecar.sh" supervise </dev/null >>"$log" 2>&1 {lock_fd}>&- &
    supervisor=$!
    echo "$supervisor" >"$supervisor_pid_file"
    say "starting $DAEMON under a supervisor (pid $supervisor; config $conf, log $log)"

    local deadline=$((SECONDS + start_timeout)) state=
    while true; do
        if ! alive "$supervisor"; then
            wait "$supervisor" || code=$?
            rm -f "$supervisor_pid_file" "$pid_file"
            echo "gpu-sidecar.sh: $DAEMON died during start-up with exit code $code; the end of $log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        resolve_health_port
        state=$(probe_health)
        if [ "$state" = READY ] && pid=$(running_pid 2>/dev/null); then
            touch "$ready_file"
            say "$DAEMON is READY (pid $pid, supervisor pid $supervisor, health http://$health_host:$health_port/health)"
            exit 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "gpu-sidecar.sh: $DAEMON was not READY within $start_timeout s (health: ${state:-no answer}); stopping it. The end of $log:" >&2
            tail -n 20 "$log" >&2
            stop_supervisor
            if pid=$(running_pid 2>/dev/null); then
                terminate "$pid"
                [ $? -eq 2 ] || rm -f "$pid_file"
            fi
            exit 1
        fi
        sleep 0.2
    done
}

start() {
    require_enabled
    binary=$(find_binary) || exit
    read_config
    lock
    start_locked
}

stop() {
    binary=$(find_binary) || exit
    stop_supervisor
    rm -f "$ready_file" "$failed_file"
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
    local pid state supervisor='' supervised="no supervisor: nothing restarts it"
    if supervisor=$(supervisor_pid); then
        supervised="supervised by pid $supervisor"
    fi
    if ! pid=$(running_pid); then
        if [ -n "$supervisor" ]; then
            say "$DAEMON is not running now; its supervisor (pid $supervisor) is restarting it"
            exit 1
        fi
        if [ -f "$failed_file" ]; then
            say "$DAEMON is stopped: $(cat "$failed_file") (see $log)"
        else
            say "$DAEMON is stopped"
        fi
        exit 3
    fi
    read_config
    resolve_health_port
    state=$(probe_health)
    if [ "$state" = READY ]; then
        say "$DAEMON is running as pid $pid and READY; $supervised"
        exit 0
    fi
    say "$DAEMON is running as pid $pid but not ready (health: ${state:-no answer}); $supervised"
    exit 1
}

start_foreground() {
    require_enabled
    binary=$(find_binary) || exit
    [ -f "$conf" ] || fail "config file $conf does not exist (set GPU_SIDECAR_CONF or FLINK_CONF_DIR)" 2
    exec "$binary" -c "$conf"
}

# --- Beside Flink's TaskManagers (called by gpu-sidecar-taskmanager.sh) ---------------------

# Pids of the TaskManagers of this host that are alive: Flink's pid file (background ones)
# and the users file (foreground ones).
live_taskmanagers() {
    local file pid
    for file in "$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-taskexecutor.pid" "$users_file"; do
        [ -f "$file" ] || continue
        while read -r pid; do
            [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && echo "$pid"
        done <"$file"
    done
}

# A TaskManager is starting: start the sidecar unless it runs already. $1: start or
# start-foreground; $2: the pid the foreground TaskManager will have.
taskmanager_starting() {
    binary=$(find_binary) || exit
    read_config
    lock
    if [ "$1" = start-foreground ]; then
        echo "$2" >>"$users_file"
    fi
    local pid
    if pid=$(running_pid 2>/dev/null) || pid=$(supervisor_pid); then
        say "$DAEMON runs already (pid $pid) for this host's TaskManagers"
        exit 0
    fi
    start_locked
}

# A TaskManager has stopped (or failed to start): stop the sidecar if no TaskManager of this
# host is left. $1, when given: the pid of a foreground TaskManager that has ended.
taskmanager_stopped() {
    lock
    if [ -n "${1:-}" ] && [ -f "$users_file" ]; then
        grep -vx "$1" "$users_file" >"$users_file.tmp"
        mv -f "$users_file.tmp" "$users_file"
    fi
    if [ -n "$(live_taskmanagers)" ]; then
        exit 0
    fi
    rm -f "$users_file"
    stop
}

# Holds the read end of a pipe whose write end the foreground TaskManager keeps open for as
# long as it runs: its end (whatever the cause) closes the pipe, and the sidecar is released.
taskmanager_lifeline() {
    cat >/dev/null
    mkdir -p "$FLINK_LOG_DIR" && exec >>"$log" 2>&1
    taskmanager_stopped "$1"
}

# --- Installing into a Flink distribution ----------------------------------------------------

# What install-flink adds, relative to the release's root and to FLINK_HOME alike.
INSTALLED=(bin/gpu-sidecar bin/gpu-sidecar.sh bin/gpu-sidecar-taskmanager.sh lib/onnxruntime models)
# Where install-flink keeps what uninstall-flink needs, inside FLINK_HOME.
RECORD=.gpu-sidecar-install
# The lines added to Flink's bin/taskmanager.sh, after `. "$bin"/config.sh`.
HOOK_BEGIN="# >>> gpu-sidecar: added by gpu-sidecar.sh install-flink; uninstall-flink removes it"
# shellcheck disable=SC2016 # the line as taskmanager.sh reads it
HOOK_LINE='. "$bin"/gpu-sidecar-taskmanager.sh'
HOOK_END="# <<< gpu-sidecar"

flink_home_of() {
    [ -n "${1:-}" ] || fail "$USAGE" 2
    local flink_home
    flink_home=$(cd "$1" 2>/dev/null && pwd) || fail "FLINK_HOME $1 is not a folder" 2
    if [ ! -f "$flink_home/bin/taskmanager.sh" ] || [ ! -f "$flink_home/bin/config.sh" ] ||
        ! compgen -G "$flink_home/lib/flink-dist*.jar" >/dev/null; then
        fail "$flink_home is not a Flink distribution (no bin/taskmanager.sh, bin/config.sh, lib/flink-dist*.jar)" 2
    fi
    echo "$flink_home"
}

install_flink() {
    local flink_home release jar item
    flink_home=$(flink_home_of "${1:-}") || exit
    release=$(dirname "$bin")
    jar=$(compgen -G "$release/lib/flink-gpu-sidecar-client-*.jar" | head -n 1)
    if [ ! -x "$release/bin/$DAEMON" ] || [ -z "$jar" ] || [ ! -d "$release/lib/onnxruntime" ]; then
        fail "install-flink runs from an unpacked release (bin/gpu-sidecar, lib/flink-gpu-sidecar-client-*.jar, lib/onnxruntime/); $release is not one (bin/dev.sh dist builds it)" 2
    fi
    if [ -d "$flink_home/$RECORD" ]; then
        say "gpu-sidecar $(cat "$flink_home/$RECORD/version" 2>/dev/null) is installed in $flink_home already; nothing to do (uninstall-flink first to reinstall)"
        exit 0
    fi
    local taskmanager=$flink_home/bin/taskmanager.sh
    # shellcheck disable=SC2016 # the line as Flink writes it, not an expansion
    if [ "$(grep -cxF '. "$bin"/config.sh' "$taskmanager")" != 1 ]; then
        fail "$taskmanager is not the one this installs into (no single line '. \"\$bin\"/config.sh'); start the sidecar by hand with bin/gpu-sidecar.sh" 2
    fi
    for item in "${INSTALLED[@]}" "lib/$(basename "$jar")"; do
        [ -e "$flink_home/$item" ] && fail "$flink_home/$item exists already; remove it, then install again" 2
    done
    mkdir "$flink_home/$RECORD" || fail "cannot write into $flink_home"
    # Whatever fails half-way leaves a record that uninstall-flink undoes: each item is listed
    # before it is copied.
    local broken="; run 'gpu-sidecar.sh uninstall-flink $flink_home' to undo what was done"
    cp -p "$taskmanager" "$flink_home/$RECORD/taskmanager.sh" || fail "cannot keep a copy of $taskmanager$broken"
    "$release/bin/$DAEMON" --version | cut -d' ' -f2 >"$flink_home/$RECORD/version"
    for item in "${INSTALLED[@]}" "lib/$(basename "$jar")"; do
        echo "$item" >>"$flink_home/$RECORD/files"
    done
    for item in "${INSTALLED[@]}"; do
        cp -pR "$release/$item" "$flink_home/$item" || fail "cannot copy $item into $flink_home$broken"
    done
    cp -p "$jar" "$flink_home/lib/" || fail "cannot copy $(basename "$jar") into $flink_home/lib$broken"
    if [ -e "$flink_home/conf/sidecar.toml" ]; then
        say "keeping the existing $flink_home/conf/sidecar.toml"
    else
        cp -p "$release/conf/sidecar.toml" "$flink_home/conf/sidecar.toml" ||
            fail "cannot copy conf/sidecar.toml into $flink_home$broken"
        sha256sum "$flink_home/conf/sidecar.toml" | cut -d' ' -f1 >"$flink_home/$RECORD/sidecar.toml.sha256"
    fi
    # The hook goes right after config.sh, which computes what it needs. Written whole to a
    # file beside it first, then into taskmanager.sh in place, which keeps its mode and owner.
    local hooked=$flink_home/$RECORD/taskmanager.sh.hooked
    # shellcheck disable=SC2016
    if ! awk -v begin="$HOOK_BEGIN" -v line="$HOOK_LINE" -v end="$HOOK_END" \
        '{ print } $0 == ". \"$bin\"/config.sh" { print begin; print line; print end }' \
        "$flink_home/$RECORD/taskmanager.sh" >"$hooked" || ! cat "$hooked" >"$taskmanager"; then
        fail "cannot write the hook into $taskmanager$broken"
    fi
    rm -f "$hooked"
    say "installed gpu-sidecar $(cat "$flink_home/$RECORD/version") into $flink_home: the client jar in lib/, bin/gpu-sidecar and bin/gpu-sidecar.sh, ONNX Runtime in lib/onnxruntime/, the sample model in models/, conf/sidecar.toml; bin/taskmanager.sh starts and stops the sidecar once 'gpu-sidecar.enabled: true' is in conf/config.yaml"
}

uninstall_flink() {
    local flink_home item record
    flink_home=$(flink_home_of "${1:-}") || exit
    record=$flink_home/$RECORD
    if [ ! -d "$record" ]; then
        say "gpu-sidecar is not installed in $flink_home; nothing to do"
        exit 0
    fi
    local running
    running=$(FLINK_PID_DIR='' bash "$flink_home/bin/gpu-sidecar.sh" status 2>/dev/null)
    case $running in
        *"running as pid"*) fail "the sidecar still runs ($running); stop the TaskManagers (bin/stop-cluster.sh) first" ;;
    esac
    if grep -qxF "$HOOK_BEGIN" "$flink_home/bin/taskmanager.sh"; then
        cat "$record/taskmanager.sh" >"$flink_home/bin/taskmanager.sh"
        touch -r "$record/taskmanager.sh" "$flink_home/bin/taskmanager.sh"
    else
        say "$flink_home/bin/taskmanager.sh has no gpu-sidecar hook any more; left as it is" >&2
    fi
    while read -r item; do
        [ -n "$item" ] && rm -rf "${flink_home:?}/$item"
    done <"$record/files"
    if [ -f "$record/sidecar.toml.sha256" ]; then
        if [ "$(sha256sum "$flink_home/conf/sidecar.toml" 2>/dev/null | cut -d' ' -f1)" = "$(cat "$record/sidecar.toml.sha256")" ]; then
            rm -f "$flink_home/conf/sidecar.toml"
        else
            say "keeping $flink_home/conf/sidecar.toml: it was changed since install-flink" >&2
        fi
    fi
    rm -rf "$record"
    say "removed gpu-sidecar from $flink_home"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    start-foreground) start_foreground ;;
    install-flink) install_flink "${2:-}" ;;
    uninstall-flink) uninstall_flink "${2:-}" ;;
    # Internal: the supervisor, started by `start`.
    supervise) binary=$(find_binary) || exit; supervise ;;
    # Internal: called by gpu-sidecar-taskmanager.sh inside Flink's taskmanager.sh.
    taskmanager-starting) taskmanager_starting "${2:-start}" "${3:-}" ;;
    taskmanager-stopped) binary=$(find_binary) || exit; taskmanager_stopped "${2:-}" ;;
    taskmanager-lifeline) binary=$(find_binary) || exit; taskmanager_lifeline "${2:-}" ;;
    *) fail "$USAGE" 2 ;;
esac
