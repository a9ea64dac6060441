#!/usr/bin/env bash
# The user's path on a real Kubernetes cluster, every step asserted:
#
#   1. the four images are built from the Dockerfile (scripts/images.sh), tagged with this run's
#      number; `helm install` runs the operator from its image and one pod holds the Lease;
#   2. the example ChatRoomSet, pointed at LocalStack, becomes Ready through the pods' own probes,
#      and every pod runs the image ID built in this run;
#   3. loadgen runs as a Job from its image, through the Services: 0 lost, duplicated, reordered;
#      then again at a steady rate while a consumer shard's pod is deleted: its subscribers
#      reconnect and resume (?after=), and still nothing is lost, duplicated or reordered; and
#      once more while a producer pod is deleted, the producers roll to a new tag and the
#      operator's leader pod is deleted: senders resend what was unanswered, still clean; with
#      --current also a consumer container SIGKILLed (no duplicates or reordering after the
#      resume; loss reported), LocalStack frozen for 10 s (clean), and, with scripts/testenv.sh's
#      Prometheus, LocalStack cut off from the pods until the breaker alert goes pending (clean);
#   4. a reshard under load: the removed shards' pods are gone before any new shard's pod exists,
#      and a second loadgen run is clean;
#   5. with scripts/testenv.sh's Prometheus (CHATFLOW_PROMETHEUS), every panel of the Grafana
#      dashboard and every alert rule is evaluated over this run's scrapes: none without data
#      (`loadgen dashboard check`), and the panels are drawn (E2E_DASHBOARD_SVG keeps the picture);
#   6. `kubectl delete crs` and `helm uninstall` leave no Deployments, Services, ConfigMaps or pods
#      behind, and deletionPolicy Delete leaves no queues.
#
#     scripts/e2e.sh --kind      # creates a kind cluster, loads the images into it and runs
#                                # LocalStack in it (examples/localstack.yaml)
#     scripts/e2e.sh --current   # the current kubectl context, whose nodes share this machine's
#                                # Docker (scripts/test runs it on the cluster of scripts/testenv.sh)
#
# Only cluster creation, image loading and where LocalStack runs differ between the two.
# Any E2E_* variable overrides scripts/e2e.env. Other settings (environment):
#   KIND_CLUSTER, KEEP_CLUSTER=1   kind cluster name (default chatflow-e2e); keep it afterwards
#   E2E_LOCAL_BASE=1               build from local base images (scripts/images.sh --local-base)
#   E2E_POD_AWS_ENDPOINT           --current: LocalStack as pods reach it (default
#                                  $CHATFLOW_POD_AWS_ENDPOINT from scripts/testenv.sh)
#   E2E_HOST_AWS_ENDPOINT          --current: LocalStack as this script reaches it (default
#                                  $AWS_ENDPOINT_URL)
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
    E2E_FAULT_RATE E2E_PRODUCER_FAULT_MESSAGES; do
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
# shellcheck source=scripts/testenv.sh
source scripts/testenv.sh
helm="$(chatflow_helm_install)"
docker_cmd="${CHATFLOW_DOCKER:-docker}"

if [[ "$mode" == --kind ]]; then
    cluster="${KIND_CLUSTER:-chatflow-e2e}"
    context="kind-$cluster"
    pod_aws_endpoint=http://localstack.localstack.svc.cluster.local:4566
    command -v kind >/dev/null 2>&1 || die "kind not found on PATH"
else
    context="$(kubectl config current-context)" || die "no current kubectl context"
    pod_aws_endpoint="${E2E_POD_AWS_ENDPOINT:-${CHATFLOW_POD_AWS_ENDPOINT:-}}"
    host_aws_endpoint="${E2E_HOST_AWS_ENDPOINT:-${AWS_ENDPOINT_URL:-}}"
    [[ -n "$pod_aws_endpoint" && -n "$host_aws_endpoint" ]] ||
        die "--current needs LocalStack: run inside scripts/testenv.sh, or set E2E_POD_AWS_ENDPOINT and E2E_HOST_AWS_ENDPOINT"
fi
"$docker_cmd" info >/dev/null 2>&1 || die "docker is installed but the daemon does not answer"
# scripts/testenv.sh's Prometheus, scraping this cluster's pods: the monitoring steps need it.
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
fi

# Prints the queue URLs with the example's prefix that LocalStack holds, one per line.
list_queues() {
    if [[ "$mode" == --kind ]]; then
        k -n localstack exec deploy/localstack -- \
            awslocal sqs list-queues --queue-name-prefix "$queue_prefix" --output text |
            awk '$1 == "QUEUEURLS" {print $2}'
    else
        # The query API answers unsigned requests with XML; one URL per element, all on one line.
        curl -fsS "$host_aws_endpoint/?Action=ListQueues&QueueNamePrefix=$queue_prefix" |
            grep -o '<QueueUrl>[^<]*</QueueUrl>' | sed 's/<[^>]*>//g' || true
    fi
}

# Prints the messages the example's queues hold (visible and in flight), summed.
backlog() {
    local url total=0 n
    while read -r url; do
        [[ -n "$url" ]] || continue
        if [[ "$mode" == --kind ]]; then
            n="$(k -n localstack exec deploy/localstack -- awslocal sqs get-queue-attributes \
                --queue-url "$url" --attribute-names ApproximateNumberOfMessages \
                ApproximateNumberOfMessagesNotVisible --output text |
                awk '{s += $2} END {print s + 0}')" || return 1
        else
            n="$(curl -fsS "$url?Action=GetQueueAttributes&AttributeName.1=ApproximateNumberOfMessages&AttributeName.2=ApproximateNumberOfMessagesNotVisible" |
                grep -o '<Value>[0-9]*</Value>' | sed 's/<[^>]*>//g' | awk '{s += $1} END {print s + 0}')" ||
                return 1
        fi
        total=$((total + n))
    done < <(list_queues)
    echo "$total"
}

# Asserts every pod matching SELECTOR in NAMESPACE (with phase PHASE, when given) runs IMAGE
# with the ID built in this run.
assert_image_ids() {
    local ns="$1" selector="$2" image="$3" phase="${4:-}" want="${image_id[$3]}" name running id count=0
    local -a filter=()
    [[ -z "$phase" ]] || filter=(--field-selector="status.phase=$phase")
    while read -r name deleting running id; do
        [[ -n "$name" ]] || continue
        # A pod of an earlier rollout still terminating reports phase Running too.
        [[ "$deleting" == - ]] || continue
        # The ID is what counts: dockershim names an image by any of its tags, and an unchanged
        # build gives this run's tag to the ID an earlier run built. It reports the ID as
        # docker://sha256:ID or docker-pullable://NAME@sha256:ID.
        [[ "$id" == *"$want"* || "$id" == *"${want#sha256:}"* ]] ||
            die "pod $ns/$name runs image ID $id, not $want built in this run"
        echo "  pod $ns/$name: $image ($running) $id"
        count=$((count + 1))
    done < <(k -n "$ns" get pods -l "$selector" "${filter[@]}" -o \
        go-template='{{range .items}}{{.metadata.name}} {{or .metadata.deletionTimestamp "-"}} {{(index .status.containerStatuses 0).image}} {{(index .status.containerStatuses 0).imageID}}{{"\n"}}{{end}}')
    [[ $count -gt 0 ]] || die "no running pods in $ns match $selector"
}

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
        sleep 2
    done
    echo "crs/$set_name not Ready with $shards shards after ${timeout}s (generation, observed, Ready, shards: $state)" >&2
    return 1
}

# Prints the ingest URL template and then the --subscribe-url value, one per line, from the
# set's routing ConfigMap.
routing() {
    k -n "$set_ns" get configmap "$set_name-routing" -o jsonpath='{.data.routing\.json}' |
        python3 -c 'import json, sys
table = json.load(sys.stdin)
print(table["ingest"])
print(",".join(s["rooms"] + "=" + s["subscribe"] for s in table["shards"]))'
}

# Starts loadgen as Job $1 with $2 messages against the current routing table; further
# arguments are passed to `loadgen run`.
start_loadgen() {
    local job="$1" messages="$2" ingest subscribe
    ingest="" subscribe=""
    { read -r ingest && read -r subscribe; } < <(routing) || true
    [[ -n "$ingest" && -n "$subscribe" ]] || die "no routing table for $set_name"
    echo "job/$job: $messages messages; ingest $ingest; subscribe $subscribe"
    k -n "$set_ns" delete job "$job" --ignore-not-found --wait=true
    # examples/loadgen-job.yaml is the user's Job: run it with this run's image, size and routing.
    python3 - examples/loadgen-job.yaml "$job" "$messages" "$ingest" "$subscribe" \
        "chatflow/loadgen:$tag" "$E2E_ROOMS" "$E2E_CONNECTIONS_PER_ROOM" "$E2E_SUBSCRIBERS_PER_ROOM" \
        "${@:3}" <<'EOF' | k -n "$set_ns" apply -f -
import re, sys
path, job, messages, ingest, subscribe, image, rooms, conns, subs = sys.argv[1:10]
extra = sys.argv[10:]
text = open(path).read()
values = {"--ingest-url": ingest, "--subscribe-url": subscribe, "--rooms": rooms,
          "--messages": messages, "--connections-per-room": conns, "--subscribers-per-room": subs}
def arg(match):
    flag = match.group(2)
    return match.group(0) if flag not in values else f'{match.group(1)}{flag}\n{match.group(3)}"{values[flag]}"\n'
text = re.sub(r'^( *- )(--[a-z-]+)\n( *- ).*\n', arg, text, flags=re.M)
# A short warm-up: the cluster is already warm after the first run, and a long one would only
# queue more for the reshard to move.
text = re.sub(r'^( *- )--out\n', lambda m: f'{m.group(1)}--warmup-connections\n{m.group(1)}"20"\n'
              f'{m.group(1)}--warmup-messages\n{m.group(1)}"50"\n'
              + ''.join(f'{m.group(1)}"{a}"\n' for a in extra) + m.group(0), text, count=1, flags=re.M)
text = re.sub(r'^(  name: ).*$', r'\g<1>' + job, text, count=1, flags=re.M)
text = re.sub(r'^( *image: ).*$', r'\g<1>' + image, text, count=1, flags=re.M)
print(text)
EOF
}

# Waits for Job $1 to finish; prints its log; returns 0 when it succeeded.
finish_loadgen() {
    local job="$1" deadline=$((SECONDS + timeout)) succeeded failed
    # kubectl wait on condition=complete would sit out the whole timeout on a failed Job.
    while :; do
        IFS='|' read -r succeeded failed <<<"$(k -n "$set_ns" get job "$job" -o jsonpath='{.status.succeeded}|{.status.failed}' || true)" || true
        [[ "${succeeded:-0}" -ge 1 || "${failed:-0}" -ge 1 ]] && break
        ((SECONDS < deadline)) || {
            k -n "$set_ns" logs "job/$job" --tail=50 || true
            die "job/$job did not finish within ${timeout}s"
        }
        sleep 3
    done
    k -n "$set_ns" logs "job/$job" | tee "$workdir/$job.log"
    [[ "${succeeded:-0}" -ge 1 ]]
}

# Waits for Job $1 to finish and fails unless delivery was clean.
assert_loadgen_clean() {
    local job="$1"
    finish_loadgen "$job" ||
        die "job/$job failed (loadgen exits 3 when delivery is not clean, 1 on error)"
    assert_image_ids "$set_ns" "job-name=$job" "chatflow/loadgen:$tag"
    grep -Eq 'lost 0, duplicated 0, out of order 0(,|$)' "$workdir/$job.log" ||
        die "job/$job: the report does not say 'lost 0, duplicated 0, out of order 0'"
    echo "job/$job: delivery clean"
}

# Runs loadgen as Job $1 with $2 messages and fails unless delivery was clean.
run_loadgen() {
    start_loadgen "$1" "$2"
    assert_loadgen_clean "$1"
}

# Starts loadgen as Job $1 with $2 messages at the fault rate, open loop, patient with outages
# (further arguments go to `loadgen run`), and returns once it has been sending for $FAULT_SETTLE s.
FAULT_SETTLE=6
start_steady_load() {
    local job="$1" messages="$2"
    shift 2
    start_loadgen "$job" "$messages" --rate "$E2E_FAULT_RATE" --drain-timeout-secs 60 "$@"
    wait_loadgen_pod "$job"
    sleep "$FAULT_SETTLE"
}

# The first pod matching label selector $1 in the set's namespace.
first_pod() {
    k -n "$set_ns" get pods -l "$1" -o jsonpath='{.items[0].metadata.name}'
}

# Waits until Job $1's pod is Ready (sending).
wait_loadgen_pod() {
    local job="$1" deadline=$((SECONDS + timeout))
    # kubectl wait fails at once while no pod matches: wait for the Job's pod to exist first.
    until [[ -n "$(k -n "$set_ns" get pods -l "job-name=$job" -o name)" ]]; do
        ((SECONDS < deadline)) || die "job/$job has no pod after ${timeout}s"
        sleep 1
    done
    k -n "$set_ns" wait pod -l "job-name=$job" --for=condition=Ready --timeout="${timeout}s"
}

workdir="$(mktemp -d "${TMPDIR:-/tmp}/chatflow-e2e.XXXXXX")"

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
[[ "$policy" == "Ingress:8080/TCP 8081/TCP 9090/TCP " ]] ||
    die "networkpolicy/$set_name-workloads says '$policy'"
echo "  networkpolicy/$set_name-workloads: $policy"

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

consumers="app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=consumer"
step "a consumer shard's pod deleted under load ($E2E_FAULT_RATE msg/s): subscribers resume, nothing lost"
fault_job=chatflow-loadgen-e2e-shard-pod-deleted
start_steady_load "$fault_job" "$E2E_FAULT_MESSAGES"
victim="$(first_pod "$consumers")"
echo "  deleting pod/$victim"
k -n "$set_ns" delete pod "$victim" --wait=false
assert_loadgen_clean "$fault_job"
grep -E '^ *resumes ' "$workdir/$fault_job.log" ||
    die "job/$fault_job: no subscriber reconnected, so the deleted pod served nobody"

# The faults below act on this machine's Docker and LocalStack process: --current only.
if [[ "$mode" == --current ]]; then
    step "a consumer container SIGKILLed under load ($E2E_FAULT_RATE msg/s): no drain, no duplicates after the resume"
    fault_job=chatflow-loadgen-e2e-shard-killed
    start_steady_load "$fault_job" "$E2E_FAULT_MESSAGES"
    victim="$(first_pod "$consumers")"
    container="$("$docker_cmd" ps -q --filter "label=io.kubernetes.pod.name=$victim" \
        --filter label=io.kubernetes.container.name=consumer)"
    [[ -n "$container" ]] || die "no Docker container for the consumer of pod/$victim"
    echo "  docker kill --signal KILL $container (pod/$victim)"
    "$docker_cmd" kill --signal KILL "$container" >/dev/null
    # Delivery is reported, and duplicates and reordering asserted: a container killed without a
    # drain may have deleted messages still in its socket buffers (README, delivery contract).
    finish_loadgen "$fault_job" >/dev/null || true
    grep -E '^ *(delivery|resumes|end to end) ' "$workdir/$fault_job.log" ||
        die "job/$fault_job: no delivery report"
    grep -Eq 'duplicated 0, out of order 0(,|$)' "$workdir/$fault_job.log" ||
        die "job/$fault_job: duplicates or reordering after a SIGKILL"

    step "LocalStack frozen for 10 s under load ($E2E_FAULT_RATE msg/s): senders retry, nothing acknowledged is lost"
    localstack_sid="$(cat "$(_chatflow_cache)/run/localstack/pid")"
    [[ -n "$localstack_sid" ]] || die "no LocalStack process group to freeze"
    fault_job=chatflow-loadgen-e2e-queue-frozen
    # Retries outlast the freeze: what is still refused after them is an error, not a loss.
    start_steady_load "$fault_job" "$E2E_FAULT_MESSAGES" --max-retries 12
    echo "  kill -STOP -$localstack_sid; sleep 10; kill -CONT -$localstack_sid"
    kill -STOP -- "-$localstack_sid"
    sleep 10
    kill -CONT -- "-$localstack_sid"
    assert_loadgen_clean "$fault_job"
    grep -E '^ *(errors|retries|ack latency|end to end) ' "$workdir/$fault_job.log" || true

    if [[ -n "$prometheus" ]]; then
        step "LocalStack cut off from the pods under load ($E2E_FAULT_RATE msg/s): the breaker opens, ChatFlowBreakerOpen goes pending, and nothing acknowledged is lost"
        fault_job=chatflow-loadgen-e2e-queue-cut
        # The freeze above may have opened a breaker: the alert must be seen to come from the cut.
        host_loadgen dashboard wait-alert --prometheus "$prometheus" --name ChatFlowBreakerOpen \
            --gone --timeout 120 || die "ChatFlowBreakerOpen was still active before the cut"
        start_steady_load "$fault_job" "$E2E_FAULT_MESSAGES" --max-retries 30
        # A reset for every packet, established connections included: the SDK's pooled
        # connections fail at once, as they would when the queue service's address goes away.
        queue_cut=(INPUT -s "$CHATFLOW_POD_CIDR" -p tcp --dport "${pod_aws_endpoint##*:}"
            -j REJECT --reject-with tcp-reset)
        echo "  iptables -I ${queue_cut[*]}"
        iptables -I "${queue_cut[@]}"
        cut_started=$SECONDS
        host_loadgen dashboard wait-alert --prometheus "$prometheus" --name ChatFlowBreakerOpen \
            --timeout 120 || die "the breaker alert did not go pending while LocalStack was cut off"
        heal_queue_cut
        echo "  cut healed after $((SECONDS - cut_started)) s"
        assert_loadgen_clean "$fault_job"
        grep -E '^ *(errors|retries|ack latency|end to end) ' "$workdir/$fault_job.log" || true
    fi
else
    echo "SIGKILL and LocalStack-freeze faults run with --current only (this machine's Docker)"
fi

# Generation of every Deployment of the set, to compare before and after a change of leader.
generations() {
    k -n "$set_ns" get deploy -l "app.kubernetes.io/instance=$set_name" \
        -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.generation} {end}'
}

producers="app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=producer"
step "producer and operator faults under load ($E2E_FAULT_RATE msg/s): a producer pod deleted, the producers rolled to a new tag, the operator's leader deleted"
fault_job=chatflow-loadgen-e2e-producer-faults
start_steady_load "$fault_job" "$E2E_PRODUCER_FAULT_MESSAGES"
victim="$(first_pod "$producers")"
echo "  deleting pod/$victim, one of $(k -n "$set_ns" get pods -l "$producers" -o name | wc -l) producers"
k -n "$set_ns" delete pod "$victim" --wait=false
sleep 5
# The same build under another tag: the producers roll as they would for a release.
roll_image="chatflow/producer:$tag-rolled"
"$docker_cmd" tag "chatflow/producer:$tag" "$roll_image"
[[ "$mode" != --kind ]] || kind load docker-image "$roll_image" --name "$cluster"
echo "  rolling the producers to $roll_image"
roll_started=$SECONDS
k -n "$set_ns" patch crs "$set_name" --type merge -p "{\"spec\":{\"producer\":{\"image\":\"$roll_image\"}}}"
until [[ "$(k -n "$set_ns" get deploy "$set_name-producer" -o jsonpath='{.spec.template.spec.containers[0].image}')" == "$roll_image" ]]; do
    ((SECONDS - roll_started < timeout)) || die "the operator did not roll $set_name-producer to $roll_image"
    sleep 1
done
k -n "$set_ns" rollout status "deploy/$set_name-producer" --timeout="${timeout}s"
echo "  producers rolled in $((SECONDS - roll_started)) s"
before="$(generations)"
leader="$(k -n "$operator_ns" get lease chatflow-operator -o jsonpath='{.spec.holderIdentity}')"
echo "  deleting the operator's leader pod/$leader"
takeover_started=$SECONDS
k -n "$operator_ns" delete pod "$leader" --wait=false
new_leader=""
until [[ -n "$new_leader" && "$new_leader" != "$leader" ]]; do
    ((SECONDS - takeover_started < timeout)) || die "no operator pod took the lease over from $leader"
    sleep 1
    new_leader="$(k -n "$operator_ns" get lease chatflow-operator -o jsonpath='{.spec.holderIdentity}')"
done
echo "  pod/$new_leader leads after $((SECONDS - takeover_started)) s"
assert_loadgen_clean "$fault_job"
assert_image_ids "$set_ns" "$producers" "chatflow/producer:$tag" Running
# The new leader has reconciled the set by now (its first pass runs at start); nothing it wrote
# may have changed a Deployment's spec.
after="$(generations)"
[[ "$before" == "$after" ]] ||
    die "the new leader changed Deployments: before '$before', after '$after'"
echo "  the new leader left every Deployment as it was: $after"

step "reshard under load: roomsPerShard $per_shard -> $E2E_SCALED_ROOMS_PER_SHARD"
old_shards="$(k -n "$set_ns" get deploy -l "$consumers" -o jsonpath='{.items[*].metadata.name}')"
# One watch gives every pod event in the API server's own order, so "deleted before created"
# needs no clocks.
k -n "$set_ns" get pods -l "$consumers" --watch --output-watch-events -o \
    jsonpath='{.type} {.object.metadata.labels.chatflow\.dev/workload} {.object.metadata.name}{"\n"}' \
    >"$workdir/pod-events" 2>"$workdir/pod-events.err" &
watch_pid=$!
start_loadgen chatflow-loadgen-e2e-under-load "$E2E_LOAD_MESSAGES"
wait_loadgen_pod chatflow-loadgen-e2e-under-load
sleep 3
k -n "$set_ns" patch crs "$set_name" --type merge \
    -p "{\"spec\":{\"consumer\":{\"roomsPerShard\":$E2E_SCALED_ROOMS_PER_SHARD}}}"
scaled_shards=$(((room_count + E2E_SCALED_ROOMS_PER_SHARD - 1) / E2E_SCALED_ROOMS_PER_SHARD))
wait_ready "$scaled_shards"
new_shards="$(k -n "$set_ns" get deploy -l "$consumers" -o jsonpath='{.items[*].metadata.name}')"
echo "  shards before: $old_shards"
echo "  shards after:  $new_shards"
# Senders of the load run were acked throughout; its subscribers were attached to shards that
# went away, so its delivery figures are reported, not asserted.
if finish_loadgen chatflow-loadgen-e2e-under-load >/dev/null; then
    echo "job/chatflow-loadgen-e2e-under-load: delivery clean across the reshard"
else
    echo "job/chatflow-loadgen-e2e-under-load: subscribers lost their shard (reported, not asserted):"
fi
grep -E 'lost [0-9]+, duplicated' "$workdir/chatflow-loadgen-e2e-under-load.log" || true
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
    left="$(k -n "$set_ns" get deploy,rs,svc,cm,networkpolicy,pods -l "$owned" -o name)"
    [[ -z "$left" ]] && break
    ((SECONDS < deadline)) || die "left behind after deleting the set: $left"
    sleep 2
done
echo "  no Deployments, ReplicaSets, Services, ConfigMaps, NetworkPolicies or pods of $set_name remain"
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
