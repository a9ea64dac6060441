#!/usr/bin/env bash
# Keeps the test cluster's DNS in step with its Services: NAME.NAMESPACE.svc.DOMAIN and
# NAME.NAMESPACE.svc -> ClusterIP, in a hosts file in the directory dnsmasq reads (--hostsdir; it
# re-reads changed files by itself). Started by scripts/testenv/cluster.sh.
#
#     dns-sync.sh KUBECONFIG HOSTS_DIR DOMAIN
#
# A watch only signals that something changed, and every change re-reads the whole list: a new
# Service resolves moments after it is created, and a watch that reconnects misses nothing.
set -uo pipefail

kubeconfig="$1" hosts_dir="$2" domain="$3"
# Written beside the directory and moved in, so dnsmasq never reads a half-written file.
tmp="$hosts_dir.tmp"

sync_hosts() {
    kubectl --kubeconfig "$kubeconfig" get services --all-namespaces \
        -o jsonpath='{range .items[*]}{.spec.clusterIP} {.metadata.name}.{.metadata.namespace}{"\n"}{end}' \
        >"$tmp.list" || return 0
    # Headless Services ("None") and ExternalName ones (no address) get no entry.
    awk -v domain="$domain" '$1 ~ /^[0-9]/ { print $1, $2 ".svc." domain, $2 ".svc" }' "$tmp.list" |
        sort >"$tmp"
    cmp -s "$tmp" "$hosts_dir/services" || mv -f "$tmp" "$hosts_dir/services"
}

while :; do
    # `get --watch` first prints every Service, then one line per change after that listing.
    while IFS= read -r _; do
        # A burst of changes (or the first listing) costs one re-read.
        while IFS= read -r -t 0.2 _; do :; done
        sync_hosts
    done < <(kubectl --kubeconfig "$kubeconfig" get services --all-namespaces --watch -o name)
    sleep 1
done
