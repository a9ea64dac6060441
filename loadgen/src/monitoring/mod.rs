//! The shipped dashboard and alert rules against a live Prometheus: `loadgen dashboard check`
//! proves no panel is dead and every rule reads exported series, `wait-alert` watches an alert
//! fire under an injected fault, and `render` draws the panels from real data.

pub mod check;
pub mod dashboard;
pub mod prom;
pub mod render;
pub mod rules;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;

use prom::Prometheus;

/// Why a shipped monitoring file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not what it should be (a Grafana dashboard, a Prometheus rule file).
    #[error("{path} is not a {kind}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What it should be.
        kind: &'static str,
        /// The parser's words.
        reason: String,
    },
}

/// The text of `path`, or a [`LoadError::Read`].
fn read(path: &std::path::Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A [`LoadError::Parse`] for `path`.
fn unparsable(path: &std::path::Path, kind: &'static str, reason: impl ToString) -> LoadError {
    LoadError::Parse {
        path: path.display().to_string(),
        kind,
        reason: reason.to_string(),
    }
}

/// `loadgen dashboard` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// Every panel query must give data over the window, and every alert rule must parse and
    /// read only series that exist.
    Check {
        /// Prometheus base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        prometheus: String,
        /// Grafana dashboard JSON.
        #[arg(long, default_value = dashboard::DEFAULT_PATH)]
        dashboard: PathBuf,
        /// Prometheus rule file.
        #[arg(long, default_value = rules::DEFAULT_PATH)]
        rules: PathBuf,
        /// Window, seconds back from now.
        #[arg(long, default_value_t = 900)]
        since: u64,
    },
    /// Waits until an alert is pending or firing (or, with --gone, neither); exits 1 if that does
    /// not happen within the timeout.
    WaitAlert {
        /// Prometheus base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        prometheus: String,
        /// Alert name.
        #[arg(long)]
        name: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Wait until the alert is neither pending nor firing.
        #[arg(long)]
        gone: bool,
    },
    /// Draws every panel over the window into one SVG.
    Render {
        /// Prometheus base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        prometheus: String,
        /// Grafana dashboard JSON.
        #[arg(long, default_value = dashboard::DEFAULT_PATH)]
        dashboard: PathBuf,
        /// Window, seconds back from now.
        #[arg(long, default_value_t = 900)]
        since: u64,
        /// The picture.
        #[arg(long, default_value = "dashboard.svg")]
        out: PathBuf,
    },
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs `action`; the report goes to stdout.
pub async fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Check {
            prometheus,
            dashboard,
            rules,
            since,
        } => check_queries(&prometheus, &dashboard, &rules, since).await,
        Action::WaitAlert {
            prometheus,
            name,
            timeout,
            gone,
        } => wait_alert(&prometheus, &name, timeout, gone).await,
        Action::Render {
            prometheus,
            dashboard,
            since,
            out,
        } => render_dashboard(&prometheus, &dashboard, since, &out).await,
    }
}

/// Every dashboard panel's and alert rule's query has data over the last `since` seconds.
async fn check_queries(
    prometheus: &str,
    dash: &Path,
    rules_path: &Path,
    since: u64,
) -> anyhow::Result<()> {
    let prom = Prometheus::new(prometheus)?;
    let panels = dashboard::load(dash)?;
    let rules = rules::load(rules_path)?;
    let end = now();
    let findings = check::check(&prom, &panels, &rules, end - since as f64, end)
        .await
        .context("querying Prometheus")?;
    for f in &findings {
        let said = match &f.outcome {
            Ok(n) => format!("{n} series"),
            Err(e) => format!("error: {e}"),
        };
        let mark = if f.alive() { "ok  " } else { "DEAD" };
        println!("{mark} {} -> {said}", f.what);
    }
    let dead = findings.iter().filter(|f| !f.alive()).count();
    println!(
        "dashboard check: {} panels, {} rules, {} queries, {dead} without data",
        panels.len(),
        rules.len(),
        findings.len()
    );
    if dead > 0 {
        bail!("{dead} dashboard or alert queries gave no data over the last {since} s");
    }
    Ok(())
}

/// Waits until alert `name` is pending or firing (or, with `gone`, neither).
async fn wait_alert(prometheus: &str, name: &str, timeout: u64, gone: bool) -> anyhow::Result<()> {
    let prom = Prometheus::new(prometheus)?;
    let started = std::time::Instant::now();
    let timeout_d = Duration::from_secs(timeout);
    let took = || started.elapsed().as_secs_f64();
    if gone {
        if !check::wait_alert_gone(&prom, name, timeout_d).await? {
            bail!("alert {name} was still pending or firing after {timeout} s");
        }
        println!("alert {name} inactive after {:.0} s", took());
        return Ok(());
    }
    match check::wait_alert(&prom, name, &["pending", "firing"], timeout_d).await? {
        Some(state) => {
            println!("alert {name} {state} after {:.0} s", took());
            Ok(())
        }
        None => bail!("alert {name} was neither pending nor firing within {timeout} s"),
    }
}

/// Draws the dashboard's panels over the last `since` seconds into `out`.
async fn render_dashboard(
    prometheus: &str,
    dash: &Path,
    since: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let prom = Prometheus::new(prometheus)?;
    let panels = dashboard::load(dash)?;
    let end = now();
    let drawn = render::fetch(&prom, &panels, end - since as f64, end)
        .await
        .context("querying Prometheus")?;
    let title = format!(
        "ChatFlow dashboard: the last {} minutes (x axis: minutes) from {prometheus}",
        since.div_ceil(60)
    );
    render::draw(out, &title, &drawn, since as f64 / 60.0)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", out.display()))?;
    println!("wrote {} ({} panels)", out.display(), drawn.len());
    Ok(())
}
