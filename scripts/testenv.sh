#!/usr/bin/env bash
# Real servers for the test suite: LocalStack (SQS) and a single-node Kubernetes cluster whose
# kubelet runs pods on Docker, all installed from Debian's archive and PyPI and cached.
#
# Source it from another bash script:
#
#     source scripts/testenv.sh
#     chatflow_env_up        # installs (cached) and starts everything, exports the client env
#     ...                    # run tests
#     chatflow_env_down      # optional: an EXIT/INT/TERM/HUP trap does it anyway
#
# or run a single command inside the environment:
#
#     scripts/testenv.sh run -- cargo test --workspace -- --include-ignored
#     scripts/testenv.sh run --sqs-only -- cargo run --release -p chatflow-loadgen -- bench e2e
#     scripts/testenv.sh install      # only install and fill the cache (e.g. a CI cache-warming step)
#
# Needs root for the cluster (Docker, iptables, mounts). The parts live in scripts/testenv/:
# common.sh (shared helpers), localstack.sh, kube-build.sh (the Kubernetes binaries), docker.sh,
# cluster.sh with cluster-pki.sh, cluster-support.sh and dns-sync.sh, helm.sh, and prometheus.sh
# with scrape-sync.sh; kube-watch.sh reruns dns-sync.sh and scrape-sync.sh on every change.
#
# Settings (environment):
#   CHATFLOW_CACHE                  cache root (default: ~/.cache/chatflow); the first build of the
#                                   Kubernetes binaries takes 5-10 min and leaves about 400 MB
#   CHATFLOW_PYTHON                 interpreter for the LocalStack venv (default: python3)
#   CHATFLOW_LOCALSTACK_TIMEOUT     seconds to wait for LocalStack to answer (default: 120)
#   CHATFLOW_DOCKER_TIMEOUT         seconds to wait for a Docker daemon this starts (default: 60)
#   CHATFLOW_KUBE_TIMEOUT           seconds to wait for each step of the cluster's start (default: 180)
#   CHATFLOW_DEBIAN_MIRROR          Debian archive to fetch the Kubernetes sources and Go from
#   CHATFLOW_DEBIAN_SECURITY_MIRROR (default: the ones apt on this machine is configured with)
#
# What runs: LocalStack on 127.0.0.1:4566 and NODE_IP:4566; the Docker daemon (started only if
# none answers, and then stopped again); etcd on 127.0.0.1:22379 (peer 22380); kube-apiserver on
# https://NODE_IP:26443; kube-controller-manager; kube-scheduler; the kubelet on NODE_IP:10250;
# kube-proxy; dnsmasq (cluster DNS, *.cluster.local only) on NODE_IP:53; Prometheus on
# 127.0.0.1:9099 (CHATFLOW_PROMETHEUS_PORT), scraping annotated pods and evaluating the chart's
# alert rules. NODE_IP is the Docker
# bridge's address, 172.17.0.1 by default: the host and pods both reach the servers there. Pods
# get addresses in 10.244.0.0/24 (bridge cni0), Services in 10.96.0.0/24; pod traffic to anywhere
# but those, the Docker bridge and this host is dropped. The pause image is local/pause:3.4.1;
# pods can only use images built on this machine (imagePullPolicy: Never or IfNotPresent).
#
# chatflow_env_up exports:
#   AWS_ENDPOINT_URL=http://127.0.0.1:4566, AWS_REGION=us-east-1, AWS_ACCESS_KEY_ID=test,
#   AWS_SECRET_ACCESS_KEY=test, CHATFLOW_LOCALSTACK=1   LocalStack, for processes on the host
#   CHATFLOW_POD_AWS_ENDPOINT=http://NODE_IP:4566       LocalStack, for pods
#   KUBECONFIG          admin (system:masters) kubeconfig for https://NODE_IP:26443, CA inline
#   CHATFLOW_KUBE=1     a real API server is up
#   CHATFLOW_CLUSTER=1  and it runs pods (kubelet, controllers, scheduler, Services, DNS)
#   CHATFLOW_NODE_IP    NODE_IP
#   CHATFLOW_DOCKER     the Docker client to use (Debian's /usr/bin/docker)
#   CHATFLOW_PROMETHEUS http://127.0.0.1:9099, the Prometheus scraping the cluster
# chatflow_env_down unsets the CHATFLOW_* flags; KUBECONFIG keeps pointing at the stopped cluster.
#
# Functions: chatflow_env_up, chatflow_env_down, chatflow_env_install, chatflow_helm_install
# (prints the path of a Helm 3 binary), and the parts' own: chatflow_localstack_{install,start,stop},
# chatflow_docker_{install,start,stop}, chatflow_kube_install, chatflow_cluster_{install,start,stop}.
#
# Everything here must work under the caller's `set -euo pipefail`, so functions return
# non-zero instead of exiting and never read unset variables.

if [[ -z "${BASH_VERSION:-}" ]]; then
    echo "testenv.sh: needs bash" >&2
    # shellcheck disable=SC2317  # exit is reached when the file is executed, not sourced
    return 1 2>/dev/null || exit 1
fi

_CHATFLOW_TESTENV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/testenv" && pwd)"

# shellcheck source=scripts/testenv/common.sh
source "$_CHATFLOW_TESTENV_DIR/common.sh"
# shellcheck source=scripts/testenv/localstack.sh
source "$_CHATFLOW_TESTENV_DIR/localstack.sh"
# shellcheck source=scripts/testenv/kube-build.sh
source "$_CHATFLOW_TESTENV_DIR/kube-build.sh"
# shellcheck source=scripts/testenv/docker.sh
source "$_CHATFLOW_TESTENV_DIR/docker.sh"
# shellcheck source=scripts/testenv/cluster-pki.sh
source "$_CHATFLOW_TESTENV_DIR/cluster-pki.sh"
# shellcheck source=scripts/testenv/cluster-support.sh
source "$_CHATFLOW_TESTENV_DIR/cluster-support.sh"
# shellcheck source=scripts/testenv/cluster.sh
source "$_CHATFLOW_TESTENV_DIR/cluster.sh"
# shellcheck source=scripts/testenv/helm.sh
source "$_CHATFLOW_TESTENV_DIR/helm.sh"
# shellcheck source=scripts/testenv/prometheus.sh
source "$_CHATFLOW_TESTENV_DIR/prometheus.sh"

# Sourcing twice must not reset these, or the trap would run twice or lose the caller's.
: "${_CHATFLOW_TRAPS_INSTALLED:=}"
: "${_CHATFLOW_PREV_EXIT_TRAP:=}"

chatflow_env_install() {
    chatflow_localstack_install || return 1
    chatflow_cluster_install || return 1
    chatflow_prometheus_install || return 1
}

# Explicit returns: a caller's `if`/`||` switches off set -e inside the function.
chatflow_env_up() {
    local node_ip bridge start=$SECONDS
    chatflow_env_install || return 1
    chatflow_docker_start || return 1
    read -r node_ip bridge < <(_chatflow_docker_bridge) || return 1
    # LocalStack takes a few seconds to answer: it starts while the cluster does.
    _chatflow_localstack_spawn "$node_ip" || return 1
    chatflow_cluster_start || return 1
    _chatflow_localstack_wait || return 1
    chatflow_prometheus_start "$_CHATFLOW_TESTENV_DIR/../../charts/chatflow/monitoring/alerts.yaml" ||
        return 1
    export CHATFLOW_POD_AWS_ENDPOINT="http://$node_ip:$CHATFLOW_LOCALSTACK_PORT"
    _chatflow_log "test environment up in $((SECONDS - start)) s (pods reach LocalStack at $CHATFLOW_POD_AWS_ENDPOINT)"
}

# Reverse order of start; keep going if one part fails so nothing is left running.
chatflow_env_down() {
    local rc=0
    # LocalStack takes seconds to stop: it starts while the cluster stops.
    if [[ -n "$_CHATFLOW_LOCALSTACK_SID" ]]; then
        kill -TERM -- "-$_CHATFLOW_LOCALSTACK_SID" 2>/dev/null || true
    fi
    chatflow_prometheus_stop || rc=1
    chatflow_cluster_stop || rc=1
    chatflow_localstack_stop || rc=1
    chatflow_docker_stop || rc=1
    unset CHATFLOW_POD_AWS_ENDPOINT
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
    local usage="usage: $0 run [--sqs-only] -- COMMAND [ARGS...] | $0 install"
    case "${1:-}" in
    install)
        chatflow_env_install
        ;;
    run)
        shift
        local sqs_only=0
        if [[ "${1:-}" == "--sqs-only" ]]; then
            sqs_only=1
            shift
        fi
        [[ "${1:-}" == "--" ]] && shift
        if [[ $# -eq 0 ]]; then
            echo "$usage" >&2
            return 2
        fi
        local rc=0
        if [[ "$sqs_only" == 1 ]]; then
            # Benchmarks against SQS alone: no cluster competing for the CPU.
            chatflow_localstack_install
            # shellcheck disable=SC2119  # no extra listen address: only host processes use it
            chatflow_localstack_start
            "$@" || rc=$?
            chatflow_localstack_stop
            return "$rc"
        fi
        chatflow_env_up
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
