//! The whole test environment: installing it, starting it in order, stopping it in reverse, and
//! running a command inside it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cluster::{self, Cluster};
use crate::docker::{self, Docker};
use crate::localstack::{self, LocalStack};
use crate::process;
use crate::prometheus::{self, Prometheus};
use crate::redis::{self, Redis};
use crate::say;

/// The environment a command inside the test environment gets: the servers' addresses and the
/// clients' settings.
#[derive(Debug, Default)]
pub struct Exports(BTreeMap<String, String>);

impl Exports {
    /// Sets NAME to VALUE for the command.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_owned(), value.into());
    }
}

/// Seconds from the environment variable NAME, or DEFAULT.
pub fn timeout(name: &str, default: u64) -> Duration {
    // At most a day: more than any start takes, and deadline arithmetic cannot overflow.
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .min(86_400),
    )
}

/// Installs (into the cache) everything the servers need.
pub fn install() -> Result<()> {
    localstack::install()?;
    redis::install()?;
    cluster::install()?;
    prometheus::install()
}

/// The servers this run started. Whatever part fails to start, `down` stops all that did.
#[derive(Debug, Default)]
struct TestEnv {
    localstack: LocalStack,
    redis: Redis,
    docker: Docker,
    cluster: Cluster,
    prometheus: Prometheus,
    exports: Exports,
}

impl TestEnv {
    fn up(&mut self, rules: &Path) -> Result<()> {
        let start = Instant::now();
        install()?;
        self.docker.start(&mut self.exports)?;
        let (node_ip, bridge) = docker::bridge()?;
        // LocalStack takes a few seconds to answer: it starts while the cluster does.
        self.localstack.spawn(&[node_ip.into()])?;
        self.redis.start(&[node_ip.into()], &mut self.exports)?;
        let kubeconfig = self.cluster.start(node_ip, &bridge, &mut self.exports)?;
        self.localstack.wait(&mut self.exports)?;
        self.prometheus
            .start(rules, &kubeconfig, &mut self.exports)?;
        let pod_endpoint = format!("http://{node_ip}:{}", localstack::PORT);
        let pod_redis = format!("redis://{node_ip}:{}", redis::port());
        say!(
            "test environment up in {} s (pods reach LocalStack at {pod_endpoint}, Redis at {pod_redis})",
            start.elapsed().as_secs()
        );
        self.exports.set("CHATFLOW_POD_AWS_ENDPOINT", pod_endpoint);
        self.exports.set("CHATFLOW_POD_REDIS_URL", pod_redis);
        Ok(())
    }

    fn up_sqs_only(&mut self) -> Result<()> {
        localstack::install()?;
        redis::install()?;
        self.localstack.spawn(&[])?;
        self.redis.start(&[], &mut self.exports)?;
        self.localstack.wait(&mut self.exports)
    }

    /// Reverse order of start; every part is stopped even if another fails, so nothing is left.
    fn down(&mut self) {
        process::stopping();
        // LocalStack takes seconds to stop: it stops while the cluster does.
        self.localstack.begin_stop();
        self.prometheus.stop();
        self.cluster.stop();
        self.redis.stop();
        self.localstack.stop();
        self.docker.stop();
    }
}

// Whatever way `run` leaves, a panic included, nothing it started is left running.
impl Drop for TestEnv {
    fn drop(&mut self) {
        self.down();
    }
}

/// Starts the test environment (only LocalStack with SQS_ONLY), runs COMMAND in it with the
/// servers' settings in its environment, and stops it again however the command ends. A SIGINT,
/// SIGTERM or SIGHUP stops the command and the servers, then this program, by the same signal.
pub fn run(sqs_only: bool, command: &[OsString], rules: &Path) -> Result<ExitCode> {
    process::catch_signals()?;
    let mut env = TestEnv::default();
    let result = if sqs_only {
        env.up_sqs_only()
    } else {
        env.up(rules)
    }
    .and_then(|()| {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]).envs(&env.exports.0);
        // Run from a script, the command gets a process group of its own so that a signal to
        // this program reaches everything it started. At a terminal it stays in the foreground
        // group, where it can read the terminal and Ctrl-C reaches it anyway.
        if !std::io::stdin().is_terminal() {
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", command[0].to_string_lossy()))?;
        process::wait_interruptibly(&mut child)
    });
    // Now, not at Drop: re-raising the signal below ends the program without unwinding.
    env.down();
    if let Some(signal) = process::interrupted() {
        say!("stopped by {signal}");
        let _ = signal_hook::low_level::emulate_default_handler(signal as i32);
    }
    let status = result?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
