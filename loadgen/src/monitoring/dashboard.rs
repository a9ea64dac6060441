//! The shipped Grafana dashboard, read as what it asks Prometheus: panels and their queries.

use std::path::Path;

use serde::Deserialize;

use super::{LoadError, read, unparsable};

/// Where the chart keeps the dashboard, from the repository root.
pub const DEFAULT_PATH: &str = "charts/chatflow/monitoring/grafana-dashboard.json";

/// How a query's Grafana variables are filled outside Grafana: every namespace, and a rate window
/// of four 15 s scrapes, Grafana's own floor for `$__rate_interval`.
const VARIABLES: [(&str, &str); 2] = [("$namespace", ".*"), ("$__rate_interval", "1m")];

/// One graph of the dashboard.
#[derive(Debug, Clone)]
pub struct Panel {
    /// The row it sits in.
    pub row: String,
    /// Its title.
    pub title: String,
    /// Grafana's unit name, e.g. `s` or `reqps`.
    pub unit: String,
    /// Its queries.
    pub targets: Vec<Target>,
}

/// One query of a panel.
#[derive(Debug, Clone)]
pub struct Target {
    /// PromQL with the dashboard's variables filled in.
    pub expr: String,
    /// Grafana's legend template, e.g. `{{pod}}`.
    pub legend: String,
}

#[derive(Deserialize)]
struct RawDashboard {
    panels: Vec<RawPanel>,
}

#[derive(Deserialize)]
struct RawPanel {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(rename = "fieldConfig", default)]
    field_config: serde_json::Value,
}

#[derive(Deserialize)]
struct RawTarget {
    expr: String,
    #[serde(rename = "legendFormat", default)]
    legend: String,
}

/// The panels of the dashboard at `path`, in layout order.
pub fn load(path: &Path) -> Result<Vec<Panel>, LoadError> {
    parse(&read(path)?).map_err(|e| unparsable(path, "Grafana dashboard", e))
}

/// The panels of a dashboard's JSON, in layout order.
pub fn parse(json: &str) -> Result<Vec<Panel>, serde_json::Error> {
    let raw: RawDashboard = serde_json::from_str(json)?;
    let mut row = String::new();
    let mut panels = Vec::new();
    for p in raw.panels {
        if p.kind == "row" {
            row = p.title;
            continue;
        }
        let unit = p.field_config["defaults"]["unit"]
            .as_str()
            .unwrap_or("short")
            .to_owned();
        panels.push(Panel {
            row: row.clone(),
            title: p.title,
            unit,
            targets: p
                .targets
                .into_iter()
                .map(|t| Target {
                    expr: fill(&t.expr),
                    legend: t.legend,
                })
                .collect(),
        });
    }
    Ok(panels)
}

/// `expr` with the dashboard's variables replaced by their values outside Grafana.
pub fn fill(expr: &str) -> String {
    VARIABLES
        .iter()
        .fold(expr.to_owned(), |e, (var, value)| e.replace(var, value))
}

/// A series' legend: `{{label}}` in Grafana's template replaced by the series' label.
pub fn legend(template: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            rest = &rest[open..];
            break;
        };
        let name = after[..close].trim();
        out.push_str(labels.get(name).map_or("", String::as_str));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Vec<Panel> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_PATH);
        load(&path).expect("the shipped dashboard parses")
    }

    #[test]
    fn the_shipped_dashboard_covers_every_area_with_queries_prometheus_can_take() {
        let panels = shipped();
        let rows: std::collections::BTreeSet<&str> =
            panels.iter().map(|p| p.row.as_str()).collect();
        for row in [
            "Ingest",
            "Fan-out",
            "Queues",
            "Latency",
            "Errors",
            "Operator",
            "History store",
        ] {
            assert!(rows.contains(row), "no {row} row: {rows:?}");
        }
        for p in &panels {
            assert!(!p.targets.is_empty(), "{} has no query", p.title);
            for t in &p.targets {
                assert!(!t.expr.contains('$'), "unfilled variable in {}", t.expr);
                assert!(
                    t.expr.contains("chatflow_"),
                    "{} reads no ChatFlow metric",
                    t.expr
                );
            }
        }
    }

    #[test]
    fn legends_take_the_series_labels() {
        let labels = [("pod".to_owned(), "p-1".to_owned())].into();
        assert_eq!(legend("{{pod}} / s", &labels), "p-1 / s");
        assert_eq!(legend("errors: {{ reason }}", &labels), "errors: ");
        assert_eq!(legend("plain", &labels), "plain");
        assert_eq!(legend("broken {{pod", &labels), "broken {{pod");
    }
}
