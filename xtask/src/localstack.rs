//! LocalStack (SQS) from PyPI in a virtualenv of its own, without Docker.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::{self, Session, command_exists};
use crate::{cache, env::Exports, say};

// Newer localstack-core releases (4.14, 2026.x) fail on Python 3.11 with a SyntaxError; the extra
// pins keep start-up from breaking on cbor2 6, pyOpenSSL 26 and Twisted's missing
// service_identity.
const VERSION: &str = "4.13.1";
const PIP_SPEC: [&str; 5] = [
    "localstack-core[base-runtime]==4.13.1",
    "cbor2<6",
    "cryptography<45",
    "pyopenssl<25",
    "service-identity",
];
/// The port LocalStack serves on, on every address it listens on.
pub const PORT: u16 = 4566;

fn venv() -> PathBuf {
    cache::root().join(format!("localstack-{VERSION}"))
}

fn run_dir() -> PathBuf {
    cache::root().join("run/localstack")
}

fn python() -> String {
    std::env::var("CHATFLOW_PYTHON").unwrap_or_else(|_| "python3".into())
}

// The marker holds the package list, so changing a pin reinstalls instead of reusing a venv built
// from other versions.
fn installed() -> bool {
    let venv = venv();
    venv.join("bin/python").exists()
        && fs::read_to_string(venv.join(".chatflow-installed"))
            .is_ok_and(|m| m == PIP_SPEC.join(" "))
}

/// Installs LocalStack into the cache, once.
pub fn install() -> Result<()> {
    if installed() {
        return Ok(());
    }
    cache::with_lock("localstack-install", || {
        if installed() { Ok(()) } else { do_install() }
    })
}

fn do_install() -> Result<()> {
    let venv = venv();
    let python = python();
    let log = cache::log("localstack-install")?;
    if !command_exists(&python) {
        bail!(
            "{python} not found; LocalStack needs Python 3.11 (on Debian: apt-get install -y python3 python3-venv)"
        );
    }
    say!(
        "installing LocalStack {VERSION} into {} (about 30 s, 200 MB; log: {})",
        venv.display(),
        log.display()
    );
    // No valid marker means an earlier install died half-way or used other pins: start from
    // nothing rather than trust it.
    let _ = fs::remove_dir_all(&venv);
    let _ = fs::remove_file(&log);
    let result = process::step(
        &log,
        "python3 -m venv",
        Command::new(&python).arg("-m").arg("venv").arg(&venv),
    )
    .and_then(|()| {
        process::step(
            &log,
            "pip install LocalStack",
            Command::new(venv.join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "--no-input"])
                .args(PIP_SPEC),
        )
    });
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&venv);
        return Err(
            err.context("installing LocalStack (on Debian the venv module is in python3-venv)")
        );
    }
    fs::write(venv.join(".chatflow-installed"), PIP_SPEC.join(" "))?;
    Ok(())
}

/// A LocalStack this run started.
#[derive(Debug, Default)]
pub struct LocalStack {
    session: Option<Session>,
}

impl LocalStack {
    /// Starts LocalStack on 127.0.0.1 and on each of ADDRS (pods reach it on the node's address)
    /// without waiting for it, so other servers can start meanwhile; `wait` waits.
    pub fn spawn(&mut self, addrs: &[IpAddr]) -> Result<()> {
        if self.session.is_some() {
            return Ok(());
        }
        if !installed() {
            bail!("LocalStack is not installed");
        }
        crate::apt::require("curl", "to check that LocalStack answers")?;
        let run_dir = run_dir();
        let mut listen = Vec::new();
        for addr in std::iter::once(IpAddr::from([127, 0, 0, 1])).chain(addrs.iter().copied()) {
            let at = SocketAddr::new(addr, PORT);
            listen.push(at.to_string());
            // Another server on the port would answer the readiness probe and the tests would run
            // against it; a run killed with -9 can leave its LocalStack behind, so name it if it is
            // ours, and tell it apart from a run still in progress, whose servers must stay.
            if !process::port_in_use(at) {
                continue;
            }
            if let Some(owner) = cache::run_owner(&run_dir) {
                bail!(
                    "{at} is in use by another test run on this machine (started by PID {owner}); wait for it to finish"
                );
            }
            if let Some(stale) = process::read_pid(&run_dir.join("pid"))
                .filter(|sid| !process::session_pids(*sid).is_empty())
            {
                bail!(
                    "{at} is taken by a LocalStack left over from an earlier run (PID {stale}); stop it with: kill -- -{stale}"
                );
            }
            bail!("{at} is already in use by another process; stop it before running the tests");
        }
        // LocalStack keeps no useful state between runs here, and old state would make runs differ.
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(run_dir.join("fs"))?;
        cache::claim(&run_dir)?;
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.args(["-m", "localstack.runtime.main"])
            // The machine has /.dockerenv, and LocalStack would otherwise write to
            // /var/lib/localstack.
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", run_dir.join("fs"))
            .env("GATEWAY_LISTEN", listen.join(","))
            .env("LOCALSTACK_HOST", format!("127.0.0.1:{PORT}"))
            // The default server ignores the host part and binds 0.0.0.0.
            .env("GATEWAY_SERVER", "hypercorn")
            .env("SERVICES", "sqs")
            .env("EAGER_SERVICE_LOADING", "1")
            // Queue URLs name the host and port the request was sent to: 127.0.0.1 on the host
            // and the node's address for pods, so each client gets URLs it can reach.
            .env("SQS_ENDPOINT_STRATEGY", "dynamic")
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1");
        self.session = Some(Session::spawn(
            "LocalStack",
            &run_dir.join("pid"),
            &cache::log("localstack")?,
            &cmd,
        )?);
        Ok(())
    }

    /// Waits until SQS answers, and exports the client settings.
    pub fn wait(&self, exports: &mut Exports) -> Result<()> {
        let Some(session) = &self.session else {
            bail!("LocalStack was not started")
        };
        let log = cache::log("localstack")?;
        let timeout = crate::env::timeout("CHATFLOW_LOCALSTACK_TIMEOUT", 120);
        // The health route reports ready before SQS answers; only a real call proves it usable.
        session.await_ready(&log, timeout, || {
            process::succeeds(Command::new("curl").args([
                "-sf",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                "-X",
                "POST",
                "-H",
                "X-Amz-Target: AmazonSQS.ListQueues",
                "-H",
                "Content-Type: application/x-amz-json-1.0",
                "-d",
                "{}",
                &format!("http://127.0.0.1:{PORT}/"),
            ]))
        })?;
        exports.set("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{PORT}"));
        exports.set("AWS_REGION", "us-east-1");
        exports.set("AWS_ACCESS_KEY_ID", "test");
        exports.set("AWS_SECRET_ACCESS_KEY", "test");
        exports.set("CHATFLOW_LOCALSTACK", "1");
        // The session to freeze (SIGSTOP) for the e2e's "queue service stalls" fault.
        exports.set("CHATFLOW_LOCALSTACK_PID", session.sid().to_string());
        say!(
            "LocalStack ready on 127.0.0.1:{PORT} (PID {}, log: {})",
            session.sid(),
            log.display()
        );
        Ok(())
    }

    /// Sends SIGTERM without waiting, so LocalStack's few seconds of shutdown overlap the stop of
    /// the other servers.
    pub fn begin_stop(&self) {
        if let Some(session) = &self.session {
            session.terminate();
        }
    }

    /// Stops LocalStack if this run started it.
    pub fn stop(&mut self) {
        if let Some(session) = self.session.take() {
            // SIGTERM stops it in about 2 s, but about one stop in a dozen hangs for good.
            session.stop(Duration::from_secs(10));
            let _ = fs::remove_file(run_dir().join("pid"));
            let _ = fs::remove_file(run_dir().join("owner"));
        }
    }
}
