# shellcheck shell=bash
# Builds the Kubernetes binaries the test cluster runs, once, into the cache. Sourced by
# scripts/testenv.sh.
#
# No registry these machines reach ships Kubernetes binaries; Debian bookworm's `kubernetes`
# source package carries the upstream 1.20.2 tree with everything vendored and builds with Debian's
# Go 1.19. etcd 3.4 comes from the same archive, and the pause binary, which every pod's sandbox
# container runs, is compiled from the same tree. Changing any of the pins below rebuilds it all.

CHATFLOW_KUBE_SOURCE_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CHATFLOW_KUBE_DEBS=(golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev etcd-server)
CHATFLOW_KUBE_GO_VERSION=1.19
CHATFLOW_KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# Bump when the patches or the build steps change, so cached binaries are rebuilt.
CHATFLOW_KUBE_RECIPE=2

_chatflow_kube_dir() { printf '%s/kube' "$(_chatflow_cache)"; }

# The marker holds what the binaries were built from, so changing a pin rebuilds them.
_chatflow_kube_spec() {
    printf 'kubernetes=%s %s build=%s+pause recipe=%s' "$CHATFLOW_KUBE_SOURCE_VERSION" \
        "${CHATFLOW_KUBE_DEBS[*]}" "${CHATFLOW_KUBE_COMMANDS[*]}" "$CHATFLOW_KUBE_RECIPE"
}

_chatflow_kube_installed() {
    local bin cmd
    bin="$(_chatflow_kube_dir)/bin"
    [[ -f "$bin/.chatflow-installed" &&
        "$(cat "$bin/.chatflow-installed")" == "$(_chatflow_kube_spec)" ]] || return 1
    for cmd in "${CHATFLOW_KUBE_COMMANDS[@]}" etcd pause; do
        [[ -x "$bin/$cmd" ]] || return 1
    done
}

chatflow_kube_install() {
    _chatflow_kube_installed && return 0
    mkdir -p "$(_chatflow_cache)/logs" "$(_chatflow_kube_dir)" || return 1
    _chatflow_with_lock kube-install _chatflow_kube_install_locked
}

_chatflow_kube_install_locked() {
    _chatflow_kube_installed || _chatflow_kube_do_install
}

_chatflow_kube_do_install() {
    local kube work log start rc=0
    kube="$(_chatflow_kube_dir)"
    work="$kube/work"
    log="$(_chatflow_cache)/logs/kube-install.log"
    start=$SECONDS

    # dpkg-dev for dpkg-source (with patch and xz to apply Debian's patches), make for the
    # Kubernetes build, gcc and the static C library for pause; bare Debian images have none.
    _chatflow_ensure_commands apt-get:apt dpkg-deb:dpkg dpkg-source:dpkg-dev patch:patch \
        xz:xz-utils make:make || return 1
    _chatflow_ensure_packages gcc libc6-dev || return 1

    _chatflow_log "building ${CHATFLOW_KUBE_COMMANDS[*]} ${CHATFLOW_KUBE_SOURCE_VERSION} and fetching etcd into $kube (5-10 min on 2 cores, 1.4 GB of memory; log: $log)"
    : >"$log"
    # No valid marker means an earlier build died half-way or used other pins: start from nothing.
    rm -rf "$work" "${kube:?}/bin"
    _chatflow_kube_build "$work" "$kube/bin" "$log" || rc=$?
    # The build tree, Go's cache and the downloads take about 4 GB; only the binaries are kept.
    rm -rf "$work"
    if [[ "$rc" != 0 ]]; then
        rm -rf "${kube:?}/bin"
        return "$rc"
    fi
    _chatflow_log "Kubernetes binaries, etcd and pause ready in $kube/bin ($((SECONDS - start)) s)"
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

_chatflow_kube_build() {
    local work="$1" bin="$2" log="$3"
    local apt="$work/apt" dl="$work/dl" root="$work/root" src="$work/src" shim="$work/shim"
    local main security signed="" goroot deb cmd
    local -a what=()
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

    _chatflow_step "$log" "apt-get update (Debian bookworm from $main and $security)" \
        apt-get "${aptopts[@]}" update || return 1
    _chatflow_step "$log" "downloading the kubernetes $CHATFLOW_KUBE_SOURCE_VERSION source package" \
        _chatflow_in_dir "$dl" apt-get "${aptopts[@]}" source --download-only \
        "kubernetes=$CHATFLOW_KUBE_SOURCE_VERSION" || return 1
    _chatflow_step "$log" "downloading ${CHATFLOW_KUBE_DEBS[*]}" \
        _chatflow_in_dir "$dl" apt-get "${aptopts[@]}" download "${CHATFLOW_KUBE_DEBS[@]}" || return 1

    for deb in "$dl"/*.deb; do
        _chatflow_step "$log" "unpacking ${deb##*/}" dpkg-deb -x "$deb" "$root" || return 1
    done
    # apt-get source already checked the files against the signed archive index.
    _chatflow_step "$log" "unpacking the kubernetes sources" \
        dpkg-source --no-check -x "$dl/kubernetes_${CHATFLOW_KUBE_SOURCE_VERSION#*:}.dsc" "$src" || return 1

    # The vendored reflect2 1.0.1 reads runtime internals that changed in Go 1.18 and fails at
    # run time; 1.0.2 is a drop-in fix. Its go.mod would make the go tool treat it as a module.
    _chatflow_step "$log" "replacing the vendored reflect2 with 1.0.2" \
        _chatflow_kube_swap_reflect2 "$root" "$src" || return 1
    _chatflow_step "$log" "patching the kubelet to leave oom_score_adj non-negative" \
        _chatflow_kube_patch_oom_score_adj "$src" || return 1

    # The build only ever calls `rsync -pc FILE DIR` to place binaries; CI images have no rsync.
    # shellcheck disable=SC2016  # expanded by the shim
    printf '%s\n' '#!/bin/sh' '[ "$1" = -pc ] && shift' 'exec cp -p "$@"' >"$shim/rsync"
    chmod +x "$shim/rsync"

    # make, not go build: make first generates the OpenAPI definitions the server is built with.
    # GOCACHE and GOENV inside the tree keep the caller's Go setup out and the leftovers in one
    # place to delete; GOPROXY=off because the sources are complete and the network is not.
    for cmd in "${CHATFLOW_KUBE_COMMANDS[@]}"; do
        what+=("cmd/$cmd")
    done
    goroot="$root/usr/lib/go-$CHATFLOW_KUBE_GO_VERSION"
    _chatflow_step "$log" "make WHAT=\"${what[*]}\" (the long part)" \
        _chatflow_in_dir "$src" env \
        PATH="$goroot/bin:$shim:$PATH" \
        GOROOT="$goroot" \
        GOCACHE="$work/gocache" \
        GOENV=off \
        GOFLAGS= \
        GOPROXY=off \
        CGO_ENABLED=0 \
        make WHAT="${what[*]}" GOLDFLAGS="-s -w" || return 1

    mkdir -p "$bin" || return 1
    # Static, so the image needs nothing but the binary (FROM scratch).
    _chatflow_step "$log" "compiling pause" \
        gcc -Os -Wall -Werror -static -DVERSION=v3.4.1-chatflow \
        -o "$bin/pause" "$src/build/pause/linux/pause.c" || return 1
    _chatflow_step "$log" "saving the binaries" \
        _chatflow_kube_save_binaries "$src/_output/bin" "$root/usr/bin/etcd" "$bin" || return 1
    _chatflow_step "$log" "checking the binaries" \
        _chatflow_kube_check_binaries "$bin" || return 1
    # What the binaries were built from, for whoever wonders later.
    cp "$dl"/*.dsc "$bin/" 2>/dev/null || true
    (cd "$dl" && printf '%s\n' *.deb) >"$bin/debs.txt" 2>/dev/null || true
    _chatflow_kube_spec >"$bin/.chatflow-installed"
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

# Processes on these machines lack CAP_SYS_RESOURCE, so runc cannot give a container a negative
# oom_score_adj, and the kubelet 1.20 hard-codes -998 for every pod's sandbox and -997 for
# Guaranteed pods: each pod would fail with "can't get final child's PID from pipe: EOF". Clamp
# both to 0; the kubelet and kube-proxy themselves run with --oom-score-adj=0.
_chatflow_kube_patch_oom_score_adj() {
    local src="$1"
    local sandbox="$src/pkg/kubelet/dockershim/docker_sandbox.go"
    local container="$src/pkg/kubelet/kuberuntime/kuberuntime_container_linux.go"
    sed -i 's|defaultSandboxOOMAdj int = -998$|defaultSandboxOOMAdj int = 0 // negative values need CAP_SYS_RESOURCE|' \
        "$sandbox" || return 1
    sed -i '/int64(m.machineInfo.MemoryCapacity)))/a\\tif oomScoreAdj < 0 { // negative values need CAP_SYS_RESOURCE\n\t\toomScoreAdj = 0\n\t}' \
        "$container" || return 1
    # sed succeeds whether or not its pattern matched: check that both edits took.
    if ! grep -q 'defaultSandboxOOMAdj int = 0 ' "$sandbox" ||
        ! grep -q 'if oomScoreAdj < 0 {' "$container"; then
        echo "the oom_score_adj patch did not apply to $sandbox and $container"
        return 1
    fi
}

_chatflow_kube_save_binaries() {
    local out="$1" etcd="$2" bin="$3" cmd
    for cmd in "${CHATFLOW_KUBE_COMMANDS[@]}"; do
        cp "$out/$cmd" "$bin/" || return 1
    done
    cp "$etcd" "$bin/" && strip "$bin/pause"
}

_chatflow_kube_check_binaries() {
    local bin="$1" cmd
    for cmd in "${CHATFLOW_KUBE_COMMANDS[@]}"; do
        "$bin/$cmd" --version || return 1
    done
    "$bin/etcd" --version && "$bin/pause" -v
}
