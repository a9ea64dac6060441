"""Checks the chart's monitoring objects in `helm template` output (YAML on stdin): with
`--set metrics.dashboard.enabled=true,metrics.alerts.enabled=true,metrics.podMonitor.enabled=true`
and the PrometheusRule API available (argument `on`), the dashboard ConfigMap carries
monitoring/grafana-dashboard.json for Grafana's sidecar, the PrometheusRule carries exactly the
groups of monitoring/alerts.yaml, and the PodMonitor selects every set's pods on their metrics
port; with the defaults (argument `off`) none of them is rendered. Either way the operator's pods
carry the scrape annotations."""

import json
import sys

import yaml

CHART = "charts/chatflow"
expect_on = sys.argv[1] == "on"
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)


def fail(why):
    sys.exit(f"chart monitoring: {why}")


pod = by_kind["Deployment"][0]["spec"]["template"]["metadata"]
notes = pod.get("annotations") or {}
if notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/port") != "8090":
    fail(f"operator pods lack the scrape annotations: {notes}")

dashboards = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"].endswith("-dashboard")]
rules = by_kind.get("PrometheusRule", [])
monitors = by_kind.get("PodMonitor", [])
if not expect_on:
    if dashboards or rules or monitors:
        fail("monitoring objects rendered although every switch is off by default")
    print("chart monitoring: off by default; operator pods annotated for scraping")
    sys.exit(0)

if len(dashboards) != 1 or len(rules) != 1 or len(monitors) != 1:
    fail(f"expected one dashboard, rule and monitor: {len(dashboards)}, {len(rules)}, {len(monitors)}")
dashboard = dashboards[0]
if dashboard["metadata"]["labels"].get("grafana_dashboard") != "1":
    fail("the dashboard ConfigMap lacks the sidecar label grafana_dashboard: \"1\"")
with open(f"{CHART}/monitoring/grafana-dashboard.json") as f:
    shipped = json.load(f)
if json.loads(dashboard["data"]["chatflow.json"]) != shipped:
    fail("the dashboard ConfigMap differs from monitoring/grafana-dashboard.json")
with open(f"{CHART}/monitoring/alerts.yaml") as f:
    groups = yaml.safe_load(f)["groups"]
if rules[0]["spec"]["groups"] != groups:
    fail("the PrometheusRule's groups differ from monitoring/alerts.yaml")
monitor = monitors[0]["spec"]
if monitor["selector"]["matchLabels"] != {"app.kubernetes.io/managed-by": "chatflow-operator"}:
    fail(f"the PodMonitor selects {monitor['selector']}")
if [e["port"] for e in monitor["podMetricsEndpoints"]] != ["metrics"]:
    fail(f"the PodMonitor scrapes {monitor['podMetricsEndpoints']}")
panels = sum(1 for p in shipped["panels"] if p["type"] != "row")
print(f"chart monitoring: dashboard ({panels} panels), {len(groups[0]['rules'])} alert rules "
      "and the PodMonitor render as shipped")
