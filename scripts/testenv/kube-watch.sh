#!/usr/bin/env bash
# Runs COMMAND once at start and again after every change to RESOURCE (all namespaces) in the test
# cluster: what keeps cluster DNS (dns-sync.sh) and Prometheus' targets (scrape-sync.sh) in step.
#
#     kube-watch.sh KUBECONFIG RESOURCE COMMAND [ARGS...]
#
# A watch only signals that something changed, and every change re-reads the whole list: a new
# object is seen moments after it is created, and a watch that reconnects misses nothing.
set -uo pipefail

kubeconfig="$1" resource="$2"
shift 2

while :; do
    # `get --watch` first prints every object, then one line per change after that listing.
    while IFS= read -r _; do
        # A burst of changes (or the first listing) costs one run.
        while IFS= read -r -t 0.2 _; do :; done
        "$@" || true
    done < <(kubectl --kubeconfig "$kubeconfig" get "$resource" --all-namespaces --watch -o name)
    sleep 1
done
