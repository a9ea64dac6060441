# shellcheck shell=bash
# The shard autoscaler on the real cluster, with subscribers on the edge (which follows the
# routing table) at the same offered rate throughout: an even load over every room; the load
# moved to one hot room, which the operator gives a shard of its own from the rates it reads off
# the shards, within a bounded time; the end-to-end p99 on the new shards against the even one;
# then a trickle while the set goes back to its minimum after the cooldown. Every run is checked
# for loss, duplicates and reordering. Sourced by scripts/e2e.sh after the reshard to two shards.

# The shards the autoscaler wants, as its status lists them: 1-10,11-20.
assignment() {
    k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.autoscaling.assignment}' |
        tr -d '[]"'
}

# Waits up to $2 s for the assignment $1; prints the seconds it took.
await_assignment() {
    local want="$1" limit="$2" started=$SECONDS
    until [[ "$(assignment)" == "$want" ]]; do
        ((SECONDS - started < limit)) ||
            die "no assignment $want after ${limit}s: $(assignment); $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.autoscaling.reason}')"
        sleep 1
    done
    echo $((SECONDS - started))
}

# The end-to-end p99 (ms) of loadgen Job $1's report.
e2e_p99() {
    awk '$1 == "end" && $2 == "to" && $3 == "end" { for (i = 4; i < NF; i++) if ($i == "p99") { print $(i + 1); exit } }' \
        "$workdir/$1.log"
}

# Fails unless an edge resumed on a new shard that could not vouch for the gap.
assert_no_edge_gaps() {
    local gaps
    gaps="$(pods_metric "$producers" chatflow_edge_upstream_gaps_total)"
    [[ "$(tail -n 1 <<<"$gaps")" == "total 0" ]] || { echo "$gaps"; die "edges resumed on the new shards without recovery"; }
}

hot="$E2E_HOT_ROOM-$E2E_HOT_ROOM"
half=$(((room_count + 1) / 2))
even="1-$half,$((half + 1))-$room_count"
before_hot="1-$((E2E_HOT_ROOM - 1))"
after_hot="$((E2E_HOT_ROOM + 1))-$room_count"
rate="$E2E_AUTOSCALE_RATE"

step "shard autoscaling on: 2 to 4 shards, $E2E_AUTOSCALE_TARGET msg/s a shard, cooldown ${E2E_AUTOSCALE_COOLDOWN}s"
[[ "$(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.shardCount}')" == 2 ]] ||
    die "the autoscaling step starts from the reshard to two shards"
k -n "$set_ns" patch crs "$set_name" --type merge -p "{\"spec\":{\"consumer\":{\"autoscaling\":{
    \"minShards\":2,\"maxShards\":4,\"targetMessagesPerSecondPerShard\":$E2E_AUTOSCALE_TARGET,
    \"scaleUpIntervalSeconds\":30,\"scaleDownCooldownSeconds\":$E2E_AUTOSCALE_COOLDOWN}}}}"
# Its minimum spread evenly is the two shards already there: nothing moves.
await_assignment "$even" 60 >/dev/null
echo "  assignment $(assignment): $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.autoscaling.reason}')"

subscribe_via=edge subscribers_per_room="$E2E_EDGE_SUBSCRIBERS_PER_ROOM"
step "even load: $rate msg/s over rooms $E2E_ROOMS for 40 s"
start_loadgen chatflow-loadgen-e2e-even $((rate * 40)) --rate "$rate" --drain-timeout-secs 60
assert_loadgen_clean chatflow-loadgen-e2e-even
even_p99="$(e2e_p99 chatflow-loadgen-e2e-even)"
[[ -n "$even_p99" ]] || die "no end-to-end p99 in the even run's report"
[[ "$(assignment)" == "$even" ]] || die "the even load moved the shards: $(assignment)"
echo "  end-to-end p99 $even_p99 ms; shards still $(assignment)"

step "the load moves to room $E2E_HOT_ROOM ($rate msg/s for 90 s): the room gets a shard of its own, nothing lost across the move"
load_rooms="$hot"
start_loadgen chatflow-loadgen-e2e-hot $((rate * 90)) --rate "$rate" --drain-timeout-secs 180
wait_loadgen_pod chatflow-loadgen-e2e-hot
isolated_in="$(await_assignment "$before_hot,$hot,$after_hot" "$E2E_ISOLATE_WITHIN")"
echo "  room $E2E_HOT_ROOM on a shard of its own ${isolated_in} s after the hot load's pod was Ready: $(assignment)"
k -n "$set_ns" get events --field-selector reason=ShardsScaled -o jsonpath='{range .items[*]}{.note}{.message}{"\n"}{end}' |
    tail -n 1 | sed 's/^/  ShardsScaled: /'
wait_ready 3
assert_loadgen_clean chatflow-loadgen-e2e-hot
assert_no_edge_gaps
grep -E '^  (throughput|end to end|delivery) ' "$workdir/chatflow-loadgen-e2e-hot.log" || true

step "after the move: $rate msg/s to room $E2E_HOT_ROOM for 40 s, end-to-end p99 within 1.5x the even load's"
start_loadgen chatflow-loadgen-e2e-hot-placed $((rate * 40)) --rate "$rate" --drain-timeout-secs 60
assert_loadgen_clean chatflow-loadgen-e2e-hot-placed
placed_p99="$(e2e_p99 chatflow-loadgen-e2e-hot-placed)"
[[ "$(assignment)" == "$before_hot,$hot,$after_hot" ]] || die "the hot room's shard moved again: $(assignment)"
python3 - "$placed_p99" "$even_p99" <<'EOF' || die "end-to-end p99 after the move is not within 1.5x the even load's"
import sys
placed, even = float(sys.argv[1]), float(sys.argv[2])
print(f"  end-to-end p99 {placed:.1f} ms on the hot room's own shard, {even:.1f} ms under even load: {placed / even:.2f}x")
sys.exit(0 if placed <= 1.5 * even else 1)
EOF

step "load stopped: a trickle over every room while the set goes back to its minimum after the ${E2E_AUTOSCALE_COOLDOWN}s cooldown, nothing lost; the trickle's connections add a producer pod"
load_rooms="$E2E_ROOMS"
trickle_secs=$((E2E_AUTOSCALE_COOLDOWN + 120))
start_loadgen chatflow-loadgen-e2e-trickle $((E2E_TRICKLE_RATE * trickle_secs)) --rate "$E2E_TRICKLE_RATE" \
    --drain-timeout-secs 180
wait_loadgen_pod chatflow-loadgen-e2e-trickle
# Its senders and edge subscribers are 2 + E2E_EDGE_SUBSCRIBERS_PER_ROOM connections a room: past
# what two producer pods are sized for.
producers_before="$(k -n "$set_ns" get deploy "$set_name-producer" -o jsonpath='{.spec.replicas}')"
k -n "$set_ns" patch crs "$set_name" --type merge -p "{\"spec\":{\"producer\":{\"autoscaling\":{
    \"minReplicas\":$producers_before,\"maxReplicas\":$((producers_before + 1)),
    \"targetConnectionsPerPod\":$E2E_CONNECTIONS_TARGET,\"scaleDownCooldownSeconds\":30}}}}"
k -n "$set_ns" wait "deploy/$set_name-producer" --timeout=120s \
    --for=jsonpath='{.status.readyReplicas}'=$((producers_before + 1)) ||
    die "no producer pod added: $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.producer.autoscaling.reason}')"
echo "  producers $producers_before -> $((producers_before + 1)): $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.producer.autoscaling.reason}')"
back_in="$(await_assignment "$even" $((E2E_AUTOSCALE_COOLDOWN + 90)))"
echo "  back to $(assignment) ${back_in} s after the trickle started: $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.autoscaling.reason}')"
wait_ready 2
assert_loadgen_clean chatflow-loadgen-e2e-trickle
assert_no_edge_gaps
subscribe_via=shards subscribers_per_room="$E2E_SUBSCRIBERS_PER_ROOM"

step "no load: the producer tier goes back to its minimum after its 30 s cooldown"
k -n "$set_ns" wait "crs/$set_name" --timeout=120s \
    --for=jsonpath='{.status.producer.autoscaling.replicas}'="$producers_before" ||
    die "the producers stayed up: $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.producer.autoscaling.reason}')"
k -n "$set_ns" rollout status "deploy/$set_name-producer" --timeout=120s
echo "  $(k -n "$set_ns" get crs "$set_name" -o jsonpath='{.status.producer.autoscaling.reason}')"
# Later steps count and probe every producer pod: the one taken away drains first.
deadline=$((SECONDS + timeout))
until (($(k -n "$set_ns" get pods -l "$producers" --no-headers 2>/dev/null | wc -l) == producers_before)); do
    ((SECONDS < deadline)) || die "the producer pod scaled away was still there after ${timeout}s"
    sleep 1
done
k -n "$set_ns" patch crs "$set_name" --type json -p '[{"op":"remove","path":"/spec/producer/autoscaling"}]'
