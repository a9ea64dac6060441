#!/usr/bin/env bash
# End-to-end run on a local kind cluster: builds the four images, installs LocalStack and the
# operator chart, applies the kind example, checks delivery with an in-cluster loadgen Job, then
# reshards the set and checks again.
#
#     scripts/e2e-kind.sh
#     KEEP_CLUSTER=1 scripts/e2e-kind.sh       # leave the cluster running afterwards
#     E2E_MESSAGES=100000 scripts/e2e-kind.sh  # any E2E_* variable overrides scripts/e2e.env
#
# Needs docker, kind, kubectl and helm on PATH. python3 is used to read the routing table when
# present; without it the shard list comes from the set's status.
#
# Settings (environment):
#   KIND_CLUSTER          cluster name (default: chatflow-e2e)
#   KEEP_CLUSTER=1        keep the cluster on exit; otherwise it is deleted, even if it existed
#   OPERATOR_NAMESPACE    namespace of the chart release (default: chatflow-system)
#   E2E_TIMEOUT           seconds to wait for readiness and for each loadgen Job (default: 600)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cluster="${KIND_CLUSTER:-chatflow-e2e}"
context="kind-$cluster"
operator_ns="${OPERATOR_NAMESPACE:-chatflow-system}"
timeout="${E2E_TIMEOUT:-600}"
localstack_url=http://localstack.localstack.svc.cluster.local:4566
images=(operator producer consumer loadgen)

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'e2e-kind: %s\n' "$*" >&2
    exit 1
}

# Every call names the context, so a different current context is never touched.
k() { kubectl --context "$context" "$@"; }

step "check tools"
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
done
docker info >/dev/null 2>&1 || die "docker is installed but the daemon does not answer"

step "read scripts/e2e.env"
# The file is data, not a script: it is never sourced, and variables already set win.
while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "${line//[[:space:]]/}" || "$line" =~ ^[[:space:]]*# ]] && continue
    [[ "$line" =~ ^(E2E_[A-Z0-9_]+)=(.*)$ ]] || die "scripts/e2e.env: not KEY=value: $line"
    key="${BASH_REMATCH[1]}"
    if [[ -z "${!key:-}" ]]; then
        printf -v "$key" '%s' "${BASH_REMATCH[2]}"
    fi
done <scripts/e2e.env
for key in E2E_SET_NAME E2E_ROOMS E2E_MESSAGES E2E_CONNECTIONS_PER_ROOM E2E_SUBSCRIBERS_PER_ROOM \
    E2E_EXAMPLE E2E_SCALED_ROOMS_PER_SHARD; do
    [[ -n "${!key:-}" ]] || die "$key is not set in scripts/e2e.env"
    printf '  %s=%s\n' "$key" "${!key}"
done
[[ "$E2E_ROOMS" =~ ^([0-9]+)-([0-9]+)$ ]] || die "E2E_ROOMS must be START-END, not $E2E_ROOMS"
room_count=$((BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
[[ -f "$E2E_EXAMPLE" ]] || die "$E2E_EXAMPLE not found"
set_name="$E2E_SET_NAME"
set_ns="$(sed -n 's/^  namespace: *//p' "$E2E_EXAMPLE" | head -n 1)"
set_ns="${set_ns:-default}"

dump_state() {
    echo "---- ChatRoomSets"
    k get crs -A -o yaml || true
    echo "---- pods"
    k get pods -A -o wide || true
    echo "---- recent events"
    k get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
    echo "---- operator log"
    k -n "$operator_ns" logs -l app.kubernetes.io/component=operator --tail=200 --prefix || true
}

on_exit() {
    local rc=$?
    set +e
    if [[ $rc -ne 0 ]] && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
        step "failed (exit $rc): cluster state"
        dump_state
    fi
    if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
        step "keeping cluster $cluster (kubectl --context $context ...; kind delete cluster --name $cluster)"
    else
        step "delete cluster $cluster"
        kind delete cluster --name "$cluster"
    fi
    exit "$rc"
}
trap on_exit EXIT

step "kind cluster $cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    echo "cluster $cluster exists; reusing it"
else
    kind create cluster --name "$cluster" --wait 120s
fi

for image in "${images[@]}"; do
    step "docker build --target $image -t chatflow/$image:dev"
    docker build --target "$image" -t "chatflow/$image:dev" .
done

step "kind load docker-image"
for image in "${images[@]}"; do
    kind load docker-image "chatflow/$image:dev" --name "$cluster"
done

step "LocalStack (examples/localstack.yaml)"
k apply -f examples/localstack.yaml
k -n localstack rollout status deploy/localstack --timeout="${timeout}s"

step "operator chart"
k create namespace "$operator_ns" --dry-run=client -o yaml | k apply -f -
k -n "$operator_ns" create secret generic chatflow-aws \
    --from-literal=AWS_ACCESS_KEY_ID=test --from-literal=AWS_SECRET_ACCESS_KEY=test \
    --dry-run=client -o yaml | k apply -f -
# Helm installs crds/ on the first install only and never upgrades them; a reused cluster needs
# the current schema too.
k apply --server-side --force-conflicts -f charts/chatflow/crds/chatroomsets.chatflow.dev.yaml
k wait --for=condition=Established crd/chatroomsets.chatflow.dev --timeout=60s
# The run stamp restarts the operator on a reused cluster, so it runs the image just loaded.
helm --kube-context "$context" upgrade --install chatflow charts/chatflow \
    --namespace "$operator_ns" \
    --set image.repository=chatflow/operator \
    --set image.tag=dev \
    --set aws.region=us-east-1 \
    --set aws.endpoint="$localstack_url" \
    --set aws.credentials.existingSecret=chatflow-aws \
    --set-string 'podAnnotations.chatflow\.dev/e2e-run='"$(date +%s)"
k -n "$operator_ns" rollout status deploy/chatflow-operator --timeout="${timeout}s"

# Waits until the operator has seen the latest spec and reports it Ready with the given shards;
# kubectl wait alone would accept a Ready left over from the previous generation.
wait_ready() {
    local shards="$1" deadline=$((SECONDS + timeout)) state="" gen observed ready count
    while ((SECONDS < deadline)); do
        # A separator keeps fields apart when one is still empty; a failed get is retried.
        state="$(k -n "$set_ns" get crs "$set_name" -o \
            jsonpath='{.metadata.generation}|{.status.observedGeneration}|{.status.conditions[?(@.type=="Ready")].status}|{.status.shardCount}')" ||
            state=""
        IFS='|' read -r gen observed ready count <<<"$state" || true
        if [[ -n "${gen:-}" && "$gen" == "${observed:-}" && "${ready:-}" == True && "${count:-}" == "$shards" ]]; then
            echo "crs/$set_name Ready: generation $gen, $count shards"
            return 0
        fi
        sleep 3
    done
    echo "crs/$set_name not Ready with $shards shards after ${timeout}s (generation, observed, Ready, shards: $state)" >&2
    return 1
}

# Prints the ingest URL template and then the --subscribe-url value, one per line, from the
# set's routing ConfigMap, or from its status when python3 is missing.
routing() {
    if command -v python3 >/dev/null 2>&1; then
        k -n "$set_ns" get configmap "$set_name-routing" -o jsonpath='{.data.routing\.json}' |
            python3 -c 'import json, sys
table = json.load(sys.stdin)
print(table["ingest"])
print(",".join(s["rooms"] + "=" + s["subscribe"] for s in table["shards"]))'
    else
        local rooms service pairs=""
        k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.endpoints.ingest}{"\n"}'
        while read -r rooms service; do
            [[ -n "$rooms" ]] || continue
            pairs+="${pairs:+,}$rooms=ws://$service.$set_ns.svc:8081/subscribe/{roomId}"
        done < <(k -n "$set_ns" get crs "$set_name" -o \
            jsonpath='{range .status.shards[*]}{.rooms}{" "}{.service}{"\n"}{end}')
        printf '%s\n' "$pairs"
    fi
}

# Runs loadgen in the cluster against the current routing table and fails unless every message
# reached its subscribers exactly once and in order.
run_loadgen() {
    local job="$1" messages="$2" ingest subscribe deadline succeeded failed logs
    ingest="" subscribe=""
    { read -r ingest && read -r subscribe; } < <(routing) || true
    [[ -n "$ingest" && -n "$subscribe" ]] || die "no routing table for $set_name"
    echo "ingest:    $ingest"
    echo "subscribe: $subscribe"
    k -n "$set_ns" delete job "$job" --ignore-not-found --wait=true
    k -n "$set_ns" apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $job
  labels:
    app.kubernetes.io/name: chatflow-loadgen
    app.kubernetes.io/part-of: chatflow
spec:
  backoffLimit: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: chatflow-loadgen
        app.kubernetes.io/part-of: chatflow
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: loadgen
          image: chatflow/loadgen:dev
          args:
            - run
            - --ingest-url
            - "$ingest"
            - --subscribe-url
            - "$subscribe"
            - --rooms
            - "$E2E_ROOMS"
            - --messages
            - "$messages"
            - --connections-per-room
            - "$E2E_CONNECTIONS_PER_ROOM"
            - --subscribers-per-room
            - "$E2E_SUBSCRIBERS_PER_ROOM"
            - --out
            - /report
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          volumeMounts:
            - name: report
              mountPath: /report
      volumes:
        - name: report
          emptyDir: {}
EOF
    # kubectl wait on condition=complete would sit out the whole timeout on a failed Job.
    deadline=$((SECONDS + timeout))
    while :; do
        IFS='|' read -r succeeded failed <<<"$(k -n "$set_ns" get job "$job" -o jsonpath='{.status.succeeded}|{.status.failed}' || true)" || true
        [[ "${succeeded:-0}" -ge 1 || "${failed:-0}" -ge 1 ]] && break
        ((SECONDS < deadline)) || {
            k -n "$set_ns" logs "job/$job" --tail=50 || true
            die "job/$job did not finish within ${timeout}s"
        }
        sleep 5
    done
    logs="$(k -n "$set_ns" logs "job/$job")"
    printf '%s\n' "$logs"
    if [[ "${succeeded:-0}" -lt 1 ]]; then
        die "job/$job failed (loadgen exits 3 when delivery is not clean, 1 on error)"
    fi
    grep -Eq 'lost 0, duplicated 0, out of order 0(,|$)' <<<"$logs" ||
        die "job/$job: the report does not say 'lost 0, duplicated 0, out of order 0'"
    echo "job/$job: delivery clean"
}

step "ChatRoomSet $set_ns/$set_name ($E2E_EXAMPLE)"
# A set left by an earlier run on a kept cluster would carry its queues' messages into this one.
k -n "$set_ns" delete crs "$set_name" --ignore-not-found --wait=true --timeout=180s
k apply -f "$E2E_EXAMPLE"
per_shard="$(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.spec.consumer.roomsPerShard}')"
per_shard="${per_shard:-10}"
shards=$(((room_count + per_shard - 1) / per_shard))
wait_ready "$shards"
k -n "$set_ns" get crs "$set_name"

step "loadgen: $E2E_MESSAGES messages over $shards shards"
if [[ "$E2E_EXAMPLE" == examples/chatroomset-kind-localstack.yaml ]]; then
    # examples/loadgen-job.yaml hard-codes this set's shards; keep it honest.
    documented="$(sed -n 's/^ *- \([0-9][0-9]*-[0-9][0-9]*=ws:.*\)$/\1/p' examples/loadgen-job.yaml)"
    actual="$(routing | sed -n 2p)"
    [[ "$documented" == "$actual" ]] ||
        die "examples/loadgen-job.yaml subscribes to '$documented' but the routing table says '$actual'"
fi
run_loadgen chatflow-loadgen-e2e "$E2E_MESSAGES"

step "reshard: roomsPerShard $per_shard -> $E2E_SCALED_ROOMS_PER_SHARD"
k -n "$set_ns" patch crs "$set_name" --type merge \
    -p "{\"spec\":{\"consumer\":{\"roomsPerShard\":$E2E_SCALED_ROOMS_PER_SHARD}}}"
scaled_shards=$(((room_count + E2E_SCALED_ROOMS_PER_SHARD - 1) / E2E_SCALED_ROOMS_PER_SHARD))
wait_ready "$scaled_shards"
# Pruned Deployments may take a moment to disappear after Ready.
selector="app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=consumer"
deadline=$((SECONDS + 60))
while :; do
    count="$(k -n "$set_ns" get deploy -l "$selector" -o name | wc -l)"
    [[ "$count" -eq "$scaled_shards" ]] && break
    ((SECONDS < deadline)) || {
        k -n "$set_ns" get deploy -l "$selector"
        die "expected $scaled_shards consumer Deployments, found $count"
    }
    sleep 2
done
k -n "$set_ns" get deploy -l "$selector"

step "loadgen after the reshard: 2000 messages over $scaled_shards shards"
run_loadgen chatflow-loadgen-e2e-resharded 2000

step "end-to-end run passed"
