//! Docker Engine from Debian's archive: the test cluster's container runtime and where its images
//! are built.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::process::{self, Session};
use crate::{apt, cache, env::Exports, say};

/// Debian's client (20.10). A newer client earlier on PATH may need the buildx plugin for builds,
/// which is not installed; Debian's builds with its built-in BuildKit.
pub const CLIENT: &str = "/usr/bin/docker";
const DAEMON: &str = "/usr/sbin/dockerd";

/// A `docker` command with Debian's client.
pub fn docker(args: &[&str]) -> Command {
    process::command(CLIENT, args)
}

/// True when a Docker daemon answers.
pub fn answers() -> bool {
    process::succeeds(&mut docker(&["info"]))
}

/// Installs Debian's docker.io if its client or daemon is missing.
pub fn install() -> Result<()> {
    apt::ensure_commands(&[
        &format!("{CLIENT}:docker.io"),
        &format!("{DAEMON}:docker.io"),
    ])
}

/// The Docker bridge's address and network (docker0): the node's address, where pods reach the
/// host.
pub fn bridge() -> Result<(Ipv4Addr, String)> {
    let out =
        process::output(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "docker0"]))
            .unwrap_or_default();
    let cidr = out
        .split_whitespace()
        .nth(3)
        .context("the Docker bridge docker0 has no IPv4 address; the cluster needs Docker's default bridge network")?;
    let addr = cidr.split('/').next().unwrap_or(cidr).parse()?;
    Ok((addr, cidr.to_owned()))
}

/// The Docker daemon: one found answering, or one this run started (and stops again).
#[derive(Debug, Default)]
pub struct Docker {
    session: Option<Session>,
}

impl Docker {
    /// Uses the Docker daemon if one answers, otherwise starts one, and exports CHATFLOW_DOCKER.
    pub fn start(&mut self, exports: &mut Exports) -> Result<()> {
        if !process::command_exists(CLIENT) || !process::command_exists(DAEMON) {
            bail!("Docker is not installed");
        }
        exports.set("CHATFLOW_DOCKER", CLIENT);
        if self.session.is_some() || answers() {
            return Ok(());
        }
        let log = cache::log("dockerd")?;
        say!("starting the Docker daemon (log: {})", log.display());
        // Its data (/var/lib/docker) outlives the daemon: locally built images are a cache.
        let pidfile = cache::dir("run/docker")?.join("dockerd.pid");
        let session = Session::spawn("dockerd", &pidfile, &log, &Command::new(DAEMON))?;
        let timeout = crate::env::timeout("CHATFLOW_DOCKER_TIMEOUT", 60);
        let session = self.session.insert(session);
        session.await_ready(&log, timeout, answers)?;
        say!("Docker daemon ready (PID {})", session.sid());
        Ok(())
    }

    /// Stops the Docker daemon if this run started it; one that was already running stays.
    pub fn stop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // dockerd first, alone: it stops its containerd itself, and a containerd gone first would
        // leave it retrying.
        session.signal_leader(Signal::SIGTERM);
        process::wait_until(Duration::from_secs(20), || !session.leader_alive());
        session.stop(Duration::from_secs(5));
        let _ = std::fs::remove_file(cache::root().join("run/docker/dockerd.pid"));
    }
}
