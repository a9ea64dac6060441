#!/usr/bin/env bash
# The user's path on a real Kubernetes cluster, every step asserted:
#
#   1. the four images are built from the Dockerfile (scripts/images.sh), tagged with this run's
#      number; `helm install` runs the operator from its image and one pod holds the Lease;
#   2. the example ChatRoomSet, pointed at LocalStack, becomes Ready through the pods' own probes,
#      and every pod runs the image ID built in this run;
#   3. loadgen runs as a Job from its image, through the Services: 0 lost, duplicated, reordered;
#      the set gets an Ingress (spec.ingress) naming the edge Service, and loadgen runs again with
#      its subscribers on that Service, spread over the producer pods' edges; then again at a steady rate while a consumer shard's pod is deleted: its subscribers
#      reconnect and resume (?after=) from the set's history store (Redis), every resume
#      recovered: true, and still nothing is lost, duplicated or reordered; and once more while a
#      producer pod is deleted, the producers roll to a new tag and the operator's leader pod is
#      deleted: senders resend what was unanswered, still clean; with --current also a consumer
#      container SIGKILLed (clean, every resume recovered: true), Redis frozen for 10 s (clean),
#      LocalStack frozen for 10 s (clean), with the test environment's Prometheus LocalStack cut
#      off from the pods until the breaker alert goes pending (clean), and a burst to a room
#      nobody subscribes to, its shard restarted, resumed 60 s later on another edge pod: all of it;
#   4. a reshard under load, subscribers through the edge, which follows the routing table to
#      the new shards: clean, and no edge resume the new shards could not vouch for; the removed shards' pods are gone before any new shard's pod
#      exists, and a second loadgen run is clean;
#   4b. with E2E_AUTOSCALE=1, shard autoscaling by measured rates: the load moved from every room to one makes the
#      operator give that room a shard of its own in bounded time, clean across the move, with the
#      end-to-end p99 after it within 1.5x the even load's; a trickle spans the set going back to its
#      minimum after the cooldown, clean;
#   5. with the test environment's Prometheus (CHATFLOW_PROMETHEUS), every panel of the Grafana
#      dashboard and every alert rule is evaluated over this run's scrapes: none without data
#      (`loadgen dashboard check`), and the panels are drawn (E2E_DASHBOARD_SVG keeps the picture);
#   6. `kubectl delete crs` and `helm uninstall` leave no Deployments, Services, ConfigMaps or pods
#      behind, and deletionPolicy Delete leaves no queues.
#
#     scripts/e2e.sh --kind      # creates a kind cluster, loads the images into it and runs
#                                # LocalStack in it (examples/localstack.yaml)
#     scripts/e2e.sh --current   # the current kubectl context, whose nodes share this machine's
#                                # Docker (scripts/test runs it on the cluster of cargo xtask testenv run)
#
# Only cluster creation, image loading and where LocalStack runs differ between the two.
# Any E2E_* variable overrides scripts/e2e.env. Other settings (environment):
#   KIND_CLUSTER, KEEP_CLUSTER=1   kind cluster name (default chatflow-e2e); keep it afterwards
#   E2E_LOCAL_BASE=1               build from local base images (scripts/images.sh --local-base)
#   E2E_POD_AWS_ENDPOINT           --current: LocalStack as pods reach it (default
#                                  $CHATFLOW_POD_AWS_ENDPOINT from cargo xtask testenv run)
#   E2E_HOST_AWS_ENDPOINT          --current: LocalStack as this script reaches it (default
#                                  $AWS_ENDPOINT_URL)
#   E2E_POD_REDIS_URL              --current: the history store as pods reach it (default
#                                  $CHATFLOW_POD_REDIS_URL from cargo xtask testenv run)
#   OPERATOR_NAMESPACE             chart release namespace (default chatflow-system)
#   E2E_TIMEOUT                    seconds for each wait (default 600)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode="${1:-}"
case "$mode" in
--kind | --current) ;;
*)
    echo "usage: scripts/e2e.sh --kind | --current" >&2
    exit 2
    ;;
esac
operator_ns="${OPERATOR_NAMESPACE:-chatflow-system}"
timeout="${E2E_TIMEOUT:-600}"
images=(operator producer consumer loadgen)
# A number, so the chart's rendering of numeric tags (`--set image.tag=N`) is what runs.
tag="$(date +%s)"
release=chatflow

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }
die() {
    printf 'e2e: %s\n' "$*" >&2
    exit 1
}

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
for key in E2E_SET_NAME E2E_ROOMS E2E_MESSAGES E2E_LOAD_MESSAGES E2E_CONNECTIONS_PER_ROOM \
    E2E_SUBSCRIBERS_PER_ROOM E2E_EXAMPLE E2E_SCALED_ROOMS_PER_SHARD E2E_FAULT_MESSAGES \
    E2E_FAULT_RATE E2E_DRAIN_MESSAGES E2E_PRODUCER_FAULT_MESSAGES E2E_EDGE_SUBSCRIBERS_PER_ROOM \
    E2E_AUTOSCALE_RATE E2E_AUTOSCALE_TARGET E2E_HOT_ROOM E2E_ISOLATE_WITHIN E2E_AUTOSCALE_COOLDOWN \
    E2E_TRICKLE_RATE E2E_CONNECTIONS_TARGET E2E_AUTOSCALE; do
    [[ -n "${!key:-}" ]] || die "$key is not set in scripts/e2e.env"
    printf '  %s=%s\n' "$key" "${!key}"
done
[[ "$E2E_ROOMS" =~ ^([0-9]+)-([0-9]+)$ ]] || die "E2E_ROOMS must be START-END, not $E2E_ROOMS"
room_count=$((BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
[[ -f "$E2E_EXAMPLE" ]] || die "$E2E_EXAMPLE not found"
set_name="$E2E_SET_NAME"
set_ns="$(sed -n 's/^  namespace: *//p' "$E2E_EXAMPLE" | head -n 1)"
set_ns="${set_ns:-default}"
queue_prefix="$(sed -n 's/^    prefix: *//p' "$E2E_EXAMPLE" | head -n 1)"
[[ -n "$queue_prefix" ]] || die "$E2E_EXAMPLE sets no spec.queues.prefix"

for tool in kubectl python3 curl cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
done
helm="$(cargo xtask helm)"
docker_cmd="${CHATFLOW_DOCKER:-docker}"

if [[ "$mode" == --kind ]]; then
    cluster="${KIND_CLUSTER:-chatflow-e2e}"
    context="kind-$cluster"
    pod_aws_endpoint=http://localstack.localstack.svc.cluster.local:4566
    pod_redis_url=redis://redis.localstack.svc.cluster.local:6379
    command -v kind >/dev/null 2>&1 || die "kind not found on PATH"
else
    context="$(kubectl config current-context)" || die "no current kubectl context"
    pod_aws_endpoint="${E2E_POD_AWS_ENDPOINT:-${CHATFLOW_POD_AWS_ENDPOINT:-}}"
    host_aws_endpoint="${E2E_HOST_AWS_ENDPOINT:-${AWS_ENDPOINT_URL:-}}"
    [[ -n "$pod_aws_endpoint" && -n "$host_aws_endpoint" ]] ||
        die "--current needs LocalStack: run inside cargo xtask testenv run, or set E2E_POD_AWS_ENDPOINT and E2E_HOST_AWS_ENDPOINT"
    pod_redis_url="${E2E_POD_REDIS_URL:-${CHATFLOW_POD_REDIS_URL:-}}"
    [[ -n "$pod_redis_url" ]] ||
        die "--current needs Redis: run inside cargo xtask testenv run, or set E2E_POD_REDIS_URL"
fi
"$docker_cmd" info >/dev/null 2>&1 || die "docker is installed but the daemon does not answer"
# The test environment's Prometheus, scraping this cluster's pods: the monitoring steps need it.
prometheus=""
[[ "$mode" == --kind ]] || prometheus="${CHATFLOW_PROMETHEUS:-}"
# loadgen on this machine, for what talks to Prometheus rather than to the Services.
host_loadgen() { cargo run -q -p chatflow-loadgen -- "$@"; }

# Every call names the context, so a different current context is never touched.
k() { kubectl --context "$context" "$@"; }

dump_state() {
    echo "---- ChatRoomSets"
    k get crs -A -o yaml || true
    echo "---- pods"
    k get pods -A -o wide || true
    echo "---- recent events"
    k get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
    echo "---- operator log"
    k -n "$operator_ns" logs -l app.kubernetes.io/component=operator --tail=100 --prefix || true
}

watch_pid=""
# The iptables rule of the LocalStack cut while it is in force, so that no exit leaves it behind.
queue_cut=()
heal_queue_cut() {
    [[ ${#queue_cut[@]} -eq 0 ]] || iptables -D "${queue_cut[@]}"
    queue_cut=()
}
on_exit() {
    local rc=$?
    set +e
    heal_queue_cut
    [[ -z "$watch_pid" ]] || kill "$watch_pid" 2>/dev/null
    if [[ $rc -ne 0 ]]; then
        step "failed (exit $rc): cluster state"
        dump_state
    fi
    if [[ "$mode" == --kind ]]; then
        if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
            step "keeping cluster $cluster (kind delete cluster --name $cluster)"
        else
            kind delete cluster --name "$cluster"
        fi
    else
        # The cluster outlives this script; leave it as it was found. The operator must still
        # run while the set goes, or its finalizer would keep the set (and its queues).
        k -n "$set_ns" delete crs "$set_name" --ignore-not-found --timeout=120s >/dev/null 2>&1
        "$helm" --kube-context "$context" uninstall "$release" --namespace "$operator_ns" >/dev/null 2>&1
    fi
    exit "$rc"
}
trap on_exit EXIT

if [[ "$mode" == --kind ]]; then
    step "kind cluster $cluster"
    if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
        echo "cluster $cluster exists; reusing it"
    else
        kind create cluster --name "$cluster" --wait 120s
    fi
fi

step "images from the Dockerfile, tag $tag"
image_args=()
[[ "${E2E_LOCAL_BASE:-0}" == 1 ]] && image_args+=(--local-base)
declare -A image_id=()
while read -r name id; do
    image_id["$name"]="$id"
    echo "  $name $id"
done < <(scripts/images.sh "${image_args[@]}" "$tag")
for image in "${images[@]}"; do
    [[ -n "${image_id["chatflow/$image:$tag"]:-}" ]] || die "no image ID for chatflow/$image:$tag"
done

if [[ "$mode" == --kind ]]; then
    step "kind load docker-image"
    for image in "${images[@]}"; do
        kind load docker-image "chatflow/$image:$tag" --name "$cluster"
    done
    step "LocalStack in the cluster (examples/localstack.yaml)"
    k apply -f examples/localstack.yaml
    k -n localstack rollout status deploy/localstack --timeout="${timeout}s"
    k -n localstack rollout status deploy/redis --timeout="${timeout}s"
fi

# shellcheck source=scripts/e2e/helpers.sh
source scripts/e2e/helpers.sh

step "operator chart, image tag $tag"
k create namespace "$operator_ns" --dry-run=client -o yaml | k apply -f -
k -n "$operator_ns" create secret generic chatflow-aws \
    --from-literal=AWS_ACCESS_KEY_ID=test --from-literal=AWS_SECRET_ACCESS_KEY=test \
    --dry-run=client -o yaml | k apply -f -
# Helm installs crds/ on the first install only and never upgrades them; a reused cluster needs
# the current schema too.
k apply --server-side --force-conflicts -f charts/chatflow/crds/chatroomsets.chatflow.dev.yaml
k wait --for=condition=Established crd/chatroomsets.chatflow.dev --timeout=60s
# No --set-string: the tag goes in as a number, as a user's `--set image.tag=N` would.
"$helm" --kube-context "$context" upgrade --install "$release" charts/chatflow \
    --namespace "$operator_ns" \
    --set image.repository=chatflow/operator \
    --set image.tag="$tag" \
    --set aws.region=us-east-1 \
    --set aws.endpoint="$pod_aws_endpoint" \
    --set aws.credentials.existingSecret=chatflow-aws
k -n "$operator_ns" rollout status deploy/chatflow-operator --timeout="${timeout}s"
assert_image_ids "$operator_ns" app.kubernetes.io/component=operator "chatflow/operator:$tag" Running

step "one operator pod holds the Lease"
holder=""
deadline=$((SECONDS + 120))
while ((SECONDS < deadline)); do
    holder="$(k -n "$operator_ns" get lease chatflow-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
    [[ -n "$holder" ]] && k -n "$operator_ns" get pod "$holder" >/dev/null 2>&1 && break
    holder=""
    sleep 2
done
[[ -n "$holder" ]] || die "no running operator pod holds lease $operator_ns/chatflow-operator"
echo "  lease chatflow-operator held by pod $holder"

if [[ "$mode" == --current ]]; then
    # This machine reaches pod addresses: the image says which build it is, down to the commit.
    holder_ip="$(k -n "$operator_ns" get pod "$holder" -o jsonpath='{.status.podIP}')"
    commit="$(git rev-parse --short=12 HEAD)"
    curl -fsS "http://$holder_ip:8090/info" | python3 -c '
import json, sys
info, commit = json.load(sys.stdin), sys.argv[1]
assert info["component"] == "operator" and info["commit"] == commit, info
assert info["config"]["leader_election"] is True, info["config"]
print("  /info: %s %s, commit %s" % (info["component"], info["version"], info["commit"]))
' "$commit" || die "the operator's /info does not name this build (commit $commit)"
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/chatflow-e2e.XXXXXX")"

step "identity: a set that says nothing of it is refused; the set's token secret"
unsaid="$set_name-unsaid"
# The example without its spec.auth (the last block), under another name.
sed -e '/^  auth:/,$d' -e "s/^  name: $set_name\$/  name: $unsaid/" "$E2E_EXAMPLE" | k apply -f -
k -n "$set_ns" wait "crs/$unsaid" --for=condition=Ready=False --timeout=60s
refusal="$(k -n "$set_ns" get crs "$unsaid" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}')"
[[ "$refusal" == "InvalidSpec: spec.auth is required"* ]] || die "crs/$unsaid: '$refusal'"
[[ -z "$(k -n "$set_ns" get crs "$unsaid" -o jsonpath='{.metadata.finalizers}')" ]] ||
    die "crs/$unsaid was taken in hand without spec.auth"
echo "  crs/$unsaid: $refusal"
k -n "$set_ns" delete crs "$unsaid" --wait=true --timeout=60s
jwt_secret_name="$(sed -n '/^    hmacSecretRef:/{n;s/^ *name: *//p}' "$E2E_EXAMPLE")"
jwt_secret=""
if [[ -n "$jwt_secret_name" ]]; then
    # A new secret each run: loadgen mints its users' tokens from the same Secret.
    jwt_secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    k -n "$set_ns" create secret generic "$jwt_secret_name" --from-literal=hs256="$jwt_secret" \
        --dry-run=client -o yaml | k apply -f -
fi

api_secret_name="$(sed -n '/^      - name: API_KEY$/,/^ *name:/{s/^ *name: *//p}' "$E2E_EXAMPLE" | tail -n 1)"
api_key=""
if [[ -n "$api_secret_name" && "$api_secret_name" != API_KEY ]]; then
    api_key="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
    k -n "$set_ns" create secret generic "$api_secret_name" --from-literal=key="$api_key" \
        --dry-run=client -o yaml | k apply -f -
fi

history_secret_name="$(sed -n '/^    urlSecretRef:/{n;s/^ *name: *//p}' "$E2E_EXAMPLE")"
if [[ -n "$history_secret_name" ]]; then
    # The store as the pods reach it; a store left from an earlier run starts empty for this set
    # (its keys carry the set's namespace and name, and the test environment's Redis is new).
    k -n "$set_ns" create secret generic "$history_secret_name" --from-literal=url="$pod_redis_url" \
        --dry-run=client -o yaml | k apply -f -
fi

step "ChatRoomSet $set_ns/$set_name ($E2E_EXAMPLE, images tag $tag)"
# A set left by an earlier run on a kept cluster would carry its queues' messages into this one.
k -n "$set_ns" delete crs "$set_name" --ignore-not-found --wait=true --timeout=180s
sed -e "s#image: chatflow/\([a-z]*\):dev#image: chatflow/\1:$tag#" \
    -e "s#endpoint: .*#endpoint: $pod_aws_endpoint#" "$E2E_EXAMPLE" | k apply -f -
per_shard="$(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.spec.consumer.roomsPerShard}')"
per_shard="${per_shard:-10}"
shards=$(((room_count + per_shard - 1) / per_shard))
k -n "$set_ns" wait "crs/$set_name" --for=condition=Ready --timeout="${timeout}s"
wait_ready "$shards"
k -n "$set_ns" get crs "$set_name"
[[ "$(list_queues | wc -l)" -eq "$room_count" ]] ||
    die "LocalStack holds $(list_queues | wc -l) queues named $queue_prefix*, not $room_count"
assert_image_ids "$set_ns" "app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=producer" "chatflow/producer:$tag" Running
assert_image_ids "$set_ns" "app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=consumer" "chatflow/consumer:$tag" Running

step "the set's NetworkPolicy admits only the pods' ports (content: nothing here enforces it)"
policy="$(k -n "$set_ns" get networkpolicy "$set_name-workloads" -o \
    jsonpath='{.spec.policyTypes[*]}:{range .spec.ingress[*].ports[*]}{.port}/{.protocol} {end}')"
# The set checks tokens, so the shards' port (which checks none) admits only its edges and
# pods labelled chatflow.dev/shard-access (loadgen's Job).
[[ "$policy" == "Ingress:8080/TCP 9090/TCP 8081/TCP " ]] ||
    die "networkpolicy/$set_name-workloads says '$policy'"
shard_from="$(k -n "$set_ns" get networkpolicy "$set_name-workloads" -o \
    jsonpath='{.spec.ingress[1].from[*].podSelector.matchLabels}')"
[[ "$shard_from" == *'"app.kubernetes.io/component":"producer"'* && "$shard_from" == *'chatflow.dev/shard-access'* ]] ||
    die "networkpolicy/$set_name-workloads admits to the shards: '$shard_from'"
echo "  networkpolicy/$set_name-workloads: $policy"

if [[ -n "$jwt_secret" ]]; then
    step "identity on a producer pod: no token is HTTP 401, a token for another room 403"
    producer_ip="$(k -n "$set_ns" get pods -l "app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=producer" \
        -o jsonpath='{.items[0].status.podIP}')"
    upgrade_status() {
        curl -s -o /dev/null -m 10 -w '%{http_code}' -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
            -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "$@" || true
    }
    # A token for user 1 and room 1 only, signed as the set's identity provider would.
    room1_token="$(mint_token 1)"
    code="$(upgrade_status "http://$producer_ip:8080/chat/1")"
    [[ "$code" == 401 ]] || die "an upgrade without a token got HTTP $code from $producer_ip, not 401"
    for path in /chat/2 /subscribe/2; do
        code="$(upgrade_status -H "Authorization: Bearer $room1_token" "http://$producer_ip:8080$path")"
        [[ "$code" == 403 ]] || die "a token for room 1 got HTTP $code on $path, not 403"
    done
    echo "  $producer_ip: 401 without a token, 403 for /chat/2 and /subscribe/2 with a token for room 1"
fi

step "running pods meet Pod Security \"restricted\" (no PodSecurity admission on this cluster)"
k -n "$set_ns" get pods -l "app.kubernetes.io/instance=$set_name" -o json |
    cargo run -q -p chatflow-operator --bin podcheck ||
    die "the operator's pods break the restricted profile"
k -n "$operator_ns" get pods -l app.kubernetes.io/component=operator -o json |
    cargo run -q -p chatflow-operator --bin podcheck -- --needs-api ||
    die "the chart's operator pods break the restricted profile"

monitor_started="$(date +%s)"
step "loadgen: $E2E_MESSAGES messages over $shards shards"
if [[ "$E2E_EXAMPLE" == examples/chatroomset-kind-localstack.yaml ]]; then
    # examples/loadgen-job.yaml hard-codes this set's shards; keep it honest.
    documented="$(sed -n 's/^ *- \([0-9][0-9]*-[0-9][0-9]*=ws:.*\)$/\1/p' examples/loadgen-job.yaml)"
    actual="$(routing | sed -n 2p)"
    [[ "$documented" == "$actual" ]] ||
        die "examples/loadgen-job.yaml subscribes to '$documented' but the routing table says '$actual'"
fi
run_loadgen chatflow-loadgen-e2e "$E2E_MESSAGES"

if [[ -n "$api_key" && -n "$jwt_secret" ]]; then
    # After the run, so the shards broadcast at once (a starting shard holds a room's first
    # messages until its subscribers are back).
    step "server API and recent history on a producer pod: a backend's message, published twice with the API key, is read back once through the edge with a token for its room"
    server_api_check "$producer_ip" "$room1_token"
    step "presence across producer pods: a subscriber on one pod is in the other's roster, and leaves it on disconnect, on a disconnect through the other pod's server API, and by expiry when its pod's container is SIGKILLed"
    presence_check
fi

consumers="app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=consumer"
producers="app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=producer"

step "spec.ingress: one rule in front of the edge Service, public URLs in status"
k -n "$set_ns" patch crs "$set_name" --type merge -p \
    '{"spec":{"ingress":{"host":"chat.e2e.test","annotations":{"nginx.ingress.kubernetes.io/proxy-read-timeout":"3600"}}}}'
deadline=$((SECONDS + timeout))
until backend="$(k -n "$set_ns" get ingress "$set_name-producer" -o \
    jsonpath='{.spec.rules[*].host} {.spec.rules[*].http.paths[*].path} {.spec.rules[*].http.paths[*].backend.service.name}:{.spec.rules[*].http.paths[*].backend.service.port.number}' 2>/dev/null)" &&
    [[ -n "$backend" ]]; do
    ((SECONDS < deadline)) || die "no ingress/$set_name-producer after ${timeout}s"
    sleep 1
done
[[ "$backend" == "chat.e2e.test / $set_name-producer:8080" ]] || die "ingress/$set_name-producer says '$backend'"
echo "  ingress/$set_name-producer: $backend"
k -n "$set_ns" wait "crs/$set_name" --timeout="${timeout}s" \
    --for=jsonpath='{.status.endpoints.public[1]}=ws://chat.e2e.test/subscribe/{roomId}'

step "kubectl scale crs/$set_name: the scale subresource sizes the producer tier"
replicas_before="$(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.spec.producer.replicas}')"
scaled=$((replicas_before + 1))
k -n "$set_ns" scale "crs/$set_name" --replicas="$scaled"
k -n "$set_ns" wait "deploy/$set_name-producer" --timeout="${timeout}s" \
    --for=jsonpath='{.status.readyReplicas}'="$scaled"
k -n "$set_ns" wait "crs/$set_name" --timeout="${timeout}s" \
    --for=jsonpath='{.status.producer.replicas}'="$scaled"
scale="$(k get --raw "/apis/chatflow.dev/v1alpha1/namespaces/$set_ns/chatroomsets/$set_name/scale")"
python3 - "$scale" "$scaled" "$set_name" <<'PY' || die "the scale subresource says: $scale"
import json, sys
s = json.loads(sys.argv[1])
want, name = int(sys.argv[2]), sys.argv[3]
assert s["spec"]["replicas"] == want and s["status"]["replicas"] == want, s
assert f"app.kubernetes.io/instance={name}" in s["status"]["selector"], s
assert "app.kubernetes.io/component=producer" in s["status"]["selector"], s
PY
echo "  crs/$set_name scaled to $scaled producers through /scale, selector $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status"]["selector"])' "$scale")"
k -n "$set_ns" scale "crs/$set_name" --replicas="$replicas_before"
k -n "$set_ns" rollout status "deploy/$set_name-producer" --timeout="${timeout}s"
# The pod scaled away drains for a while; later steps count and probe every producer pod.
deadline=$((SECONDS + timeout))
until (($(k -n "$set_ns" get pods -l "$producers" --no-headers 2>/dev/null | wc -l) == replicas_before)); do
    ((SECONDS < deadline)) || die "the producer pod scaled away was still there after ${timeout}s"
    sleep 1
done
k -n "$set_ns" wait "crs/$set_name" --timeout="${timeout}s" \
    --for=jsonpath='{.status.producer.replicas}'="$replicas_before"

step "loadgen through the edge: $E2E_EDGE_SUBSCRIBERS_PER_ROOM subscribers per room on the producer Service"
subscribe_via=edge subscribers_per_room="$E2E_EDGE_SUBSCRIBERS_PER_ROOM"
run_loadgen chatflow-loadgen-e2e-edge "$E2E_MESSAGES"
# Each edge pod holds one upstream per room it relays: more upstreams than rooms means rooms
# whose subscribers sit on several edge pods, each fed once by the room's shard.
pods_metric "$producers" chatflow_edge_upstream_connects_total | tee "$workdir/edge-upstreams"
edge_pods="$(awk '$1 != "total" && $2 > 0' "$workdir/edge-upstreams" | wc -l)"
upstreams="$(awk '$1 == "total" { print $2 }' "$workdir/edge-upstreams")"
((edge_pods >= 2 && upstreams > room_count)) ||
    die "subscribers were not spread over the edge pods ($edge_pods pods, $upstreams upstreams for $room_count rooms)"
echo "  $room_count rooms relayed over $upstreams upstream subscriptions on $edge_pods edge pods"
subscribe_via=shards subscribers_per_room="$E2E_SUBSCRIBERS_PER_ROOM"
# shellcheck source=scripts/e2e/faults.sh
source scripts/e2e/faults.sh

if [[ "$mode" == --current && -n "$history_secret_name" ]]; then
    step "a burst to a room nobody subscribes to, its shard restarted, a subscriber back 60 s later through an edge: all of it from the history store"
    late_room="$room_count"
    late_start=$(((late_room - 1) / per_shard * per_shard + 1))
    late_end=$((late_start + per_shard - 1))
    ((late_end <= room_count)) || late_end="$room_count"
    late_shard="$set_name-consumer-$late_start-$late_end"
    k -n "$set_ns" get deploy "$late_shard" >/dev/null || die "no shard Deployment $late_shard for room $late_room"
    # The first subscriber on one edge pod, the resume on another, whose relay never held the room:
    # only the shard, restarted meanwhile, can answer it, from the store.
    # Producer pods of an earlier step's rollout may still be draining: only serving ones count.
    serving_deadline=$((SECONDS + timeout))
    until mapfile -t serving < <(serving_ips "$producers") && ((${#serving[@]} >= 2)); do
        ((SECONDS < serving_deadline)) || die "the late resume needs two serving producer pods"
        sleep 1
    done
    edge_ip="${serving[0]}" other_edge_ip="${serving[1]}"
    late_args=(late-resume --room "$late_room" --messages 200 --wait-secs 60
        --ingest-url "ws://$edge_ip:8080/chat/{roomId}" --subscribe-url "ws://$edge_ip:8080/subscribe/{roomId}"
        --resume-url "ws://$other_edge_ip:8080/subscribe/{roomId}")
    if [[ -n "$jwt_secret" ]]; then
        printf '%s' "$jwt_secret" >"$workdir/jwt-secret"
        late_args+=(--jwt-secret-file "$workdir/jwt-secret")
    fi
    host_loadgen "${late_args[@]}" >"$workdir/late-resume.log" 2>&1 &
    late_pid=$!
    late_due=$((SECONDS + 180))
    until grep -q '^burst of' "$workdir/late-resume.log"; do
        kill -0 "$late_pid" 2>/dev/null || { cat "$workdir/late-resume.log"; die "late-resume ended before its burst"; }
        ((SECONDS < late_due)) || die "late-resume sent no burst in 180 s"
        sleep 1
    done
    # Broadcast to nobody and deleted: from here on the burst exists only in the history store.
    until [[ "$(backlog)" == 0 ]]; do
        ((SECONDS < late_due)) || die "the burst stayed in room $late_room's queue"
        sleep 1
    done
    late_pods() {
        k -n "$set_ns" get pods -l "chatflow.dev/workload=$late_shard" -o \
            jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].ready}{"\n"}{end}'
    }
    old_pod="$(late_pods | head -n 1 | cut -d' ' -f1)"
    echo "  burst drained; restarting the room's shard: deleting pod/$old_pod"
    k -n "$set_ns" delete pod "$old_pod" --wait=false
    until late_pods | grep -v "^$old_pod " | grep -q ' true$'; do
        ((SECONDS < late_due)) || die "no new pod of $late_shard became ready"
        sleep 1
    done
    echo "  $(late_pods | grep -v "^$old_pod " | cut -d' ' -f1) ready"
    wait "$late_pid" || { cat "$workdir/late-resume.log"; die "the late resume did not get the whole burst"; }
    sed 's/^/  /' "$workdir/late-resume.log"
fi

step "reshard under load: roomsPerShard $per_shard -> $E2E_SCALED_ROOMS_PER_SHARD"
old_shards="$(k -n "$set_ns" get deploy -l "$consumers" -o jsonpath='{.items[*].metadata.name}')"
# One watch gives every pod event in the API server's own order, so "deleted before created"
# needs no clocks.
k -n "$set_ns" get pods -l "$consumers" --watch --output-watch-events -o \
    jsonpath='{.type} {.object.metadata.labels.chatflow\.dev/workload} {.object.metadata.name}{"\n"}' \
    >"$workdir/pod-events" 2>"$workdir/pod-events.err" &
watch_pid=$!
# Through the edge, which follows the routing table to the new shards: delivery is asserted.
subscribe_via=edge subscribers_per_room="$E2E_EDGE_SUBSCRIBERS_PER_ROOM"
# The edge reads the table as the kubelet refreshes its mount (up to about a minute), and the
# new shards hold each room's backlog until it comes.
# Open loop at the fault rate, so sending spans the reshard.
start_loadgen chatflow-loadgen-e2e-under-load "$E2E_LOAD_MESSAGES" --rate "$E2E_FAULT_RATE" \
    --drain-timeout-secs 180
subscribe_via=shards subscribers_per_room="$E2E_SUBSCRIBERS_PER_ROOM"
wait_loadgen_pod chatflow-loadgen-e2e-under-load
sleep 3
k -n "$set_ns" patch crs "$set_name" --type merge \
    -p "{\"spec\":{\"consumer\":{\"roomsPerShard\":$E2E_SCALED_ROOMS_PER_SHARD}}}"
scaled_shards=$(((room_count + E2E_SCALED_ROOMS_PER_SHARD - 1) / E2E_SCALED_ROOMS_PER_SHARD))
wait_ready "$scaled_shards"
new_shards="$(k -n "$set_ns" get deploy -l "$consumers" -o jsonpath='{.items[*].metadata.name}')"
echo "  shards before: $old_shards"
echo "  shards after:  $new_shards"
assert_loadgen_clean chatflow-loadgen-e2e-under-load >/dev/null
grep -E '^  (subscribers|throughput|end to end|delivery|resumes?) ' "$workdir/chatflow-loadgen-e2e-under-load.log"
echo "job/chatflow-loadgen-e2e-under-load: delivery through the edge clean across the reshard"
echo "  edge upstream resumes the new shards could not vouch for (chatflow_edge_upstream_gaps_total):"
gaps="$(pods_metric "$producers" chatflow_edge_upstream_gaps_total)"
echo "$gaps"
# The new shards answer the edges' resumes from the history store.
[[ "$(tail -n 1 <<<"$gaps")" == "total 0" ]] ||
    die "edges resumed on the new shards without recovery"
# What the load run queued after its subscribers went is broadcast by the new shards; the next run
# starts once they have worked through it, so its own messages are not waiting behind it.
drain_started=$SECONDS
deadline=$((SECONDS + timeout))
while :; do
    left="$(backlog)" || die "could not read the queues' backlog from LocalStack"
    [[ "$left" -gt 0 ]] || break
    ((SECONDS < deadline)) || die "the new shards left $left messages in the queues after ${timeout}s"
    sleep 2
done
echo "  the new shards drained the load run's backlog in $((SECONDS - drain_started)) s"
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
watch_pid=""
python3 - "$old_shards" "$new_shards" "$workdir/pod-events" <<'EOF' || die "reshard order violated"
import sys
old, new, path = set(sys.argv[1].split()), set(sys.argv[2].split()), sys.argv[3]
events = [line.split() for line in open(path) if len(line.split()) == 3]
last_old_delete = max((i for i, (t, w, _) in enumerate(events) if t == "DELETED" and w in old), default=-1)
first_new_add = min((i for i, (t, w, _) in enumerate(events) if t == "ADDED" and w in new and w not in old), default=None)
old_pods = {p for t, w, p in events if w in old}
deleted = {p for t, w, p in events if w in old and t == "DELETED"}
print(f"  {len(events)} pod events; old-shard pods {len(old_pods)}, deleted {len(deleted)}; "
      f"last old-shard delete at event {last_old_delete}, first new-shard pod at event {first_new_add}")
if not old_pods or old_pods != deleted:
    sys.exit(f"old-shard pods not all deleted: {sorted(old_pods - deleted)}")
if first_new_add is None:
    sys.exit("no new-shard pod was seen")
if first_new_add < last_old_delete:
    sys.exit("a new shard's pod existed before the removed shards' pods were gone")
print("  removed shards' pods were gone before the first new shard pod was created")
EOF

step "loadgen after the reshard: $E2E_MESSAGES messages over $scaled_shards shards"
run_loadgen chatflow-loadgen-e2e-resharded "$E2E_MESSAGES"

if [[ "$E2E_AUTOSCALE" == 1 ]]; then
    # shellcheck source=scripts/e2e/autoscale.sh
    source scripts/e2e/autoscale.sh
fi

if [[ -n "$prometheus" ]]; then
    step "the Grafana dashboard and the alert rules over this run's scrapes ($prometheus)"
    window=$(($(date +%s) - monitor_started))
    host_loadgen dashboard check --prometheus "$prometheus" --since "$window"
    host_loadgen dashboard render --prometheus "$prometheus" --since "$window" \
        --out "${E2E_DASHBOARD_SVG:-$workdir/dashboard.svg}"
fi

step "delete crs/$set_name: garbage collection and deletionPolicy Delete"
k -n "$set_ns" delete job -l app.kubernetes.io/name=chatflow-loadgen --wait=true
k -n "$set_ns" delete crs "$set_name" --wait=true --timeout="${timeout}s"
owned="app.kubernetes.io/instance=$set_name,app.kubernetes.io/managed-by=chatflow-operator"
deadline=$((SECONDS + timeout))
while :; do
    left="$(k -n "$set_ns" get deploy,rs,svc,cm,networkpolicy,pdb,pods -l "$owned" -o name)"
    [[ -z "$left" ]] && break
    ((SECONDS < deadline)) || die "left behind after deleting the set: $left"
    sleep 2
done
echo "  no Deployments, ReplicaSets, Services, ConfigMaps, NetworkPolicies, PodDisruptionBudgets or pods of $set_name remain"
queues_left="$(list_queues)"
[[ -z "$queues_left" ]] || die "queues left under deletionPolicy Delete: $queues_left"
echo "  no queues named $queue_prefix* remain"

step "helm uninstall"
"$helm" --kube-context "$context" uninstall "$release" --namespace "$operator_ns" --wait --timeout "${timeout}s"
deadline=$((SECONDS + timeout))
while :; do
    left="$(k -n "$operator_ns" get deploy,rs,svc,cm,pods,sa -l "app.kubernetes.io/instance=$release" -o name)"
    [[ -z "$left" ]] && break
    ((SECONDS < deadline)) || die "left behind after helm uninstall: $left"
    sleep 2
done
echo "  no objects of release $release remain in $operator_ns"
rm -rf "$workdir"

step "end-to-end run passed"
