# shellcheck shell=bash
# The end-to-end run's helpers: queues in LocalStack, image IDs, readiness, routing, and loadgen
# Jobs. Sourced by scripts/e2e.sh, whose settings and k() they use.

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

# Prints the ingest URL template, the --subscribe-url value for the shards and the edge's
# subscribe template, one per line, from the set's routing ConfigMap.
routing() {
    k -n "$set_ns" get configmap "$set_name-routing" -o jsonpath='{.data.routing\.json}' |
        python3 -c 'import json, sys
table = json.load(sys.stdin)
print(table["ingest"])
print(",".join(s["rooms"] + "=" + s["subscribe"] for s in table["shards"]))
print(table["edge"])'
}

# Where loadgen's subscribers connect: "shards" (each room's shard Service, from the routing
# table) or "edge" (the producer Service, whose pods relay every room).
subscribe_via=shards
subscribers_per_room="$E2E_SUBSCRIBERS_PER_ROOM"
# The rooms loadgen sends to (all of the set's unless a step narrows them).
load_rooms="$E2E_ROOMS"

# Starts loadgen as Job $1 with $2 messages against the current routing table; further
# arguments are passed to `loadgen run`.
start_loadgen() {
    local job="$1" messages="$2" ingest subscribe edge
    ingest="" subscribe="" edge=""
    { read -r ingest && read -r subscribe && read -r edge; } < <(routing) || true
    [[ -n "$ingest" && -n "$subscribe" && -n "$edge" ]] || die "no routing table for $set_name"
    [[ "$subscribe_via" == edge ]] && subscribe="$edge"
    echo "job/$job: $messages messages; ingest $ingest; subscribe $subscribe"
    k -n "$set_ns" delete job "$job" --ignore-not-found --wait=true
    # examples/loadgen-job.yaml is the user's Job: run it with this run's image, size and routing.
    python3 - examples/loadgen-job.yaml "$job" "$messages" "$ingest" "$subscribe" \
        "chatflow/loadgen:$tag" "$load_rooms" "$E2E_CONNECTIONS_PER_ROOM" "$subscribers_per_room" \
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

# Fails unless every resume of job $1's subscribers was answered recovered: true (with the history
# store, a resume on any shard after any restart is covered).
assert_resumes_recovered() {
    local job="$1" line
    line="$(grep -E '^ *resumes ' "$workdir/$job.log")" ||
        die "job/$job: no subscriber reconnected, so no resume was tested"
    echo "$line"
    [[ "$line" == *", 0 resumes the server could not fully cover"* ]] ||
        die "job/$job: some resumes were answered recovered: false"
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

# The first pod matching label selector $1 in the set's namespace that is not being deleted: a
# pod deleted by an earlier fault stays listed while it drains, with its container already gone.
first_pod() {
    first_pods "$1" 1
}

# The first $2 pods matching label selector $1 that are not being deleted, one per line.
first_pods() {
    k -n "$set_ns" get pods -l "$1" \
        -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' |
        awk -v n="$2" '$2 == "" && found < n { print $1; found++ }'
}

# IPs of the running pods matching label selector $1 that are not being deleted: a pod rolled
# away or deleted by an earlier step stays listed, and Running, while it drains its clients.
serving_ips() {
    k -n "$set_ns" get pods -l "$1" --field-selector=status.phase=Running \
        -o jsonpath='{range .items[*]}{.metadata.deletionTimestamp}{"|"}{.status.podIP}{"\n"}{end}' |
        awk -F'|' '$1 == "" && $2 != "" { print $2 }'
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

# Generation of every Deployment of the set, to compare before and after a change of leader.
generations() {
    k -n "$set_ns" get deploy -l "app.kubernetes.io/instance=$set_name" \
        -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.generation} {end}'
}

# Sums metric $2 (a series without labels) over the pods matching selector $1, one line per pod
# ("pod value") and then "total N".
pods_metric() {
    local selector="$1" metric="$2" pod ip deleting value total=0
    while read -r pod ip deleting; do
        # A pod that drains after an earlier step serves nobody new.
        [[ -z "$deleting" ]] || continue
        value="$(curl -fsS --max-time 5 "http://$ip:9090/metrics" |
            awk -v m="$metric" '$1 == m { print $2 }')"
        value="${value%.*}"
        echo "$pod ${value:-0}"
        total=$((total + ${value:-0}))
    done < <(k -n "$set_ns" get pods -l "$selector" --field-selector=status.phase=Running \
        -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}')
    echo "total $total"
}

# The policy API version the cluster serves: policy/v1 (1.22 on), else policy/v1beta1.
eviction_api() {
    if k api-versions | grep -qx policy/v1; then echo policy/v1; else echo policy/v1beta1; fi
}

# Asks the Eviction API (what a node drain calls) to evict pod $1 of the set. Returns 0 once it
# is accepted, 1 when the set's PodDisruptionBudget refuses it (429); anything else fails.
evict() {
    local pod="$1" out
    if out="$(k create --raw "/api/v1/namespaces/$set_ns/pods/$pod/eviction" -f - 2>&1 <<EVICTION
{"apiVersion": "$(eviction_api)", "kind": "Eviction", "metadata": {"name": "$pod", "namespace": "$set_ns"}}
EVICTION
)"; then
        return 0
    fi
    grep -q "disruption budget" <<<"$out" || die "evicting pod/$pod: $out"
    return 1
}

# Evicts pod $1 as a drain does: asks again every second while the budget refuses, for at most
# $timeout s. Prints how long the budget held it back.
evict_when_allowed() {
    local pod="$1" started=$SECONDS
    until evict "$pod"; do
        ((SECONDS - started < timeout)) || die "the disruption budget refused pod/$pod for ${timeout}s"
        sleep 1
    done
    if ((SECONDS == started)); then
        echo "  pod/$pod evicted at once"
    else
        echo "  pod/$pod evicted after the budget held it back for $((SECONDS - started)) s"
    fi
}

# An HS256 token for user $1 (named $2, if given) for room 1, signed with the set's secret as
# its identity provider would.
mint_token() {
    python3 - "$jwt_secret" "$1" "${2:-}" <<'PY'
import base64, hashlib, hmac, json, sys, time
part = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
claims = {"sub": sys.argv[2], "exp": int(time.time()) + 3600, "chatflow": {"publish": ["1"], "subscribe": ["1"]}}
if sys.argv[3]:
    claims["name"] = sys.argv[3]
body = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
sig = hmac.new(sys.argv[1].encode(), body.encode(), hashlib.sha256).digest()
print(body + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode())
PY
}

# Holds a subscriber WebSocket to room 1 on the pod at $1 with token $2 open until killed: a raw
# upgrade, then reads until the server closes. Run in the background, its $! is python's own.
hold_subscriber() {
    exec python3 - "$1" "$2" <<'PY'
import base64, os, socket, sys
host, token = sys.argv[1], sys.argv[2]
s = socket.create_connection((host, 8080), timeout=15)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /subscribe/1 HTTP/1.1\r\nHost: {host}:8080\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Authorization: Bearer {token}\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(f"closed before the upgrade: {head!r}")
    head += chunk
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit(f"upgrade refused: {head[:200]!r}")
s.settimeout(None)
while s.recv(65536):
    pass
PY
}

# Seconds until user $2 is (with $3 = 1) or is not (0) in room 1's roster as the pod at $1
# serves it, within $4 seconds; dies past them.
await_listed() {
    local ip="$1" user="$2" want="$3" within="$4" started=$SECONDS listed
    while :; do
        listed="$(curl -s -m 5 -H "Authorization: Bearer $room1_token" "http://$ip:8080/presence/1?limit=1000" |
            python3 -c 'import json, sys; print(int(any(m["userId"] == sys.argv[1] for m in json.load(sys.stdin)["members"])))' "$user" 2>/dev/null || echo x)"
        [[ "$listed" == "$want" ]] && break
        ((SECONDS - started < within)) || die "user $user listed=$listed (want $want) on $ip after ${within} s"
        sleep 0.5
    done
    echo $((SECONDS - started))
}

# Two producer pods: a subscriber on the first appears in the second's roster and leaves it when
# it disconnects, or when a backend disconnects it through the second pod's server API; then one
# whose pod's container is SIGKILLed (no goodbye) leaves by expiry
# (PRESENCE_TTL_SECS, 20 s, and a refresh interval). The kill needs this machine's Docker.
presence_check() {
    local ips pod_a ip_a ip_b user="presence-$tag" token holder took
    mapfile -t ips < <(k -n "$set_ns" get pods -l "app.kubernetes.io/instance=$set_name,app.kubernetes.io/component=producer" \
        -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}')
    ((${#ips[@]} >= 2)) || die "presence across pods needs two producer pods, found ${#ips[@]}"
    pod_a="${ips[0]% *}" ip_a="${ips[0]#* }" ip_b="${ips[1]#* }"
    token="$(mint_token "$user" "E2E $tag")"
    hold_subscriber "$ip_a" "$token" &
    holder=$!
    took="$(await_listed "$ip_b" "$user" 1 15)"
    echo "  $user subscribed on $ip_a: in $ip_b's roster after ${took} s"
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    took="$(await_listed "$ip_b" "$user" 0 15)"
    echo "  disconnected: out of $ip_b's roster after ${took} s"
    # A backend disconnects the user through the other pod's server API: the connection on the
    # first pod is closed by the server.
    hold_subscriber "$ip_a" "$token" &
    holder=$!
    await_listed "$ip_b" "$user" 1 15 >/dev/null
    local answer
    answer="$(curl -s -m 10 -X POST -H "Authorization: apikey $api_key" "http://$ip_b:8080/api/users/$user/disconnect" || true)"
    [[ "$answer" == *'"otherPodsTold":true'* ]] || die "the disconnect through $ip_b answered: $answer"
    local due=$((SECONDS + 15))
    while kill -0 "$holder" 2>/dev/null; do
        ((SECONDS < due)) || die "$user's connection on $ip_a was not closed within 15 s of the disconnect"
        sleep 0.5
    done
    wait "$holder" 2>/dev/null || true
    took="$(await_listed "$ip_b" "$user" 0 15)"
    echo "  disconnected through $ip_b's server API: the connection on $ip_a closed, out of the roster after ${took} s"
    [[ "$mode" == --current ]] || return 0
    hold_subscriber "$ip_a" "$token" &
    holder=$!
    await_listed "$ip_b" "$user" 1 15 >/dev/null
    local container
    container="$("$docker_cmd" ps -q --filter "label=io.kubernetes.pod.name=$pod_a" \
        --filter label=io.kubernetes.container.name=producer)"
    [[ -n "$container" ]] || die "no Docker container for the producer of pod/$pod_a"
    "$docker_cmd" kill --signal KILL "$container" >/dev/null
    took="$(await_listed "$ip_b" "$user" 0 40)"
    echo "  pod/$pod_a's container SIGKILLed: $user out of $ip_b's roster after ${took} s (expiry 20 s)"
    wait "$holder" 2>/dev/null || true
    k -n "$set_ns" wait --for=condition=Ready "pod/$pod_a" --timeout=180s >/dev/null ||
        die "pod/$pod_a did not come back after its container was killed"
}

# Publishes a notice into room 1 through the server API of the producer pod at $1, twice under
# one clientMessageId, and reads room 1's history back through that pod's edge with token $2:
# the notice is there once, with the id both answers gave. A token for room 1 only gets 403 on
# room 2's history, and a wrong key 401.
server_api_check() {
    local ip="$1" token="$2" body first second page due found=0
    body="{\"userId\":1,\"username\":\"backend\",\"message\":\"notice $tag\",\"timestamp\":\"2026-12-07T10:00:00Z\",\"messageType\":\"TEXT\",\"clientMessageId\":\"e2e-$tag\"}"
    api_post() {
        curl -s -m 10 -w '\n%{http_code}' -H "Authorization: apikey $1" \
            -H 'Content-Type: application/json' --data "$body" "http://$ip:8080/api/rooms/1/messages" || true
    }
    first="$(api_post "$api_key")"
    [[ "${first##*$'\n'}" == 200 ]] || die "the server API answered: $first"
    second="$(api_post "$api_key")"
    [[ "${second##*$'\n'}" == 200 ]] || die "the server API's retry answered: $second"
    local id
    id="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["messageId"])' "${first%$'\n'*}")"
    [[ "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["messageId"])' "${second%$'\n'*}")" == "$id" ]] ||
        die "a retry under the same clientMessageId got another messageId: $first / $second"
    [[ "$(api_post not-the-key-not-the-key | tail -n 1)" == 401 ]] || die "a wrong API key was not refused with 401"
    # A shard holds a room's first messages until its subscribers are back, or for its hold.
    due=$((SECONDS + 120))
    while ((SECONDS < due)); do
        page="$(curl -s -m 10 -H "Authorization: Bearer $token" "http://$ip:8080/history/1?limit=100" || true)"
        # On stdin: a page can be longer than one command-line argument may be.
        found="$(python3 -c 'import json, sys; print(sum(e["messageId"] == sys.argv[1] for e in json.load(sys.stdin)["events"]))' "$id" <<<"$page" 2>/dev/null || echo 0)"
        ((found == 0)) || break
        sleep 2
    done
    ((found == 1)) || die "room 1's newest 100 messages hold the notice $found times: ${page:0:2000}"
    local code
    code="$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "Authorization: Bearer $token" "http://$ip:8080/history/2" || true)"
    [[ "$code" == 403 ]] || die "a token for room 1 got HTTP $code on /history/2, not 403"
    echo "  message $id published twice, in room 1's history once; a wrong key 401, /history/2 403"
}
