# shellcheck shell=bash
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

# Sourced by Flink's bin/taskmanager.sh right after config.sh (`gpu-sidecar.sh install-flink`
# adds that line; `uninstall-flink` removes it): gpu-sidecar starts before the first
# TaskManager of this host and stops after the last, one sidecar per host.
#
# Off unless `gpu-sidecar.enabled: true` is in Flink's config.yaml (or GPU_SIDECAR_ENABLED=true).
# A sidecar that cannot start keeps the TaskManager from starting, and taskmanager.sh exits
# non-zero with its reason, unless `gpu-sidecar.required: false`.
#
# From taskmanager.sh and config.sh: STARTSTOP, bin, YAML_CONF, readFromConfig, FLINK_PID_DIR,
# FLINK_LOG_DIR. Everything here is named gpu_sidecar_* so as not to touch Flink's variables.

# shellcheck disable=SC2154 # bin and the rest come from taskmanager.sh and config.sh
gpu_sidecar_enabled=${GPU_SIDECAR_ENABLED:-$(readFromConfig gpu-sidecar.enabled false "${YAML_CONF}")}
if [ "$gpu_sidecar_enabled" = true ]; then
    # What config.sh computed from config.yaml, which it exports not.
    export GPU_SIDECAR_ENABLED=true FLINK_PID_DIR FLINK_LOG_DIR
    case $STARTSTOP in
        start | start-foreground)
            if ! "$bin"/gpu-sidecar.sh taskmanager-starting "$STARTSTOP" $$; then
                if [ "$(readFromConfig gpu-sidecar.required true "${YAML_CONF}")" != false ]; then
                    echo "[ERROR] gpu-sidecar did not start (see above), so this TaskManager does not either: its jobs would fail. Fix the cause, or set gpu-sidecar.required: false in config.yaml to start TaskManagers without it." >&2
                    exit 1
                fi
                echo "[WARNING] gpu-sidecar did not start (see above); starting the TaskManager without it (gpu-sidecar.required: false)." >&2
            fi
            if [ "$STARTSTOP" = start-foreground ]; then
                # flink-console.sh execs the TaskManager into this very process, which keeps
                # the write end of this pipe for as long as it runs: when it ends, however it
                # ends, the reader releases the sidecar.
                # shellcheck disable=SC2034 # the descriptor is held open, never written
                exec {gpu_sidecar_lifeline}> >(exec "$bin"/gpu-sidecar.sh taskmanager-lifeline $$)
            else
                # A TaskManager that did not start leaves nobody to the sidecar.
                trap '"$bin"/gpu-sidecar.sh taskmanager-stopped' EXIT
            fi
            ;;
        stop | stop-all)
            # Once the TaskManager has stopped: the last one of this host stops the sidecar.
            trap '"$bin"/gpu-sidecar.sh taskmanager-stopped' EXIT
            ;;
    esac
fi
