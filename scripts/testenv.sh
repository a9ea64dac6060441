#!/usr/bin/env bash
# Real servers for the test suite, started without Docker and bound to 127.0.0.1 only.
#
# Source it from another bash script:
#
#     source scripts/testenv.sh
#     chatflow_env_up        # installs (cached) and starts everything, exports the client env
#     ...                    # run tests
#     chatflow_env_down      # optional: an EXIT/INT/TERM trap does it anyway
#
# or run a single command inside the environment:
#
#     scripts/testenv.sh run -- cargo test --workspace -- --include-ignored
#     scripts/testenv.sh install      # only fill the cache (e.g. a CI cache-warming step)
#
# Settings (environment):
#   CHATFLOW_CACHE                  cache root (default: ~/.cache/chatflow)
#   CHATFLOW_PYTHON                 interpreter for the LocalStack venv (default: python3)
#   CHATFLOW_LOCALSTACK_TIMEOUT     seconds to wait for LocalStack to answer (default: 120)
#
# Everything here must work under the caller's `set -euo pipefail`, so functions return
# non-zero instead of exiting and never read unset variables.

if [[ -z "${BASH_VERSION:-}" ]]; then
    echo "testenv.sh: needs bash" >&2
    # shellcheck disable=SC2317  # exit is reached when the file is executed, not sourced
    return 1 2>/dev/null || exit 1
fi

# Sourcing twice must not reset the record of what is running, or the trap would lose it.
if [[ -z "${_CHATFLOW_TESTENV_LOADED:-}" ]]; then
    _CHATFLOW_TESTENV_LOADED=1

    # Newer localstack-core releases (4.14, 2026.x) fail on Python 3.11 with a SyntaxError; the
    # extra pins keep start-up from breaking on cbor2 6, pyOpenSSL 26 and Twisted's missing
    # service_identity.
    CHATFLOW_LOCALSTACK_VERSION=4.13.1
    CHATFLOW_LOCALSTACK_PIP_SPEC=(
        "localstack-core[base-runtime]==${CHATFLOW_LOCALSTACK_VERSION}"
        'cbor2<6'
        'cryptography<45'
        'pyopenssl<25'
        'service-identity'
    )
    CHATFLOW_LOCALSTACK_PORT=4566

    # Session id of the running LocalStack (its PID); empty when nothing is running.
    _CHATFLOW_LOCALSTACK_SID=""
    _CHATFLOW_TRAPS_INSTALLED=""
    _CHATFLOW_PREV_EXIT_TRAP=""
fi

_chatflow_log() { printf 'testenv: %s\n' "$*" >&2; }

_chatflow_cache() { printf '%s' "${CHATFLOW_CACHE:-${HOME:?HOME is not set}/.cache/chatflow}"; }

_chatflow_localstack_venv() { printf '%s/localstack-%s' "$(_chatflow_cache)" "$CHATFLOW_LOCALSTACK_VERSION"; }

# True when something accepts TCP connections on 127.0.0.1:$1.
_chatflow_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_chatflow_require_curl() {
    if ! command -v curl >/dev/null 2>&1; then
        _chatflow_log "curl is required to check that LocalStack is ready, and it is not installed (on Debian: apt-get install -y curl)"
        return 1
    fi
}

# Live (non-zombie) processes of session $1. A zombie still answers `kill -0`, so that test would
# report a stopped server as running until its parent reaps it.
_chatflow_session_pids() {
    ps -o pid=,stat= -s "$1" 2>/dev/null | awk '$2 !~ /^Z/ { print $1 }'
}

_chatflow_localstack_installed() {
    local venv
    venv="$(_chatflow_localstack_venv)"
    # The marker holds the package list, so changing a pin reinstalls instead of reusing a venv
    # built from other versions.
    [[ -f "$venv/.chatflow-installed" && -x "$venv/bin/python" &&
        "$(cat "$venv/.chatflow-installed")" == "${CHATFLOW_LOCALSTACK_PIP_SPEC[*]}" ]]
}

chatflow_localstack_install() {
    _chatflow_localstack_installed && return 0

    local cache lockfd rc=0
    cache="$(_chatflow_cache)"
    mkdir -p "$cache/logs"
    # Two runs sharing the cache must not build into the same venv at once. pip inherits the
    # descriptor, so a pip orphaned by an interrupted run also holds the lock until it exits.
    if command -v flock >/dev/null 2>&1; then
        exec {lockfd}>"$cache/localstack-install.lock"
        if ! flock -n "$lockfd"; then
            _chatflow_log "waiting for another LocalStack install to finish"
            flock "$lockfd"
        fi
    fi
    _chatflow_localstack_installed || _chatflow_localstack_do_install || rc=$?
    if [[ -n "${lockfd:-}" ]]; then
        exec {lockfd}>&-
    fi
    return "$rc"
}

_chatflow_localstack_do_install() {
    local venv python log
    venv="$(_chatflow_localstack_venv)"
    python="${CHATFLOW_PYTHON:-python3}"
    log="$(_chatflow_cache)/logs/localstack-install.log"

    if ! command -v "$python" >/dev/null 2>&1; then
        _chatflow_log "$python not found; LocalStack needs Python 3.11 (on Debian: apt-get install -y python3 python3-venv)"
        return 1
    fi
    _chatflow_log "installing LocalStack ${CHATFLOW_LOCALSTACK_VERSION} into $venv (about 30 s, 200 MB; log: $log)"

    # No valid marker means an earlier install died half-way or used other pins: start from
    # nothing rather than trust it.
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >"$log" 2>&1; then
        _chatflow_log "'$python -m venv' failed (on Debian the venv module is in python3-venv):"
        tail -n 20 "$log" >&2
        rm -rf "$venv"
        return 1
    fi
    if ! "$venv/bin/pip" install --disable-pip-version-check --no-input \
        "${CHATFLOW_LOCALSTACK_PIP_SPEC[@]}" >>"$log" 2>&1; then
        _chatflow_log "pip install of LocalStack failed; last lines of $log:"
        tail -n 30 "$log" >&2
        rm -rf "$venv"
        return 1
    fi
    printf '%s' "${CHATFLOW_LOCALSTACK_PIP_SPEC[*]}" >"$venv/.chatflow-installed"
}

chatflow_localstack_start() {
    local venv cache rundir log timeout deadline port sid=""
    venv="$(_chatflow_localstack_venv)"
    cache="$(_chatflow_cache)"
    rundir="$cache/run/localstack"
    log="$cache/logs/localstack.log"
    port="$CHATFLOW_LOCALSTACK_PORT"
    timeout="${CHATFLOW_LOCALSTACK_TIMEOUT:-120}"

    if [[ -n "$_CHATFLOW_LOCALSTACK_SID" ]]; then
        _chatflow_log "LocalStack is already running (PID $_CHATFLOW_LOCALSTACK_SID)"
        return 0
    fi
    _chatflow_require_curl || return 1
    if ! _chatflow_localstack_installed; then
        _chatflow_log "LocalStack is not installed; run chatflow_localstack_install first"
        return 1
    fi

    # Another server on the port would answer the readiness probe and the tests would run against
    # it; a run that was killed with -9 can leave its LocalStack behind, so name it if it is ours.
    if _chatflow_port_in_use "$port"; then
        local stale=""
        [[ -f "$rundir/pid" ]] && stale="$(cat "$rundir/pid")"
        if [[ -n "$stale" ]] && [[ -n "$(_chatflow_session_pids "$stale")" ]]; then
            _chatflow_log "127.0.0.1:$port is taken by a LocalStack left over from an earlier run (PID $stale); stop it with: kill -- -$stale"
        else
            _chatflow_log "127.0.0.1:$port is already in use by another process; stop it before running the tests"
        fi
        return 1
    fi

    # LocalStack keeps no useful state between runs here, and old state would make runs differ.
    rm -rf "$rundir"
    mkdir -p "$rundir/fs" "$cache/logs"

    _chatflow_install_traps

    # A session of its own lets stop reach every process LocalStack spawns. setsid forks when the
    # caller put the job in its own process group (interactive shells), so $! would then be a
    # short-lived parent: the child writes its own PID instead, which is also the session id.
    # OVERRIDE_IN_DOCKER=0: the machine has /.dockerenv, and LocalStack would otherwise write
    #   to /var/lib/localstack.
    # GATEWAY_SERVER=hypercorn: the default server ignores the host part and binds 0.0.0.0.
    # shellcheck disable=SC2016  # expanded by the inner shell
    env \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$rundir/fs" \
        GATEWAY_LISTEN="127.0.0.1:$port" \
        LOCALSTACK_HOST="127.0.0.1:$port" \
        GATEWAY_SERVER=hypercorn \
        SERVICES=sqs \
        EAGER_SERVICE_LOADING=1 \
        SQS_ENDPOINT_STRATEGY=path \
        DNS_ADDRESS=0 \
        DISABLE_EVENTS=1 \
        setsid bash -c 'echo "$$" >"$1"; shift; exec "$@"' _ "$rundir/pid" \
        "$venv/bin/python" -m localstack.runtime.main \
        </dev/null >"$log" 2>&1 &

    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s "$rundir/pid" ]] && break
        sleep 0.05
    done
    sid="$(cat "$rundir/pid" 2>/dev/null || true)"
    if [[ -z "$sid" ]]; then
        _chatflow_log "LocalStack did not start; last lines of $log:"
        tail -n 30 "$log" >&2
        return 1
    fi
    _CHATFLOW_LOCALSTACK_SID="$sid"

    # The health route reports ready before SQS answers; only a real call proves it is usable.
    deadline=$((SECONDS + timeout))
    until curl -sf -o /dev/null -X POST \
        -H 'X-Amz-Target: AmazonSQS.ListQueues' \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -d '{}' "http://127.0.0.1:$port/"; do
        if [[ -z "$(_chatflow_session_pids "$sid")" ]]; then
            _chatflow_log "LocalStack exited during start-up; last lines of $log:"
            tail -n 40 "$log" >&2
            chatflow_localstack_stop
            return 1
        fi
        if ((SECONDS >= deadline)); then
            _chatflow_log "LocalStack did not answer on 127.0.0.1:$port within ${timeout}s; last lines of $log:"
            tail -n 40 "$log" >&2
            [[ -s "$log" ]] || _chatflow_log "(the log is empty)"
            chatflow_localstack_stop
            return 1
        fi
        sleep 0.25
    done

    export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
    export AWS_REGION=us-east-1
    export AWS_ACCESS_KEY_ID=test
    export AWS_SECRET_ACCESS_KEY=test
    export CHATFLOW_LOCALSTACK=1
    _chatflow_log "LocalStack ready on 127.0.0.1:$port (PID $sid, log: $log)"
}

chatflow_localstack_stop() {
    local sid="$_CHATFLOW_LOCALSTACK_SID" pids i
    [[ -n "$sid" ]] || return 0

    kill -TERM -- "-$sid" 2>/dev/null || true
    # SIGTERM stops it in about 2 s, but about one stop in a dozen hangs for good.
    for ((i = 0; i < 100; i++)); do
        [[ -z "$(_chatflow_session_pids "$sid")" ]] && break
        sleep 0.1
    done
    pids="$(_chatflow_session_pids "$sid")"
    if [[ -n "$pids" ]]; then
        _chatflow_log "LocalStack ignored SIGTERM for 10 s; killing it"
        kill -KILL -- "-$sid" 2>/dev/null || true
        # Members that moved to another process group are still in the session.
        # shellcheck disable=SC2086  # one PID per word
        kill -KILL $pids 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(_chatflow_session_pids "$sid")" ]] && break
            sleep 0.1
        done
    fi
    # Reap it if it is our child, so no zombie outlives the stop.
    wait "$sid" 2>/dev/null || true

    _CHATFLOW_LOCALSTACK_SID=""
    rm -f "$(_chatflow_cache)/run/localstack/pid"
    unset CHATFLOW_LOCALSTACK
}

# The kube-apiserver + etcd join here (see the Kubernetes section of the test environment notes):
# build/cache the binaries, start etcd and kube-apiserver on 127.0.0.1, export KUBECONFIG.
chatflow_kube_install() { return 0; }
chatflow_kube_start() { return 0; }
chatflow_kube_stop() { return 0; }

# Explicit returns: a caller's `if`/`||` switches off set -e inside the function.
chatflow_env_up() {
    chatflow_localstack_install || return 1
    chatflow_kube_install || return 1
    chatflow_localstack_start || return 1
    chatflow_kube_start || return 1
}

# Reverse order of start; keep going if one part fails so nothing is left running.
chatflow_env_down() {
    local rc=0
    chatflow_kube_stop || rc=1
    chatflow_localstack_stop || rc=1
    return "$rc"
}

_chatflow_on_exit() {
    local rc=$?
    chatflow_env_down || true
    if [[ -n "$_CHATFLOW_PREV_EXIT_TRAP" ]]; then
        eval "$_CHATFLOW_PREV_EXIT_TRAP"
    fi
    return "$rc"
}

# Stop the servers, then die of the same signal so the caller sees the usual exit status.
_chatflow_on_signal() {
    chatflow_env_down || true
    trap - "$1"
    kill -s "$1" "$$"
}

# The caller may have an EXIT trap of its own: keep it and run it after ours.
_chatflow_install_traps() {
    [[ -z "$_CHATFLOW_TRAPS_INSTALLED" ]] || return 0
    local prev
    prev="$(trap -p EXIT)"
    if [[ -n "$prev" ]]; then
        # `trap -p` prints a re-usable `trap -- 'CMD' EXIT`; the third word is CMD.
        local -a words
        eval "words=($prev)"
        _CHATFLOW_PREV_EXIT_TRAP="${words[2]}"
    fi
    trap _chatflow_on_exit EXIT
    trap '_chatflow_on_signal INT' INT
    trap '_chatflow_on_signal TERM' TERM
    trap '_chatflow_on_signal HUP' HUP
    _CHATFLOW_TRAPS_INSTALLED=1
}

_chatflow_testenv_main() {
    set -euo pipefail
    local usage="usage: $0 run -- COMMAND [ARGS...] | $0 install"
    case "${1:-}" in
    install)
        chatflow_localstack_install
        chatflow_kube_install
        ;;
    run)
        shift
        [[ "${1:-}" == "--" ]] && shift
        if [[ $# -eq 0 ]]; then
            echo "$usage" >&2
            return 2
        fi
        chatflow_env_up
        local rc=0
        "$@" || rc=$?
        chatflow_env_down
        return "$rc"
        ;;
    *)
        echo "$usage" >&2
        return 2
        ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _chatflow_testenv_main "$@"
    exit $?
fi
