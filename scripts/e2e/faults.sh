# shellcheck shell=bash
# The end-to-end run's faults under a steady load: two consumer pods evicted; with --current a
# consumer container SIGKILLed, LocalStack frozen, and LocalStack cut off until the breaker alert
# is pending; then a producer pod evicted, the producers rolled and the operator's leader deleted.
# Each load run is checked for loss, duplicates and reordering. Sourced by scripts/e2e.sh.

step "two consumer shards' pods evicted under load ($E2E_FAULT_RATE msg/s), as a node drain does: the budget lets one go at a time, subscribers resume on the new pods from the history store, nothing lost"
shard_count="$(k -n "$set_ns" get deploy -l "$consumers" -o name | wc -l)"
# Earlier steps restarted shards: the budget counts them all Ready again before a drain starts.
budget_due=$((SECONDS + timeout))
until read -r max_unavailable expected_pods allowed unhealthy_policy < <(k -n "$set_ns" get pdb \
    "$set_name-shards" -o jsonpath='{.spec.maxUnavailable} {.status.expectedPods} {.status.disruptionsAllowed} {.spec.unhealthyPodEvictionPolicy}{"\n"}') &&
    [[ "$expected_pods $allowed" == "$shard_count 1" ]]; do
    ((SECONDS < budget_due)) ||
        die "pdb/$set_name-shards: expectedPods ${expected_pods:-?} and disruptionsAllowed ${allowed:-?} for $shard_count shards"
    sleep 1
done
[[ "$max_unavailable" == 1 ]] || die "pdb/$set_name-shards: maxUnavailable $max_unavailable"
# Kubernetes 1.27 on lets a pod that is not Ready go whatever the budget says.
server_minor="$(k get --raw /version | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')"
((server_minor < 27)) || [[ "$unhealthy_policy" == AlwaysAllow ]] ||
    die "pdb/$set_name-shards: unhealthyPodEvictionPolicy '$unhealthy_policy' on 1.$server_minor"
echo "  pdb/$set_name-shards: maxUnavailable 1 over $expected_pods shards${unhealthy_policy:+, unhealthy pods: $unhealthy_policy}"
fault_job=chatflow-loadgen-e2e-shards-evicted
start_steady_load "$fault_job" "$E2E_DRAIN_MESSAGES"
mapfile -t victims < <(first_pods "$consumers" 2)
((${#victims[@]} == 2)) || die "fewer than two consumer pods that are not being deleted"
echo "  evicting pod/${victims[0]}"
evict "${victims[0]}" || die "the budget refused the first eviction with every shard Ready"
# The first shard's replacement is not Ready yet: a drain must wait for it.
! evict "${victims[1]}" || die "the budget let a second shard go while the first was away"
echo "  pod/${victims[1]} refused while pod/${victims[0]}'s replacement starts"
evict_when_allowed "${victims[1]}"
assert_loadgen_clean "$fault_job"
assert_resumes_recovered "$fault_job"

# The faults below act on this machine's Docker and LocalStack process: --current only.
if [[ "$mode" == --current ]]; then
    step "a consumer container SIGKILLed under load ($E2E_FAULT_RATE msg/s): no drain, and the resume from the history store loses nothing"
    fault_job=chatflow-loadgen-e2e-shard-killed
    start_steady_load "$fault_job" "$E2E_FAULT_MESSAGES"
    victim="$(first_pod "$consumers")"
    [[ -n "$victim" ]] || die "no consumer pod that is not being deleted"
    container="" container_due=$((SECONDS + 30))
    until [[ -n "$container" ]] || ((SECONDS >= container_due)); do
        container="$("$docker_cmd" ps -q --filter "label=io.kubernetes.pod.name=$victim" \
            --filter label=io.kubernetes.container.name=consumer)"
        [[ -n "$container" ]] || sleep 1
    done
    [[ -n "$container" ]] || die "no Docker container for the consumer of pod/$victim"
    echo "  docker kill --signal KILL $container (pod/$victim)"
    "$docker_cmd" kill --signal KILL "$container" >/dev/null
    # A batch is deleted only once the store holds it, so what the killed container had in its
    # socket buffers is replayed from the store on the next shard.
    assert_loadgen_clean "$fault_job"
    grep -E '^ *(delivery|end to end) ' "$workdir/$fault_job.log" || true
    assert_resumes_recovered "$fault_job"

    step "Redis frozen for 10 s under load ($E2E_FAULT_RATE msg/s): rooms pause without deleting, nothing acknowledged is lost"
    redis_sid="${CHATFLOW_REDIS_PID:-}"
    [[ -n "$redis_sid" ]] || die "no Redis process group to freeze"
    fault_job=chatflow-loadgen-e2e-store-frozen
    start_steady_load "$fault_job" "$E2E_FAULT_MESSAGES"
    echo "  kill -STOP -$redis_sid; sleep 10; kill -CONT -$redis_sid"
    # The thaw is set off first, so Redis is thawed even if this script dies meanwhile.
    (sleep 10 && kill -CONT -- "-$redis_sid") &
    thaw_pid=$!
    kill -STOP -- "-$redis_sid"
    wait "$thaw_pid"
    assert_loadgen_clean "$fault_job"
    grep -E '^ *(end to end|delivery) ' "$workdir/$fault_job.log" || true
    echo "  failed store calls while frozen (chatflow_consumer_history_store_errors_total):"
    failed="$(pods_metric "$consumers" 'chatflow_consumer_history_store_errors_total{op="append"}')"
    echo "$failed"
    [[ "$(tail -n 1 <<<"$failed")" != "total 0" ]] || die "no append failed while Redis was frozen"

    step "LocalStack frozen for 10 s under load ($E2E_FAULT_RATE msg/s): senders retry, nothing acknowledged is lost"
    # The test environment's LocalStack session (cargo xtask testenv run).
    localstack_sid="${CHATFLOW_LOCALSTACK_PID:-}"
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


step "producer and operator faults under load ($E2E_FAULT_RATE msg/s): a producer pod evicted, the producers rolled to a new tag, the operator's leader deleted"
fault_job=chatflow-loadgen-e2e-producer-faults
start_steady_load "$fault_job" "$E2E_PRODUCER_FAULT_MESSAGES"
victim="$(first_pod "$producers")"
echo "  evicting pod/$victim, one of $(k -n "$set_ns" get pods -l "$producers" -o name | wc -l) producers"
evict_when_allowed "$victim"
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
