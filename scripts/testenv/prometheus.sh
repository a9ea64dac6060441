# shellcheck shell=bash
# Prometheus from Debian's archive, scraping the cluster's pods the way a cluster's Prometheus
# does: pods found through the API server and kept by their prometheus.io/* annotations
# (scrape-sync.sh, since Debian's build has no kubernetes_sd). It evaluates the chart's alert
# rules. Sourced by scripts/testenv.sh.

CHATFLOW_PROMETHEUS_PORT="${CHATFLOW_PROMETHEUS_PORT:-9099}"

# Session id of the running Prometheus; empty when not running. Sourcing again keeps it.
: "${_CHATFLOW_PROMETHEUS_SID:=}"
: "${_CHATFLOW_SCRAPE_SYNC_SID:=}"

chatflow_prometheus_install() {
    _chatflow_ensure_commands prometheus:prometheus promtool:prometheus
}

# Starts Prometheus on 127.0.0.1:CHATFLOW_PROMETHEUS_PORT with rule file $1, scraping the pods of
# the cluster that KUBECONFIG names every 5 s, and exports CHATFLOW_PROMETHEUS (its URL).
chatflow_prometheus_start() {
    local rules="$1" cache rundir log port i
    cache="$(_chatflow_cache)"
    rundir="$cache/run/prometheus"
    log="$cache/logs/prometheus.log"
    port="$CHATFLOW_PROMETHEUS_PORT"
    if [[ -n "$_CHATFLOW_PROMETHEUS_SID" ]]; then
        _chatflow_log "Prometheus is already running (PID $_CHATFLOW_PROMETHEUS_SID)"
        return 0
    fi
    _chatflow_require_curl || return 1
    if [[ -z "${KUBECONFIG:-}" || ! -f "$rules" ]]; then
        _chatflow_log "Prometheus needs KUBECONFIG (the cluster) and a rule file (got '$rules')"
        return 1
    fi
    if _chatflow_port_in_use "$port" 127.0.0.1; then
        _chatflow_log "127.0.0.1:$port is in use; set CHATFLOW_PROMETHEUS_PORT to a free port"
        return 1
    fi
    # A fresh TSDB per run: figures of an earlier run would mix into this one's checks.
    rm -rf "$rundir"
    mkdir -p "$rundir/data" "$cache/logs"
    cp "$rules" "$rundir/alerts.yaml"
    promtool check rules "$rundir/alerts.yaml" >&2 || return 1
    cat >"$rundir/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $rundir/alerts.yaml
scrape_configs:
  - job_name: kubernetes-pods
    file_sd_configs:
      - files: [$rundir/targets.json]
YAML
    promtool check config "$rundir/prometheus.yml" >&2 || return 1
    echo '[]' >"$rundir/targets.json"
    _chatflow_install_traps
    _chatflow_spawn "$rundir/sync.pid" "$cache/logs/scrape-sync.log" \
        bash "$_CHATFLOW_TESTENV_DIR/kube-watch.sh" "$KUBECONFIG" pods \
        bash "$_CHATFLOW_TESTENV_DIR/scrape-sync.sh" "$KUBECONFIG" "$rundir/targets.json" || return 1
    _CHATFLOW_SCRAPE_SYNC_SID="$(cat "$rundir/sync.pid")"
    _chatflow_spawn "$rundir/pid" "$log" prometheus \
        --config.file="$rundir/prometheus.yml" \
        --storage.tsdb.path="$rundir/data" \
        --storage.tsdb.retention.time=1d \
        --web.listen-address="127.0.0.1:$port" || return 1
    _CHATFLOW_PROMETHEUS_SID="$(cat "$rundir/pid")"
    for ((i = 0; i < 300; i++)); do
        if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
            export CHATFLOW_PROMETHEUS="http://127.0.0.1:$port"
            _chatflow_log "Prometheus on $CHATFLOW_PROMETHEUS scrapes annotated pods every 5 s"
            return 0
        fi
        if [[ -z "$(_chatflow_session_pids "$_CHATFLOW_PROMETHEUS_SID")" ]]; then
            break
        fi
        sleep 0.2
    done
    _chatflow_log "Prometheus did not become ready; last lines of $log:"
    tail -n 20 "$log" >&2
    chatflow_prometheus_stop
    return 1
}

chatflow_prometheus_stop() {
    local sid="$_CHATFLOW_PROMETHEUS_SID"
    if [[ -n "$_CHATFLOW_SCRAPE_SYNC_SID" ]]; then
        _chatflow_stop_session scrape-sync "$_CHATFLOW_SCRAPE_SYNC_SID" 5
        _CHATFLOW_SCRAPE_SYNC_SID=""
    fi
    [[ -n "$sid" ]] || return 0
    _chatflow_stop_session Prometheus "$sid" 10
    _CHATFLOW_PROMETHEUS_SID=""
    unset CHATFLOW_PROMETHEUS
    rm -f "$(_chatflow_cache)/run/prometheus/pid"
}
