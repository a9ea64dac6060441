# shellcheck shell=bash
# LocalStack (SQS) from PyPI in a venv of its own, without Docker. Sourced by scripts/testenv.sh.

# Newer localstack-core releases (4.14, 2026.x) fail on Python 3.11 with a SyntaxError; the extra
# pins keep start-up from breaking on cbor2 6, pyOpenSSL 26 and Twisted's missing
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

# Session id of the running LocalStack (its PID); empty when not running. Sourcing again keeps it.
: "${_CHATFLOW_LOCALSTACK_SID:=}"

_chatflow_localstack_venv() { printf '%s/localstack-%s' "$(_chatflow_cache)" "$CHATFLOW_LOCALSTACK_VERSION"; }

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
    mkdir -p "$(_chatflow_cache)/logs" || return 1
    _chatflow_with_lock localstack-install _chatflow_localstack_install_locked
}

_chatflow_localstack_install_locked() {
    _chatflow_localstack_installed || _chatflow_localstack_do_install
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

# Starts LocalStack on 127.0.0.1 and on each ADDRESS given (pods reach it on the node's address)
# and waits until SQS answers.
chatflow_localstack_start() {
    _chatflow_localstack_spawn "$@" || return 1
    _chatflow_localstack_wait
}

# Starts LocalStack without waiting for it, so the caller can start other servers meanwhile and
# then call _chatflow_localstack_wait.
_chatflow_localstack_spawn() {
    local venv cache rundir log port addr listen="" sid=""
    local -a addrs=(127.0.0.1 "$@")
    venv="$(_chatflow_localstack_venv)"
    cache="$(_chatflow_cache)"
    rundir="$cache/run/localstack"
    log="$cache/logs/localstack.log"
    port="$CHATFLOW_LOCALSTACK_PORT"

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
    # it; a run that was killed with -9 can leave its LocalStack behind, so name it if it is ours,
    # and tell it apart from a run still in progress, whose servers must not be killed.
    for addr in "${addrs[@]}"; do
        listen+="${listen:+,}$addr:$port"
        _chatflow_port_in_use "$port" "$addr" || continue
        local stale="" owner
        [[ -f "$rundir/pid" ]] && stale="$(cat "$rundir/pid")"
        if owner="$(_chatflow_run_owner "$rundir")"; then
            _chatflow_log "$addr:$port is in use by another test run on this machine (started by PID $owner); wait for it to finish"
        elif [[ -n "$stale" ]] && [[ -n "$(_chatflow_session_pids "$stale")" ]]; then
            _chatflow_log "$addr:$port is taken by a LocalStack left over from an earlier run (PID $stale); stop it with: kill -- -$stale"
        else
            _chatflow_log "$addr:$port is already in use by another process; stop it before running the tests"
        fi
        return 1
    done

    # LocalStack keeps no useful state between runs here, and old state would make runs differ.
    rm -rf "$rundir"
    mkdir -p "$rundir/fs" "$cache/logs"
    printf '%s\n' "$$" >"$rundir/owner"

    _chatflow_install_traps

    # OVERRIDE_IN_DOCKER=0: the machine has /.dockerenv, and LocalStack would otherwise write
    #   to /var/lib/localstack.
    # GATEWAY_SERVER=hypercorn: the default server ignores the host part and binds 0.0.0.0.
    # SQS_ENDPOINT_STRATEGY=dynamic: queue URLs name the host and port the request was sent to,
    #   http://127.0.0.1:4566/queue/us-east-1/000000000000/NAME on the host, and the node's
    #   address for pods, so each client gets URLs it can reach.
    _chatflow_spawn "$rundir/pid" "$log" env \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$rundir/fs" \
        GATEWAY_LISTEN="$listen" \
        LOCALSTACK_HOST="127.0.0.1:$port" \
        GATEWAY_SERVER=hypercorn \
        SERVICES=sqs \
        EAGER_SERVICE_LOADING=1 \
        SQS_ENDPOINT_STRATEGY=dynamic \
        DNS_ADDRESS=0 \
        DISABLE_EVENTS=1 \
        "$venv/bin/python" -m localstack.runtime.main || true
    sid="$(cat "$rundir/pid" 2>/dev/null || true)"
    if [[ -z "$sid" ]]; then
        _chatflow_log "LocalStack did not start; last lines of $log:"
        tail -n 30 "$log" >&2
        return 1
    fi
    _CHATFLOW_LOCALSTACK_SID="$sid"
}

_chatflow_localstack_wait() {
    local sid="$_CHATFLOW_LOCALSTACK_SID" port="$CHATFLOW_LOCALSTACK_PORT" log timeout deadline
    log="$(_chatflow_cache)/logs/localstack.log"
    timeout="${CHATFLOW_LOCALSTACK_TIMEOUT:-120}"
    if [[ -z "$sid" ]]; then
        _chatflow_log "LocalStack was not started"
        return 1
    fi

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
    local sid="$_CHATFLOW_LOCALSTACK_SID"
    [[ -n "$sid" ]] || return 0

    # SIGTERM stops it in about 2 s, but about one stop in a dozen hangs for good.
    _chatflow_stop_session LocalStack "$sid" 10

    _CHATFLOW_LOCALSTACK_SID=""
    rm -f "$(_chatflow_cache)/run/localstack/pid"
    unset CHATFLOW_LOCALSTACK
}
