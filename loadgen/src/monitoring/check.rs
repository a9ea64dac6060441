//! Checks a dashboard and its alert rules against a live Prometheus: no dead panel, no rule over
//! a series nobody exports, and alerts that can be seen to fire.

use std::time::{Duration, Instant};

use super::dashboard::Panel;
use super::prom::{PromError, Prometheus};
use super::rules::{Rule, metrics_read};

/// What one query gave.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Which panel query or rule.
    pub what: String,
    /// Series with at least one sample, or why there are none.
    pub outcome: Result<usize, String>,
}

impl Finding {
    /// Whether it gave data.
    pub fn alive(&self) -> bool {
        matches!(self.outcome, Ok(n) if n > 0)
    }
}

/// The sample step of a check over `seconds`: about 200 points, never finer than 5 s.
fn step(seconds: f64) -> f64 {
    (seconds / 200.0).max(5.0).round()
}

/// Runs every panel query over `[start, end]` (unix seconds) and every rule: its expression must
/// parse, and each ChatFlow metric it reads must have had a series in the window.
pub async fn check(
    prom: &Prometheus,
    panels: &[Panel],
    rules: &[Rule],
    start: f64,
    end: f64,
) -> Result<Vec<Finding>, PromError> {
    let mut findings = Vec::new();
    for panel in panels {
        for target in &panel.targets {
            let outcome = match prom
                .range(&target.expr, start, end, step(end - start))
                .await
            {
                Ok(series) => Ok(series.iter().filter(|s| !s.samples.is_empty()).count()),
                Err(PromError::Refused { error, .. }) => Err(error),
                Err(e) => return Err(e),
            };
            findings.push(Finding {
                what: format!("panel {:?} query {:?}", panel.title, target.legend),
                outcome,
            });
        }
    }
    let window = (end - start).ceil().max(60.0) as u64;
    for rule in rules {
        if let Err(e) = prom.instant(&rule.expr).await {
            let PromError::Refused { error, .. } = e else {
                return Err(e);
            };
            findings.push(Finding {
                what: format!("alert {} expression", rule.alert),
                outcome: Err(error),
            });
            continue;
        }
        for metric in metrics_read(&rule.expr) {
            let expr = format!("count(last_over_time({metric}[{window}s]))");
            let outcome = prom.instant(&expr).await?;
            let series = outcome
                .first()
                .and_then(|s| s.samples.last())
                .map_or(0, |(_, v)| *v as usize);
            findings.push(Finding {
                what: format!("alert {} reads {metric}", rule.alert),
                outcome: Ok(series),
            });
        }
    }
    Ok(findings)
}

/// Waits until alert `name` is in one of `states`, and returns the state it reached.
pub async fn wait_alert(
    prom: &Prometheus,
    name: &str,
    states: &[&str],
    timeout: Duration,
) -> Result<Option<String>, PromError> {
    let deadline = Instant::now() + timeout;
    loop {
        let alerts = prom.alerts().await?;
        if let Some(a) = alerts.iter().find(|a| {
            a.labels.get("alertname").is_some_and(|n| n == name)
                && states.contains(&a.state.as_str())
        }) {
            return Ok(Some(a.state.clone()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until alert `name` is neither pending nor firing; false if it still is at the timeout.
pub async fn wait_alert_gone(
    prom: &Prometheus,
    name: &str,
    timeout: Duration,
) -> Result<bool, PromError> {
    let deadline = Instant::now() + timeout;
    loop {
        let alerts = prom.alerts().await?;
        if !alerts
            .iter()
            .any(|a| a.labels.get("alertname").is_some_and(|n| n == name))
        {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_is_alive_only_with_a_series() {
        let f = |outcome| Finding {
            what: "q".into(),
            outcome,
        };
        assert!(f(Ok(2)).alive());
        assert!(!f(Ok(0)).alive());
        assert!(!f(Err("parse error".into())).alive());
    }

    #[test]
    fn steps_stay_coarse_enough_for_prometheus() {
        assert_eq!(step(60.0), 5.0);
        assert_eq!(step(3600.0), 18.0);
    }
}
