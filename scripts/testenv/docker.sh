# shellcheck shell=bash
# Docker Engine from Debian's archive: the test cluster's container runtime and where its images
# are built. Sourced by scripts/testenv.sh.

# Debian's client (20.10). A newer client earlier on PATH may need the buildx plugin for builds,
# which is not installed; Debian's builds with its built-in BuildKit.
CHATFLOW_DOCKER_CLIENT=/usr/bin/docker
CHATFLOW_DOCKERD=/usr/sbin/dockerd

# Session id of the Docker daemon this shell started; empty when it uses one it found running.
: "${_CHATFLOW_DOCKERD_SID:=}"

_chatflow_docker() { "$CHATFLOW_DOCKER_CLIENT" "$@"; }

chatflow_docker_install() {
    _chatflow_ensure_commands "$CHATFLOW_DOCKER_CLIENT:docker.io" "$CHATFLOW_DOCKERD:docker.io"
}

_chatflow_docker_answers() { _chatflow_docker info >/dev/null 2>&1; }

# Uses the Docker daemon if one answers, otherwise starts one in the background (stopped again by
# chatflow_docker_stop). Exports CHATFLOW_DOCKER, the client to use.
chatflow_docker_start() {
    local cache log rundir timeout deadline
    cache="$(_chatflow_cache)"
    log="$cache/logs/dockerd.log"
    rundir="$cache/run/docker"
    timeout="${CHATFLOW_DOCKER_TIMEOUT:-60}"

    if [[ ! -x "$CHATFLOW_DOCKER_CLIENT" || ! -x "$CHATFLOW_DOCKERD" ]]; then
        _chatflow_log "Docker is not installed; run chatflow_docker_install first"
        return 1
    fi
    export CHATFLOW_DOCKER="$CHATFLOW_DOCKER_CLIENT"
    if [[ -n "$_CHATFLOW_DOCKERD_SID" ]] || _chatflow_docker_answers; then
        return 0
    fi

    mkdir -p "$rundir" "$cache/logs" || return 1
    _chatflow_install_traps
    _chatflow_log "starting the Docker daemon (log: $log)"
    # Its data (/var/lib/docker) outlives the daemon: locally built images are a cache.
    _chatflow_spawn "$rundir/dockerd.pid" "$log" "$CHATFLOW_DOCKERD" || true
    _CHATFLOW_DOCKERD_SID="$(cat "$rundir/dockerd.pid" 2>/dev/null || true)"
    if [[ -z "$_CHATFLOW_DOCKERD_SID" ]]; then
        _chatflow_log "dockerd did not start; last lines of $log:"
        tail -n 30 "$log" >&2
        return 1
    fi
    deadline=$((SECONDS + timeout))
    until _chatflow_docker_answers; do
        if [[ -z "$(_chatflow_session_pids "$_CHATFLOW_DOCKERD_SID")" ]] || ((SECONDS >= deadline)); then
            _chatflow_log "the Docker daemon did not answer within ${timeout}s; last lines of $log:"
            tail -n 30 "$log" >&2
            chatflow_docker_stop
            return 1
        fi
        sleep 0.2
    done
    _chatflow_log "Docker daemon ready (PID $_CHATFLOW_DOCKERD_SID)"
}

# Stops the Docker daemon if this shell started it; one that was already running stays.
chatflow_docker_stop() {
    local sid="$_CHATFLOW_DOCKERD_SID" i
    [[ -n "$sid" ]] || return 0
    # dockerd first, alone: it stops its containerd itself, and a containerd gone first would
    # leave it retrying.
    kill -TERM "$sid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        _chatflow_alive "$sid" || break
        sleep 0.1
    done
    _chatflow_stop_session dockerd "$sid" 5
    _CHATFLOW_DOCKERD_SID=""
    rm -f "$(_chatflow_cache)/run/docker/dockerd.pid"
}

# Prints "ADDRESS CIDR" of the Docker bridge: the node's address, where pods reach the host.
_chatflow_docker_bridge() {
    local cidr
    cidr="$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{ print $4; exit }' || true)"
    if [[ -z "$cidr" ]]; then
        _chatflow_log "the Docker bridge docker0 has no IPv4 address; the cluster needs Docker's default bridge network"
        return 1
    fi
    printf '%s %s\n' "${cidr%/*}" "$cidr"
}
