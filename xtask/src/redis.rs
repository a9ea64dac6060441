//! Redis from Debian's archive: the history store the cluster's shards use, reached by pods on
//! the node's address as they reach LocalStack.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::{self, Session};
use crate::{apt, cache, env::Exports, say};

/// Installs Debian's redis-server if it is missing (the consumer's tests start their own too).
pub fn install() -> Result<()> {
    apt::ensure_commands(&["redis-server:redis-server", "redis-cli:redis-tools"])
}

/// The port Redis serves on (CHATFLOW_REDIS_PORT, 6391).
pub fn port() -> u16 {
    std::env::var("CHATFLOW_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6391)
}

/// A Redis this run started.
#[derive(Debug, Default)]
pub struct Redis {
    session: Option<Session>,
}

impl Redis {
    /// Starts redis-server on 127.0.0.1 and each of ADDRS, on CHATFLOW_REDIS_PORT (6391), with
    /// an append-only file fsynced every second (Redis's recommended setting), and exports
    /// CHATFLOW_REDIS_URL and CHATFLOW_REDIS_PID.
    pub fn start(&mut self, addrs: &[IpAddr], exports: &mut Exports) -> Result<()> {
        if self.session.is_some() {
            return Ok(());
        }
        let port = port();
        let mut bind = vec!["127.0.0.1".to_owned()];
        bind.extend(addrs.iter().map(IpAddr::to_string));
        for addr in &bind {
            let at = SocketAddr::new(addr.parse()?, port);
            if process::port_in_use(at) {
                bail!("{at} is in use; set CHATFLOW_REDIS_PORT to a free port");
            }
        }
        // A fresh store per run: history of an earlier run would answer this run's resumes.
        let run_dir = cache::root().join("run/redis");
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir)?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--bind")
            .args(&bind)
            .args(["--port", &port.to_string()])
            // Pods connect from the cluster's network; the run's other servers are as open.
            .args(["--protected-mode", "no"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&run_dir);
        let log = cache::log("redis")?;
        let session =
            self.session
                .insert(Session::spawn("Redis", &run_dir.join("pid"), &log, &cmd)?);
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        session.await_ready(&log, Duration::from_secs(30), || {
            process::succeeds(&mut process::command(
                "redis-cli",
                &["-p", &port.to_string(), "ping"],
            ))
        })?;
        say!("Redis on {at} (append-only file in {})", run_dir.display());
        exports.set("CHATFLOW_REDIS_URL", format!("redis://{at}"));
        exports.set("CHATFLOW_REDIS_PID", session.sid().to_string());
        Ok(())
    }

    /// Stops Redis.
    pub fn stop(&mut self) {
        if let Some(session) = self.session.take() {
            session.stop(Duration::from_secs(10));
            let _ = fs::remove_file(cache::root().join("run/redis/pid"));
        }
    }
}
