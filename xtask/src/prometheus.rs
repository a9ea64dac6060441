//! Prometheus from Debian's archive, scraping the cluster's pods the way a cluster's Prometheus
//! does (pods found through the API server, kept by their prometheus.io/* annotations) and
//! evaluating the chart's alert rules.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::{self, Session};
use crate::{apt, cache, env::Exports, say};

/// Installs Debian's prometheus if it is missing.
pub fn install() -> Result<()> {
    apt::ensure_commands(&["prometheus:prometheus", "promtool:prometheus"])
}

fn port() -> u16 {
    std::env::var("CHATFLOW_PROMETHEUS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9099)
}

/// Prometheus and the watcher that writes its targets.
#[derive(Debug, Default)]
pub struct Prometheus {
    server: Option<Session>,
    sync: Option<Session>,
}

impl Prometheus {
    /// Starts Prometheus on 127.0.0.1:CHATFLOW_PROMETHEUS_PORT (9099) with the alert RULES,
    /// scraping the pods of the cluster KUBECONFIG names every 5 s; exports CHATFLOW_PROMETHEUS.
    pub fn start(&mut self, rules: &Path, kubeconfig: &Path, exports: &mut Exports) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        apt::require("curl", "to check that Prometheus is ready")?;
        let port = port();
        if process::port_in_use(SocketAddr::from(([127, 0, 0, 1], port))) {
            bail!("127.0.0.1:{port} is in use; set CHATFLOW_PROMETHEUS_PORT to a free port");
        }
        // A fresh TSDB per run: figures of an earlier run would mix into this one's checks.
        let run_dir = cache::root().join("run/prometheus");
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(run_dir.join("data"))?;
        let alerts = run_dir.join("alerts.yaml");
        fs::copy(rules, &alerts)?;
        process::run(
            Command::new("promtool")
                .args(["check", "rules"])
                .arg(&alerts)
                .stdout(std::io::stderr()),
        )?;
        let targets = run_dir.join("targets.json");
        let config = run_dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: kubernetes-pods\n    file_sd_configs:\n      - files: [{}]\n",
                alerts.display(),
                targets.display()
            ),
        )?;
        fs::write(&targets, "[]")?;
        process::run(
            Command::new("promtool")
                .args(["check", "config"])
                .arg(&config)
                .stdout(std::io::stderr()),
        )?;

        let mut sync = Command::new(std::env::current_exe()?);
        sync.args(["watch", "pods"]).arg(kubeconfig).arg(&targets);
        self.sync = Some(Session::spawn(
            "scrape-sync",
            &run_dir.join("sync.pid"),
            &cache::log("scrape-sync")?,
            &sync,
        )?);

        let log = cache::log("prometheus")?;
        let mut server = Command::new("prometheus");
        server
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                run_dir.join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=1d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let server = self.server.insert(Session::spawn(
            "Prometheus",
            &run_dir.join("pid"),
            &log,
            &server,
        )?);
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        server.await_ready(&log, Duration::from_secs(60), || process::http_ok(&ready))?;
        say!("Prometheus on {url} scrapes annotated pods every 5 s");
        exports.set("CHATFLOW_PROMETHEUS", url);
        Ok(())
    }

    /// Stops Prometheus and its target watcher.
    pub fn stop(&mut self) {
        if let Some(sync) = self.sync.take() {
            sync.stop(Duration::from_secs(5));
        }
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(10));
            let _ = fs::remove_file(cache::root().join("run/prometheus/pid"));
            let _ = fs::remove_file(cache::root().join("run/prometheus/sync.pid"));
        }
    }
}
