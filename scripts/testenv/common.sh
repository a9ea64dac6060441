# shellcheck shell=bash
# Helpers shared by the parts of the test environment: logging, the cache, locks, Debian packages,
# and starting and stopping servers as sessions of their own. Sourced by scripts/testenv.sh.

_chatflow_log() { printf 'testenv: %s\n' "$*" >&2; }

_chatflow_cache() { printf '%s' "${CHATFLOW_CACHE:-${HOME:?HOME is not set}/.cache/chatflow}"; }

_chatflow_in_dir() {
    local dir="$1"
    shift
    (cd "$dir" && "$@")
}

# True when something accepts TCP connections on ${2:-127.0.0.1}:$1.
_chatflow_port_in_use() {
    (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null
}

# Runs CMD... holding the cache lock NAME, so two runs sharing the cache never build the same
# thing at once. Children inherit the descriptor, so a build orphaned by an interrupted run also
# holds the lock until it exits.
_chatflow_with_lock() {
    local name="$1" lockfd="" rc=0 cache
    shift
    cache="$(_chatflow_cache)"
    mkdir -p "$cache" || return 1
    if command -v flock >/dev/null 2>&1; then
        exec {lockfd}>"$cache/$name.lock"
        if ! flock -n "$lockfd"; then
            _chatflow_log "waiting for another run to finish with $name"
            flock "$lockfd"
        fi
    fi
    "$@" || rc=$?
    if [[ -n "$lockfd" ]]; then
        exec {lockfd}>&-
    fi
    return "$rc"
}

# Runs a build step with its output appended to LOG; on failure shows the end of the log.
_chatflow_step() {
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

# Installs Debian packages with apt-get. CI starts from a bare Debian image as root; elsewhere
# only say what is missing.
_chatflow_apt_install() {
    [[ $# -gt 0 ]] || return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        _chatflow_log "missing tools; on Debian: apt-get install -y $*"
        return 1
    fi
    _chatflow_log "installing $* with apt-get"
    # A fresh machine has no package lists yet; only refresh them when the install needs it.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null 2>&1; then
        if ! { apt-get update -qq >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "$@" >/dev/null; }; then
            _chatflow_log "apt-get install $* failed"
            return 1
        fi
    fi
}

# Installs the Debian packages behind missing commands (arguments: COMMAND:PACKAGE, where COMMAND
# may be an absolute path to insist on the package's own binary).
_chatflow_ensure_commands() {
    local pair
    local -a missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    _chatflow_apt_install "${missing[@]}"
}

# Installs the named Debian packages that are not installed yet: for what no command reveals,
# such as the static C library.
_chatflow_ensure_packages() {
    local pkg
    local -a missing=()
    for pkg in "$@"; do
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] ||
            missing+=("$pkg")
    done
    _chatflow_apt_install "${missing[@]}"
}

# Live (non-zombie) processes of session $1. A zombie still answers `kill -0`, so that test would
# report a stopped server as running until its parent reaps it. ps fails when the session is
# empty, which under the caller's pipefail would make `pids="$(...)"` abort a set -e script.
_chatflow_session_pids() {
    { ps -o pid=,stat= -s "$1" 2>/dev/null || true; } | awk '$2 !~ /^Z/ { print $1 }'
}

# True while process $1 runs. `kill -0` also succeeds for a zombie, which a stopped server is
# until its parent reaps it.
_chatflow_alive() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
    [[ -n "$stat" && "$stat" != Z* ]]
}

# Prints the PID of the shell that started the servers in run directory $1 if that shell is
# alive and is not this one: another test run on the machine, sharing the cache and the ports.
_chatflow_run_owner() {
    local owner
    owner="$(cat "$1/owner" 2>/dev/null || true)"
    [[ -n "$owner" && "$owner" != "$$" ]] && _chatflow_alive "$owner" && printf '%s' "$owner"
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

_chatflow_require_curl() {
    if ! command -v curl >/dev/null 2>&1; then
        _chatflow_log "curl is required to check that the servers are ready, and it is not installed (on Debian: apt-get install -y curl)"
        return 1
    fi
}
