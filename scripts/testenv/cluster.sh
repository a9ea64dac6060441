# shellcheck shell=bash
# A single-node Kubernetes 1.20 cluster on the Docker daemon: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, the kubelet (dockershim) and kube-proxy, pods on a CNI
# bridge, cluster DNS from dnsmasq, and a guard that keeps pod traffic on this machine. Sourced by
# scripts/testenv.sh.
#
# The node's address is the Docker bridge's (172.17.0.1 by default): the API server listens there
# so that pods reach it too, and so does every server on the host that pods must reach.

CHATFLOW_ETCD_PORT=22379
CHATFLOW_ETCD_PEER_PORT=22380
CHATFLOW_KUBE_PORT=26443
CHATFLOW_KUBELET_PORT=10250
CHATFLOW_NODE_NAME=chatflow-node
CHATFLOW_SERVICE_CIDR=10.96.0.0/24
CHATFLOW_POD_CIDR=10.244.0.0/24
CHATFLOW_CLUSTER_DOMAIN=cluster.local
CHATFLOW_PAUSE_IMAGE=local/pause:3.4.1
CHATFLOW_CNI_BIN_DIR=/usr/lib/cni
CHATFLOW_DNSMASQ=/usr/sbin/dnsmasq
# The cluster's processes in start order; they stop in the reverse.
_CHATFLOW_CLUSTER_PROCESSES=(etcd kube-apiserver kube-controller-manager kube-scheduler dnsmasq dns-sync kubelet kube-proxy)
# Prefixes of the chains the kubelet, kube-proxy, the CNI plugins and the egress guard add; the
# stop removes them.
_CHATFLOW_CLUSTER_CHAINS='KUBE-|CNI-|CHATFLOW-'

# Set once this shell has started (part of) the cluster. Only then does chatflow_cluster_stop tear
# anything down, so a run that found the cluster taken never touches the other run's.
: "${_CHATFLOW_CLUSTER_STARTED:=}"

_chatflow_cluster_dir() { printf '%s/run/cluster' "$(_chatflow_cache)"; }

_chatflow_cluster_log() { printf '%s/logs/%s.log' "$(_chatflow_cache)" "$1"; }

# Everything the cluster needs from Debian's archive and the cache.
chatflow_cluster_install() {
    chatflow_docker_install || return 1
    # iproute2 for the bridge's address, socat for `kubectl port-forward`, conntrack for
    # kube-proxy's cleanup of stale UDP flows, kubectl for the readiness checks and the DNS sync,
    # procps to follow the processes.
    _chatflow_ensure_commands ps:procps openssl:openssl curl:curl ip:iproute2 iptables:iptables \
        iptables-restore:iptables socat:socat conntrack:conntrack kubectl:kubernetes-client \
        "$CHATFLOW_DNSMASQ:dnsmasq-base" "$CHATFLOW_CNI_BIN_DIR/bridge:containernetworking-plugins" ||
        return 1
    chatflow_kube_install
}

_chatflow_cluster_ready_to_start() {
    local cmd
    if [[ "$(id -u)" != 0 ]]; then
        _chatflow_log "the test cluster needs root (Docker, iptables, mounts)"
        return 1
    fi
    _chatflow_require_curl || return 1
    for cmd in openssl kubectl ip iptables iptables-restore "$CHATFLOW_DNSMASQ" \
        "$CHATFLOW_CNI_BIN_DIR/bridge"; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            _chatflow_log "$cmd is missing; run chatflow_cluster_install first"
            return 1
        fi
    done
    if ! _chatflow_kube_installed; then
        _chatflow_log "the Kubernetes binaries are not built; run chatflow_cluster_install first"
        return 1
    fi
}

# Starts the cluster and waits until the node is Ready and pods can be created in the default
# namespace. Exports KUBECONFIG (admin), CHATFLOW_KUBE=1, CHATFLOW_CLUSTER=1 and CHATFLOW_NODE_IP.
chatflow_cluster_start() {
    if [[ -n "$_CHATFLOW_CLUSTER_STARTED" ]]; then
        _chatflow_log "the test cluster is already running"
        return 0
    fi
    _chatflow_cluster_do_start && return 0
    chatflow_cluster_stop
    return 1
}

_chatflow_cluster_do_start() {
    local rundir bin pki node_ip bridge timeout cgroup_driver start=$SECONDS
    rundir="$(_chatflow_cluster_dir)"
    bin="$(_chatflow_kube_dir)/bin"
    pki="$rundir/pki"
    timeout="${CHATFLOW_KUBE_TIMEOUT:-180}"

    _chatflow_cluster_ready_to_start || return 1
    chatflow_docker_start || return 1
    read -r node_ip bridge < <(_chatflow_docker_bridge) || return 1
    _chatflow_cluster_claim "$rundir" "$node_ip" || return 1

    # A run killed with -9 leaves pod containers, mounts, iptables rules and the bridge behind.
    _chatflow_cluster_cleanup "$rundir" "$bin"
    # A fresh etcd each run: tests must not see objects an earlier run left.
    rm -rf "$rundir"
    mkdir -p "$rundir/pids" "$rundir/dns/hosts.d" "$rundir/cni/net.d" "$rundir/cni/cache" \
        "$(_chatflow_cache)/logs" || return 1
    chmod 700 "$rundir"
    printf '%s\n' "$$" >"$rundir/owner"
    _CHATFLOW_CLUSTER_STARTED=1
    _chatflow_install_traps

    if ! _chatflow_cluster_pki "$pki" "$node_ip" >"$rundir/pki.log" 2>&1; then
        _chatflow_log "making the cluster's certificates with openssl failed:"
        tail -n 20 "$rundir/pki.log" >&2
        return 1
    fi
    # One identity per component; the bootstrap RBAC rules already bind these user names.
    : >"$pki/tokens.csv"
    _chatflow_cluster_identity "$rundir" "$node_ip" kubeconfig admin system:masters &&
        _chatflow_cluster_identity "$rundir" "$node_ip" kcm.kubeconfig system:kube-controller-manager &&
        _chatflow_cluster_identity "$rundir" "$node_ip" scheduler.kubeconfig system:kube-scheduler &&
        _chatflow_cluster_identity "$rundir" "$node_ip" kubelet.kubeconfig \
            "system:node:$CHATFLOW_NODE_NAME" system:nodes &&
        _chatflow_cluster_identity "$rundir" "$node_ip" proxy.kubeconfig system:kube-proxy || return 1
    _chatflow_cluster_pause_image "$bin/pause" || return 1

    local etcd_arch
    etcd_arch="$(_chatflow_etcd_arch)"
    # No fsync: the data lives for one run.
    _chatflow_cluster_spawn etcd env ${etcd_arch:+ETCD_UNSUPPORTED_ARCH="$etcd_arch"} \
        "$bin/etcd" \
        --name=chatflow-test \
        --data-dir="$rundir/etcd" \
        --listen-client-urls="http://127.0.0.1:$CHATFLOW_ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$CHATFLOW_ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        --initial-cluster="chatflow-test=http://127.0.0.1:$CHATFLOW_ETCD_PEER_PORT" \
        --unsafe-no-fsync \
        --logger=zap --log-outputs=stderr || return 1
    _chatflow_cluster_wait etcd "$timeout" etcd \
        curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$CHATFLOW_ETCD_PORT/health" || return 1

    # Priority and fairness queues requests of competing tenants; tests have one. The kubelet is
    # reached by IP: its name would go to this machine's resolver, off the machine.
    _chatflow_cluster_spawn kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$CHATFLOW_ETCD_PORT" \
        --bind-address="$node_ip" \
        --advertise-address="$node_ip" \
        --secure-port="$CHATFLOW_KUBE_PORT" \
        --insecure-port=0 \
        --cert-dir="$pki" \
        --tls-cert-file="$pki/apiserver.crt" \
        --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --token-auth-file="$pki/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range="$CHATFLOW_SERVICE_CIDR" \
        --enable-priority-and-fairness=false \
        --allow-privileged=true \
        --kubelet-preferred-address-types=InternalIP \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" || return 1
    _chatflow_cluster_wait "kube-apiserver on https://$node_ip:$CHATFLOW_KUBE_PORT" "$timeout" \
        "kube-apiserver etcd" _chatflow_cluster_api_ready "$rundir" "$node_ip" || return 1

    # Neither serves anything the tests use, so no ports: nothing to collide with.
    _chatflow_cluster_spawn kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$rundir/kcm.kubeconfig" \
        --leader-elect=false \
        --port=0 --secure-port=0 \
        --service-account-private-key-file="$pki/sa.key" \
        --root-ca-file="$pki/ca.crt" \
        --use-service-account-credentials=true \
        --cluster-name=chatflow-test || return 1
    _chatflow_cluster_spawn kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig="$rundir/scheduler.kubeconfig" \
        --leader-elect=false \
        --port=0 --secure-port=0 || return 1

    # Cluster DNS: only names under cluster.local, from a hosts directory dns-sync keeps in step
    # with the Services (dnsmasq re-reads it by itself). No upstream: other names get no answer
    # rather than a lookup off the machine. Its own user, as dnsmasq-base creates none.
    _chatflow_cluster_spawn dnsmasq "$CHATFLOW_DNSMASQ" \
        --keep-in-foreground --conf-file=/dev/null --pid-file="$rundir/dns/dnsmasq.pid" \
        --listen-address="$node_ip" --bind-interfaces --port=53 \
        --no-resolv --no-hosts --no-poll --domain-needed --bogus-priv \
        --local="/$CHATFLOW_CLUSTER_DOMAIN/" --hostsdir="$rundir/dns/hosts.d" \
        --log-facility=- --user=root || return 1
    _chatflow_cluster_spawn dns-sync bash "$_CHATFLOW_TESTENV_DIR/kube-watch.sh" \
        "$rundir/kubeconfig" services bash "$_CHATFLOW_TESTENV_DIR/dns-sync.sh" \
        "$rundir/kubeconfig" "$rundir/dns/hosts.d" "$CHATFLOW_CLUSTER_DOMAIN" || return 1

    if ! _chatflow_cluster_egress_guard "$bridge" >"$rundir/egress-guard.log" 2>&1; then
        _chatflow_log "installing the egress guard (iptables) failed:"
        cat "$rundir/egress-guard.log" >&2
        return 1
    fi

    # The bridge plugin with hairpin mode, or a pod calling its own Service hangs when kube-proxy
    # picks the pod itself; the firewall plugin, or Docker's FORWARD policy (DROP) drops pod to
    # pod traffic through a Service.
    cat >"$rundir/cni/net.d/10-chatflow.conflist" <<CNI || return 1
{"cniVersion": "0.4.0", "name": "chatflow", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$rundir/cni/ipam",
            "ranges": [[{"subnet": "$CHATFLOW_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "firewall"}
]}
CNI

    cgroup_driver="$(_chatflow_docker info --format '{{.CgroupDriver}}' 2>/dev/null || true)"
    # --oom-score-adj=0 and the patched binary: negative scores need CAP_SYS_RESOURCE.
    # --image-gc-high-threshold=100: the images exist only here, and collecting one loses it.
    # --resolv-conf=: pods get the cluster DNS and none of this machine's resolver settings.
    # --node-status-update-frequency=2s: the node turns Ready at the second status, 10 s after
    #   registering by default. Unchanged statuses are still only sent every 5 minutes.
    # Every path under the run directory, so the stop finds everything the kubelet made.
    # AWS_EC2_METADATA_DISABLED: the kubelet's built-in ECR credential provider looks for AWS
    #   credentials at start-up, which would include a call to the instance metadata address.
    _chatflow_cluster_spawn kubelet env AWS_EC2_METADATA_DISABLED=true "$bin/kubelet" \
        --kubeconfig="$rundir/kubelet.kubeconfig" \
        --container-runtime=docker \
        --docker-endpoint=unix:///var/run/docker.sock \
        --container-runtime-endpoint="unix://$rundir/dockershim.sock" \
        --pod-infra-container-image="$CHATFLOW_PAUSE_IMAGE" \
        --cgroup-driver="${cgroup_driver:-cgroupfs}" \
        --fail-swap-on=false \
        --root-dir="$rundir/kubelet" \
        --experimental-dockershim-root-directory="$rundir/dockershim" \
        --volume-plugin-dir="$rundir/volume-plugins" \
        --cert-dir="$rundir/kubelet/pki" \
        --hostname-override="$CHATFLOW_NODE_NAME" \
        --node-ip="$node_ip" \
        --address="$node_ip" \
        --port="$CHATFLOW_KUBELET_PORT" \
        --read-only-port=0 \
        --healthz-port=0 \
        --anonymous-auth=false \
        --client-ca-file="$pki/ca.crt" \
        --authorization-mode=Webhook \
        --oom-score-adj=0 \
        --node-status-update-frequency=2s \
        --image-gc-high-threshold=100 \
        --image-gc-low-threshold=99 \
        --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
        --cluster-dns="$node_ip" \
        --cluster-domain="$CHATFLOW_CLUSTER_DOMAIN" \
        --resolv-conf= \
        --network-plugin=cni \
        --cni-bin-dir="$CHATFLOW_CNI_BIN_DIR" \
        --cni-conf-dir="$rundir/cni/net.d" \
        --cni-cache-dir="$rundir/cni/cache" || return 1
    # The conntrack timeouts at 0 leave this machine's settings alone.
    _chatflow_cluster_spawn kube-proxy "$bin/kube-proxy" \
        --kubeconfig="$rundir/proxy.kubeconfig" \
        --proxy-mode=iptables \
        --hostname-override="$CHATFLOW_NODE_NAME" \
        --cluster-cidr="$CHATFLOW_POD_CIDR" \
        --oom-score-adj=0 \
        --conntrack-max-per-core=0 \
        --conntrack-tcp-timeout-established=0 \
        --conntrack-tcp-timeout-close-wait=0 \
        --bind-address="$node_ip" \
        --metrics-bind-address=127.0.0.1:10249 \
        --healthz-bind-address=127.0.0.1:10256 || return 1

    _chatflow_cluster_wait "node $CHATFLOW_NODE_NAME to be Ready" "$timeout" "kubelet" \
        _chatflow_cluster_node_ready "$rundir/kubeconfig" || return 1
    # Pods are rejected until their service account has a token.
    _chatflow_cluster_wait "the default service account's token" "$timeout" "kube-controller-manager" \
        _chatflow_cluster_default_sa_ready "$rundir/kubeconfig" || return 1

    export KUBECONFIG="$rundir/kubeconfig"
    export CHATFLOW_KUBE=1
    export CHATFLOW_CLUSTER=1
    export CHATFLOW_NODE_IP="$node_ip"
    _chatflow_log "test cluster ready in $((SECONDS - start)) s: API https://$node_ip:$CHATFLOW_KUBE_PORT, node $CHATFLOW_NODE_NAME, KUBECONFIG=$KUBECONFIG, logs: $(_chatflow_cluster_log '*')"
}

chatflow_cluster_stop() {
    [[ -n "$_CHATFLOW_CLUSTER_STARTED" ]] || return 0
    local rundir i name sid
    rundir="$(_chatflow_cluster_dir)"
    # The kubelet and kube-proxy first, so nothing restarts what the rest of the stop removes;
    # the API server before etcd, so it does not spend its shutdown retrying a vanished etcd.
    for ((i = ${#_CHATFLOW_CLUSTER_PROCESSES[@]} - 1; i >= 0; i--)); do
        name="${_CHATFLOW_CLUSTER_PROCESSES[i]}"
        sid="$(cat "$rundir/pids/$name.pid" 2>/dev/null || true)"
        [[ -n "$sid" ]] || continue
        _chatflow_stop_session "$name" "$sid" 10
        rm -f "$rundir/pids/$name.pid"
    done
    _chatflow_cluster_cleanup "$rundir" "$(_chatflow_kube_dir)/bin"
    rm -f "$rundir/owner"
    _CHATFLOW_CLUSTER_STARTED=""
    # KUBECONFIG keeps pointing at the (now dead) test cluster, so nothing after the stop falls
    # back to a real cluster from ~/.kube/config.
    unset CHATFLOW_KUBE CHATFLOW_CLUSTER CHATFLOW_NODE_IP
}

# Removes what the cluster leaves on the machine once its processes are gone: pod containers,
# the kubelet's mounts, iptables rules, the pod bridge, cgroups and pod log links. Locally built
# images stay: they are a cache.
_chatflow_cluster_cleanup() {
    local rundir="$1" bin="$2" mnt
    local -a ids=()
    if _chatflow_docker_answers; then
        # dockershim labels every container it makes.
        mapfile -t ids < <(_chatflow_docker ps -aq --filter label=io.kubernetes.docker.type 2>/dev/null)
        if [[ ${#ids[@]} -gt 0 ]]; then
            _chatflow_docker rm -f -v "${ids[@]}" >/dev/null 2>&1 ||
                _chatflow_log "could not remove all pod containers: ${ids[*]}"
        fi
    fi
    # Secret and service-account volumes are tmpfs mounts under the kubelet's root directory.
    while IFS= read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null ||
            _chatflow_log "could not unmount $mnt"
    done < <(awk -v root="$rundir/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r)
    if [[ -x "$bin/kube-proxy" ]] && command -v iptables >/dev/null 2>&1; then
        "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
    fi
    _chatflow_cluster_iptables_cleanup iptables
    _chatflow_cluster_iptables_cleanup ip6tables
    if ip link show cni0 >/dev/null 2>&1; then
        ip link delete cni0 || _chatflow_log "could not delete the pod bridge cni0"
    fi
    # Empty QoS and pod cgroups the kubelet made; children first.
    local dir
    for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d "$dir" ]] || continue
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    # The kubelet links pod logs to the containers' log files, which went with the containers.
    find /var/log/pods /var/log/containers -xtype l -delete 2>/dev/null || true
    find /var/log/pods -mindepth 1 -depth -type d -empty -delete 2>/dev/null || true
    rmdir /var/log/pods /var/log/containers 2>/dev/null || true
    # The kubelet 1.20 also announces its device-plugin socket in a fixed place, whatever its root.
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/DEPRECATION
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
}

# Deletes, in every table of $1 (iptables or ip6tables), the cluster's chains and the rules that
# jump to them from other chains, in one iptables-restore transaction per table.
_chatflow_cluster_iptables_cleanup() {
    local cmd="$1" table script
    command -v "$cmd-save" >/dev/null 2>&1 || return 0
    for table in raw mangle nat filter; do
        script="$({ "$cmd-save" -t "$table" 2>/dev/null || true; } | awk -v table="$table" -v prefixes="$_CHATFLOW_CLUSTER_CHAINS" '
            BEGIN { ours = "^(" prefixes ")"; jump = " -[jg] (" prefixes ")" }
            /^:/ { name = substr($1, 2); if (name ~ ours) chains[++n] = name; next }
            /^-A / && $2 !~ ours && $0 ~ jump { rules[++r] = "-D" substr($0, 3) }
            END {
                if (n + r == 0) exit
                print "*" table
                for (i = 1; i <= r; i++) print rules[i]
                for (i = 1; i <= n; i++) print "-F " chains[i]
                for (i = 1; i <= n; i++) print "-X " chains[i]
                print "COMMIT"
            }' || true)"
        [[ -n "$script" ]] || continue
        printf '%s\n' "$script" | "$cmd-restore" --noflush ||
            _chatflow_log "could not remove the cluster's $cmd rules from the $table table"
    done
}
