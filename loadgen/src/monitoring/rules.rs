//! The shipped alert rules, read as Prometheus reads them.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{LoadError, read, unparsable};

/// Where the chart keeps the rules, from the repository root.
pub const DEFAULT_PATH: &str = "charts/chatflow/monitoring/alerts.yaml";

/// One alerting rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    /// Its name.
    pub alert: String,
    /// Its PromQL expression.
    pub expr: String,
    /// How long the expression must hold before it fires.
    #[serde(rename = "for", default)]
    pub hold: Option<String>,
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    rules: Vec<Rule>,
}

/// Every alerting rule of the rule file at `path`.
pub fn load(path: &Path) -> Result<Vec<Rule>, LoadError> {
    let file: RuleFile = serde_yaml::from_str(&read(path)?)
        .map_err(|e| unparsable(path, "Prometheus rule file", e))?;
    Ok(file.groups.into_iter().flat_map(|g| g.rules).collect())
}

/// The ChatFlow metric names `expr` reads; a rule over a name no target exports never fires.
pub fn metrics_read(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("chatflow_") {
        let starts_word = !rest[..at].ends_with(is_name);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if starts_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_cover_the_on_call_questions() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_PATH);
        let rules = load(&path).expect("the shipped rules parse");
        let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
        for alert in [
            "ChatFlowBreakerOpen",
            "ChatFlowBacklogGrowing",
            "ChatFlowOldestMessageOld",
            "ChatFlowSubscriberDrops",
            "ChatFlowHistoryStoreDown",
            "ChatFlowReconcileErrors",
            "ChatFlowShardNotReady",
        ] {
            assert!(names.contains(alert), "no {alert}: {names:?}");
        }
        for r in &rules {
            assert!(
                !metrics_read(&r.expr).is_empty(),
                "{} reads nothing",
                r.alert
            );
            assert!(r.hold.is_some(), "{} fires on one evaluation", r.alert);
        }
    }

    #[test]
    fn metric_names_are_whole_words() {
        let names = metrics_read(
            "sum(rate(chatflow_a_total[5m])) > 0 and my_chatflow_b > chatflow_c{x=\"1\"} + chatflow_d",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["chatflow_a_total", "chatflow_c", "chatflow_d"]
        );
    }
}
