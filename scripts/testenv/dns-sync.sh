#!/usr/bin/env bash
# Writes the test cluster's Services as DNS names: NAME.NAMESPACE.svc.DOMAIN and NAME.NAMESPACE.svc
# -> ClusterIP, in a hosts file in the directory dnsmasq reads (--hostsdir; it re-reads changed
# files by itself). scripts/testenv/cluster.sh runs it through kube-watch.sh on every change.
#
#     dns-sync.sh KUBECONFIG HOSTS_DIR DOMAIN
set -uo pipefail

kubeconfig="$1" hosts_dir="$2" domain="$3"
# Written beside the directory and moved in, so dnsmasq never reads a half-written file.
tmp="$hosts_dir.tmp"

kubectl --kubeconfig "$kubeconfig" get services --all-namespaces \
    -o jsonpath='{range .items[*]}{.spec.clusterIP} {.metadata.name}.{.metadata.namespace}{"\n"}{end}' \
    >"$tmp.list" || exit 0
# Headless Services ("None") and ExternalName ones (no address) get no entry.
awk -v domain="$domain" '$1 ~ /^[0-9]/ { print $1, $2 ".svc." domain, $2 ".svc" }' "$tmp.list" |
    sort >"$tmp"
cmp -s "$tmp" "$hosts_dir/services" || mv -f "$tmp" "$hosts_dir/services"
