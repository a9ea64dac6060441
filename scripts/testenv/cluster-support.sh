# shellcheck shell=bash
# The test cluster's supporting pieces: claiming its run directory, spawning and watching its
# processes, readiness probes, the pause image, and the egress guard. Sourced by
# scripts/testenv.sh; scripts/testenv/cluster.sh starts and stops the cluster with them.

# Takes the run directory for this shell. Fails if another run on this machine is using the
# cluster, or if processes of an earlier one are still there.
_chatflow_cluster_claim() {
    local rundir="$1" node_ip="$2" owner name sid leftover="" spec
    if owner="$(_chatflow_run_owner "$rundir")"; then
        _chatflow_log "the test cluster is in use by another test run on this machine (started by PID $owner); wait for it to finish"
        return 1
    fi
    for name in "${_CHATFLOW_CLUSTER_PROCESSES[@]}"; do
        sid="$(cat "$rundir/pids/$name.pid" 2>/dev/null || true)"
        if [[ -n "$sid" && -n "$(_chatflow_session_pids "$sid")" ]]; then
            leftover+="${leftover:+; }kill -- -$sid"
        fi
    done
    if [[ -n "$leftover" ]]; then
        _chatflow_log "processes of an earlier test cluster are still running; stop them with: $leftover"
        return 1
    fi
    # A server already on one of the ports would take the cluster's traffic.
    for spec in "127.0.0.1:$CHATFLOW_ETCD_PORT" "127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        "$node_ip:$CHATFLOW_KUBE_PORT" "$node_ip:$CHATFLOW_KUBELET_PORT" "$node_ip:53"; do
        if _chatflow_port_in_use "${spec##*:}" "${spec%:*}"; then
            _chatflow_log "$spec is already in use by another process; stop it before running the tests"
            return 1
        fi
    done
}

# Runs NAME's command in a session of its own, with its PID in the run directory.
_chatflow_cluster_spawn() {
    local name="$1" rundir log
    shift
    rundir="$(_chatflow_cluster_dir)"
    log="$(_chatflow_cluster_log "$name")"
    _chatflow_spawn "$rundir/pids/$name.pid" "$log" "$@" || true
    if [[ ! -s "$rundir/pids/$name.pid" ]]; then
        _chatflow_log "$name did not start; last lines of $log:"
        tail -n 30 "$log" >&2
        return 1
    fi
}

# Prints the names of the cluster's processes that were started and are gone.
_chatflow_cluster_exited() {
    local rundir name sid
    rundir="$(_chatflow_cluster_dir)"
    for name in "${_CHATFLOW_CLUSTER_PROCESSES[@]}"; do
        sid="$(cat "$rundir/pids/$name.pid" 2>/dev/null || true)"
        if [[ -n "$sid" && -z "$(_chatflow_session_pids "$sid")" ]]; then
            printf '%s\n' "$name"
        fi
    done
}

_chatflow_cluster_show_logs() {
    local name log
    for name in "$@"; do
        log="$(_chatflow_cluster_log "$name")"
        _chatflow_log "last lines of $log:"
        tail -n 25 "$log" >&2
    done
}

# Polls CMD... until it succeeds. Fails, showing the logs of the processes named in SHOWN, after
# TIMEOUT seconds, or as soon as one of the cluster's processes exits, showing its log.
_chatflow_cluster_wait() {
    local what="$1" timeout="$2" shown="$3" deadline exited
    shift 3
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        exited="$(_chatflow_cluster_exited)"
        if [[ -n "$exited" ]]; then
            _chatflow_log "$(echo "$exited" | paste -sd, -) exited while waiting for $what"
            # shellcheck disable=SC2086  # one name per word
            _chatflow_cluster_show_logs $exited
            return 1
        fi
        if ((SECONDS >= deadline)); then
            _chatflow_log "gave up waiting for $what after ${timeout}s"
            # shellcheck disable=SC2086  # one name per word
            _chatflow_cluster_show_logs $shown
            return 1
        fi
        sleep 0.25
    done
}

# Tests create objects in the default namespace straight away: wait for it too rather than rely
# on /readyz covering the controller that makes it.
_chatflow_cluster_api_ready() {
    local rundir="$1" node_ip="$2" path
    for path in /readyz /api/v1/namespaces/default; do
        curl -sf -o /dev/null --max-time 5 --cacert "$rundir/pki/ca.crt" \
            -H @"$rundir/auth-header" "https://$node_ip:$CHATFLOW_KUBE_PORT$path" || return 1
    done
}

_chatflow_cluster_node_ready() {
    [[ "$(kubectl --kubeconfig "$1" get node "$CHATFLOW_NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

_chatflow_cluster_default_sa_ready() {
    [[ -n "$(kubectl --kubeconfig "$1" --namespace default get serviceaccount default \
        -o jsonpath='{.secrets[0].name}')" ]]
}

# etcd 3.4 refuses to start on architectures other than amd64 and ppc64le unless told.
_chatflow_etcd_arch() {
    case "$(uname -m)" in
    aarch64 | arm64) printf 'arm64' ;;
    *) printf '' ;;
    esac
}

# The image every pod's sandbox runs, made from the cached static binary: nothing can be pulled
# here. The label ties the image to the binary, so a rebuilt binary makes a new image.
_chatflow_cluster_pause_image() {
    local pause="$1" want have tmp rc=0
    want="$(sha256sum "$pause" | cut -d' ' -f1)" || return 1
    have="$(_chatflow_docker image inspect \
        --format '{{index .Config.Labels "dev.chatflow.pause-sha256"}}' \
        "$CHATFLOW_PAUSE_IMAGE" 2>/dev/null || true)"
    [[ "$have" == "$want" ]] && return 0
    tmp="$(mktemp -d)" || return 1
    cp "$pause" "$tmp/pause" &&
        tar -C "$tmp" --owner=0 --group=0 -c pause |
        _chatflow_docker import \
            --change 'ENTRYPOINT ["/pause"]' \
            --change 'USER 65535:65535' \
            --change "LABEL dev.chatflow.pause-sha256=$want" \
            - "$CHATFLOW_PAUSE_IMAGE" >/dev/null || rc=$?
    rm -rf "$tmp"
    if [[ "$rc" != 0 ]]; then
        _chatflow_log "making the pause image $CHATFLOW_PAUSE_IMAGE failed"
        return 1
    fi
    _chatflow_log "made the pause image $CHATFLOW_PAUSE_IMAGE"
}

# Nothing in a test may leave the machine: packets from pods may go only to the pod and service
# networks, the Docker bridge and this host. The raw table sees them before any other rule (the
# CNI plugins and kube-proxy put theirs first in FORWARD) and before DNAT, so Service addresses
# are still what they match.
_chatflow_cluster_egress_guard() {
    local bridge="$1" dst
    iptables -t raw -N CHATFLOW-EGRESS || return 1
    for dst in "$CHATFLOW_POD_CIDR" "$CHATFLOW_SERVICE_CIDR" "$bridge"; do
        iptables -t raw -A CHATFLOW-EGRESS -d "$dst" -j RETURN || return 1
    done
    iptables -t raw -A CHATFLOW-EGRESS -m addrtype --dst-type LOCAL -j RETURN &&
        iptables -t raw -A CHATFLOW-EGRESS -j DROP &&
        iptables -t raw -I PREROUTING 1 -s "$CHATFLOW_POD_CIDR" -j CHATFLOW-EGRESS
}
