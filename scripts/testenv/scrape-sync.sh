#!/usr/bin/env bash
# Writes Prometheus' scrape targets from the test cluster's pods, as kubernetes_sd would find
# them: every Running pod annotated prometheus.io/scrape=true, at its IP and prometheus.io/port,
# path prometheus.io/path, labelled namespace, pod and component. Debian's Prometheus is built
# without Kubernetes discovery, so the targets go through file_sd (Prometheus re-reads the file
# when it changes). scripts/testenv/prometheus.sh runs it through kube-watch.sh on every change.
#
#     scrape-sync.sh KUBECONFIG TARGETS_FILE
set -uo pipefail

kubeconfig="$1" targets="$2"
# Written beside the file and moved over it, so Prometheus never reads a half-written file.
tmp="$targets.tmp"

kubectl --kubeconfig "$kubeconfig" get pods --all-namespaces -o json 2>/dev/null |
    python3 -c '
import json, sys
groups = []
for pod in json.load(sys.stdin)["items"]:
    meta, status = pod["metadata"], pod.get("status", {})
    notes = meta.get("annotations") or {}
    if notes.get("prometheus.io/scrape") != "true" or status.get("phase") != "Running":
        continue
    if not status.get("podIP") or not notes.get("prometheus.io/port"):
        continue
    groups.append({
        "targets": [status["podIP"] + ":" + notes["prometheus.io/port"]],
        "labels": {
            "__metrics_path__": notes.get("prometheus.io/path", "/metrics"),
            "namespace": meta["namespace"],
            "pod": meta["name"],
            "component": (meta.get("labels") or {}).get("app.kubernetes.io/component", ""),
        },
    })
groups.sort(key=lambda g: g["targets"])
json.dump(groups, sys.stdout, indent=1)
' >"$tmp" || exit 0
cmp -s "$tmp" "$targets" || mv -f "$tmp" "$targets"
