#!/usr/bin/env bash
# Make a Docker-compatible Engine API available on this machine via podman
# (rootful, runc, cgroupfs on cgroup v1) and build the sandbox image without
# any container registry. Idempotent: safe to run any number of times.
#
#   bash .ci/podman.sh            # then: export DOCKER_HOST=unix:///run/coderunner-podman.sock
#   bash .ci/podman.sh stop       # stop the service this script started
#
# Env overrides:
#   DOCKER_SOCK      socket path            (default /run/coderunner-podman.sock)
#   PODMAN_LOG       service log file       (default /tmp/coderunner-podman.log)
#   SANDBOX_IMAGE    sandbox image tag      (default coderunner-sandbox:test)
#   BASE_IMAGE       imported base image    (default coderunner-python-base:latest)
#   CONTAINERS_CONF  containers.conf path   (default /etc/containers/containers.conf)
#   FORCE_REBUILD=1  rebuild both images even if up to date
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOCK=${DOCKER_SOCK:-/run/coderunner-podman.sock}
SOCK=${SOCK#unix://}
LOG=${PODMAN_LOG:-/tmp/coderunner-podman.log}
SANDBOX_IMAGE=${SANDBOX_IMAGE:-coderunner-sandbox:test}
BASE_IMAGE=${BASE_IMAGE:-coderunner-python-base:latest}
CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}
export CONTAINERS_CONF=$CONF
FORCE_REBUILD=${FORCE_REBUILD:-0}

[ "$(id -u)" -eq 0 ] || { echo "[podman.sh] must run as root (rootful podman)" >&2; exit 1; }

T0=$(date +%s.%N)
STEP_T=$T0
step() {  # step NAME: print the time the previous step took, start a new one
    local now
    now=$(date +%s.%N)
    [ -n "${STEP_NAME:-}" ] && awk -v a="$STEP_T" -v b="$now" -v n="$STEP_NAME" \
        'BEGIN { printf "[podman.sh] %-20s %6.2fs\n", n, b - a }'
    STEP_NAME=${1:-}
    STEP_T=$now
    return 0
}
log() { echo "[podman.sh] $*"; }

if [ "${1:-}" = "stop" ]; then  # stop the service this script started (its pid file), if any
    pid=$(cat "$SOCK.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "podman system service"; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped the service on $SOCK (pid $pid)"
    fi
    rm -f "$SOCK" "$SOCK.pid"
    exit 0
fi

# --- 1. packages --------------------------------------------------------------
step "packages"
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only if the package lists don't know the packages yet
    # (or the install fails with stale lists).
    if ! apt-cache show "${need[@]}" >/dev/null 2>&1; then
        apt-get update -qq
    fi
    if ! apt-get install -y -qq "${need[@]}" >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

# --- 2. containers.conf -----------------------------------------------------------
# crun fails on this machine's cgroup v1 layout; runc works. No systemd as PID 1,
# so cgroupfs + file events. Ulimits keep runaway fds/processes in check
# (nproc is per UID across ALL containers: uid 1000 is shared, no userns).
step "containers.conf"
desired_conf='# Written by .ci/podman.sh (Code Runner). Do not edit by hand.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Seconds an exited exec session (and its conmon) is kept for exec-inspect.
# Default 300 leaves 2 conmon processes per exec_run alive for 5 minutes.
exit_command_delay = 5
'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$desired_conf")" ]; then
    mkdir -p "$(dirname "$CONF")"
    printf '%s' "$desired_conf" | tee "$CONF" >/dev/null
    log "wrote $CONF"
    CONF_CHANGED=1
else
    CONF_CHANGED=0
fi

# --- 3. API service -----------------------------------------------------------------
step "api service"
ping_ok() { [ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" = "OK" ]; }
# The service answering on $SOCK: from our pid file, else found by its command line.
service_pid() {
    local pid
    pid=$(cat "$SOCK.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -qa "system" "/proc/$pid/cmdline" 2>/dev/null; then echo "$pid"; return; fi
    for d in /proc/[0-9]*; do
        if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q "podman system service .*$SOCK"; then
            echo "${d#/proc/}"; return
        fi
    done
}
stop_service() {
    local pid
    pid=$(service_pid)
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$SOCK" "$SOCK.pid"
}
# The service must run in /: its conmon processes inherit its working folder. One started in a
# clone writes conmon's `oom` marker files into that clone, and once the clone is deleted it
# answers pings but cannot run a container ("Failed to get working directory").
cwd_not_root() {
    local pid
    pid=$(service_pid)
    [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" != "/" ]
}
start_service() {
    mkdir -p "$(dirname "$SOCK")"
    rm -f "$SOCK"
    # From /: the service and every conmon it starts keep this working folder, which must outlive
    # any clone. setsid + nohup: the service outlives this shell; `podman.sh stop` ends it.
    (cd / && exec env CONTAINERS_CONF="$CONF" setsid nohup podman system service --time=0 "unix://$SOCK" \
        >>"$LOG" 2>&1 </dev/null) &
    echo $! >"$SOCK.pid"
    for i in $(seq 300); do
        ping_ok && break
        [ "$i" -eq 300 ] && { log "API did not answer on $SOCK; log:"; tail -20 "$LOG" >&2; exit 1; }
        sleep 0.1
    done
    log "started podman system service (pid $(cat "$SOCK.pid"), log $LOG) on $SOCK"
}

if ping_ok && [ "$CONF_CHANGED" = 1 ]; then
    # A service started before the config was (re)written would keep the old one.
    log "config changed: restarting service on $SOCK"
    stop_service
elif ping_ok && cwd_not_root; then
    log "the service on $SOCK runs in $(readlink "/proc/$(service_pid)/cwd"), not /: replacing it"
    stop_service
fi
if ping_ok; then
    log "API already answering on $SOCK"
else
    start_service
fi

# --- 4. base image (no registry: import a rootfs tarball) -----------------------
step "base image"
label_of() {  # label_of IMAGE KEY
    podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true
}
PYTHON=${PYTHON:-/usr/bin/python3.11}
base_key=$( { sha256sum <"$HERE/deploy/sandbox/rootfs.sh"; "$PYTHON" -VV; } | sha256sum | cut -c1-16)
if [ "$FORCE_REBUILD" != 1 ] && [ "$(label_of "$BASE_IMAGE" coderunner.rootfs)" = "$base_key" ]; then
    log "$BASE_IMAGE up to date ($base_key)"
else
    tmp=$(mktemp -d)
    PYTHON=$PYTHON bash "$HERE/deploy/sandbox/rootfs.sh" "$tmp/rootfs.tar"
    podman import -q \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL coderunner.rootfs=$base_key" \
        "$tmp/rootfs.tar" "$BASE_IMAGE" >/dev/null
    rm -rf "$tmp"
    log "imported $BASE_IMAGE ($base_key)"
    FORCE_REBUILD=1  # base changed -> sandbox must be rebuilt
fi

# --- 5. sandbox image --------------------------------------------------------------
step "sandbox image"
sandbox_key=$( { sha256sum <"$HERE/deploy/sandbox/Dockerfile"; podman image inspect --format '{{.Id}}' "$BASE_IMAGE"; } \
    | sha256sum | cut -c1-16)
if [ "$FORCE_REBUILD" != 1 ] && [ "$(label_of "$SANDBOX_IMAGE" coderunner.sandbox)" = "$sandbox_key" ]; then
    log "$SANDBOX_IMAGE up to date ($sandbox_key)"
else
    ctx=$(mktemp -d)  # the Dockerfile COPYs nothing: use an empty context
    # --format docker: the OCI format drops HEALTHCHECK.
    podman build -q --pull=never --layers=false --format docker \
        --build-arg "BASE=localhost/${BASE_IMAGE}" \
        --label "coderunner.sandbox=$sandbox_key" \
        -f "$HERE/deploy/sandbox/Dockerfile" -t "$SANDBOX_IMAGE" "$ctx" >/dev/null
    rmdir "$ctx"
    # drop the previous (now dangling) builds/imports -- only ours
    podman image prune -f --filter label=coderunner.sandbox >/dev/null 2>&1 || true
    podman image prune -f --filter label=coderunner.rootfs >/dev/null 2>&1 || true
    log "built $SANDBOX_IMAGE ($sandbox_key)"
fi

# --- 6. smoke test through the service (podman remote client) ------------------
step "smoke test"
smoke() {
    podman --url "unix://$SOCK" run --rm --network none --read-only --cap-drop ALL \
        --security-opt no-new-privileges "$SANDBOX_IMAGE" python3 -I -S -c 'import os;print(os.getuid())' 2>&1
}
out=$(smoke || true)
if [ "$out" != "1000" ]; then
    # A service that answers but cannot run containers (whatever the cause): replace it once.
    log "the service on $SOCK cannot run a container (${out:0:200}): replacing it"
    stop_service
    start_service
    out=$(smoke || true)
fi
[ "$out" = "1000" ] || { log "smoke test failed: got '$out'"; exit 1; }
step ""

awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "[podman.sh] %-20s %6.2fs\n", "total", b - a }'
echo "DOCKER_HOST=unix://$SOCK"
