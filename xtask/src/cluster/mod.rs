//! A single-node Kubernetes 1.20 cluster on the Docker daemon: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, the kubelet (dockershim) and kube-proxy, pods on a CNI
//! bridge, cluster DNS from dnsmasq, and a guard that keeps pod traffic on this machine.
//!
//! The node's address is the Docker bridge's (172.17.0.1 by default): the API server listens there
//! so that pods reach it too, and so does every server on the host that pods must reach.

mod cleanup;
mod commands;
mod pki;
mod support;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::process::{self, Session, command_exists, show_tail};
use crate::{apt, cache, docker, env::Exports, kube_build, say};
use commands::Layout;

const ETCD_PORT: u16 = 22379;
const ETCD_PEER_PORT: u16 = 22380;
const KUBE_PORT: u16 = 26443;
const KUBELET_PORT: u16 = 10250;
const NODE_NAME: &str = "chatflow-node";
const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The kubernetes Service takes the first address of the service range.
const SERVICE_IP: &str = "10.96.0.1";
const POD_CIDR: &str = "10.244.0.0/24";
const CLUSTER_DOMAIN: &str = "cluster.local";
const PAUSE_IMAGE: &str = "local/pause:3.4.1";
const CNI_BIN_DIR: &str = "/usr/lib/cni";
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// The cluster's processes in start order; they stop in the reverse.
const PROCESSES: [&str; 8] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "dnsmasq",
    "dns-sync",
    "kubelet",
    "kube-proxy",
];

fn run_dir() -> PathBuf {
    cache::root().join("run/cluster")
}

/// Installs everything the cluster needs from Debian's archive, and builds its binaries.
pub fn install() -> Result<()> {
    docker::install()?;
    // iproute2 for the bridge's address, socat for `kubectl port-forward`, conntrack for
    // kube-proxy's cleanup of stale UDP flows, kubectl for the readiness checks and the DNS sync,
    // procps to follow the processes.
    apt::ensure_commands(&[
        "ps:procps",
        "openssl:openssl",
        "curl:curl",
        "ip:iproute2",
        "iptables:iptables",
        "iptables-restore:iptables",
        "socat:socat",
        "conntrack:conntrack",
        "kubectl:kubernetes-client",
        &format!("{DNSMASQ}:dnsmasq-base"),
        &format!("{CNI_BIN_DIR}/bridge:containernetworking-plugins"),
    ])?;
    kube_build::install()
}

fn ready_to_start() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the test cluster needs root (Docker, iptables, mounts)");
    }
    for cmd in [
        "curl",
        "openssl",
        "kubectl",
        "ip",
        "iptables",
        "iptables-restore",
        DNSMASQ,
        &format!("{CNI_BIN_DIR}/bridge"),
    ] {
        if !command_exists(cmd) {
            bail!("{cmd} is missing; install the test environment first");
        }
    }
    if !kube_build::installed() {
        bail!("the Kubernetes binaries are not built; install the test environment first");
    }
    Ok(())
}

/// The test cluster, once this run has started (part of) it: only then does `stop` tear anything
/// down, so a run that found the cluster taken never touches the other run's.
#[derive(Debug, Default)]
pub struct Cluster {
    started: bool,
    sessions: Vec<Session>,
}

impl Cluster {
    /// Starts the cluster on the node address NODE_IP (the Docker bridge BRIDGE's) and waits until
    /// the node is Ready and pods can be created in the default namespace. Exports KUBECONFIG
    /// (admin), CHATFLOW_KUBE=1, CHATFLOW_CLUSTER=1, CHATFLOW_NODE_IP, CHATFLOW_POD_CIDR and
    /// CHATFLOW_SERVICE_CIDR, and returns the admin kubeconfig's path. After a failed start,
    /// `stop` removes what was started.
    pub fn start(
        &mut self,
        node_ip: Ipv4Addr,
        bridge: &str,
        exports: &mut Exports,
    ) -> Result<PathBuf> {
        let start = Instant::now();
        let run_dir = run_dir();
        let bin = kube_build::bin_dir();
        let pki = run_dir.join("pki");
        let timeout = crate::env::timeout("CHATFLOW_KUBE_TIMEOUT", 180);
        ready_to_start()?;
        support::check_free(&run_dir, node_ip)?;

        // A run killed with -9 leaves pod containers, mounts, iptables rules and the bridge behind.
        cleanup::run(&run_dir, &bin);
        // A fresh etcd each run: tests must not see objects an earlier run left.
        let _ = fs::remove_dir_all(&run_dir);
        for dir in ["pids", "dns/hosts.d", "cni/net.d", "cni/cache"] {
            fs::create_dir_all(run_dir.join(dir))?;
        }
        fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o700))?;
        cache::claim(&run_dir)?;
        self.started = true;

        pki::write(&pki, node_ip, &run_dir.join("pki.log"))?;
        // One identity per component; the bootstrap RBAC rules already bind these user names.
        fs::write(pki.join("tokens.csv"), "")?;
        let node_user = format!("system:node:{NODE_NAME}");
        for (file, user, group) in [
            ("kubeconfig", "admin", Some("system:masters")),
            ("kcm.kubeconfig", "system:kube-controller-manager", None),
            ("scheduler.kubeconfig", "system:kube-scheduler", None),
            (
                "kubelet.kubeconfig",
                node_user.as_str(),
                Some("system:nodes"),
            ),
            ("proxy.kubeconfig", "system:kube-proxy", None),
        ] {
            pki::identity(&run_dir, node_ip, file, user, group)?;
        }
        support::pause_image(&bin.join("pause"))?;

        let layout = Layout {
            run_dir: run_dir.clone(),
            bin,
            node_ip,
        };
        let kubeconfig = run_dir.join("kubeconfig");
        self.spawn("etcd", &layout.etcd())?;
        let etcd_health = format!("http://127.0.0.1:{ETCD_PORT}/health");
        self.wait("etcd", timeout, &["etcd"], || {
            process::http_ok(&etcd_health)
        })?;
        self.spawn("kube-apiserver", &layout.apiserver())?;
        let api = format!("kube-apiserver on https://{node_ip}:{KUBE_PORT}");
        self.wait(&api, timeout, &["kube-apiserver", "etcd"], || {
            support::api_ready(&run_dir, node_ip)
        })?;
        self.spawn("kube-controller-manager", &layout.controller_manager())?;
        self.spawn("kube-scheduler", &layout.scheduler())?;
        self.spawn("dnsmasq", &layout.dnsmasq())?;
        self.spawn("dns-sync", &layout.dns_sync()?)?;
        support::egress_guard(bridge, &run_dir.join("egress-guard.log"))?;
        fs::write(
            run_dir.join("cni/net.d/10-chatflow.conflist"),
            layout.cni_config(),
        )?;
        self.spawn("kubelet", &layout.kubelet(&support::cgroup_driver()))?;
        self.spawn("kube-proxy", &layout.proxy())?;

        let node = format!("node {NODE_NAME} to be Ready");
        self.wait(&node, timeout, &["kubelet"], || {
            support::node_ready(&kubeconfig)
        })?;
        let sa = "the default service account's token";
        self.wait(sa, timeout, &["kube-controller-manager"], || {
            support::default_sa_ready(&kubeconfig)
        })?;

        exports.set("KUBECONFIG", kubeconfig.display().to_string());
        exports.set("CHATFLOW_KUBE", "1");
        exports.set("CHATFLOW_CLUSTER", "1");
        exports.set("CHATFLOW_NODE_IP", node_ip.to_string());
        exports.set("CHATFLOW_POD_CIDR", POD_CIDR);
        exports.set("CHATFLOW_SERVICE_CIDR", SERVICE_CIDR);
        say!(
            "test cluster ready in {} s: API https://{node_ip}:{KUBE_PORT}, node {NODE_NAME}, KUBECONFIG={}, logs: {}",
            start.elapsed().as_secs(),
            kubeconfig.display(),
            cache::root().join("logs").display()
        );
        Ok(kubeconfig)
    }

    /// Runs NAME's command in a session of its own, with its PID in the run directory.
    fn spawn(&mut self, name: &str, cmd: &Command) -> Result<()> {
        let pidfile = run_dir().join(format!("pids/{name}.pid"));
        self.sessions
            .push(Session::spawn(name, &pidfile, &cache::log(name)?, cmd)?);
        Ok(())
    }

    /// Polls READY until it holds. Fails, showing the logs of the processes named in SHOWN, after
    /// TIMEOUT, or as soon as one of the cluster's processes exits, showing its log.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        shown: &[&str],
        ready: impl Fn() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !ready() {
            process::check_interrupt()?;
            let exited: Vec<&str> = self
                .sessions
                .iter()
                .filter(|s| !s.running())
                .map(Session::name)
                .collect();
            if !exited.is_empty() {
                show_logs(&exited);
                bail!("{} exited while waiting for {what}", exited.join(","));
            }
            if Instant::now() >= deadline {
                show_logs(shown);
                bail!("gave up waiting for {what} after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Stops the cluster this run started and cleans up after it.
    pub fn stop(&mut self) {
        if !self.started {
            return;
        }
        // A stop after a failed or interrupted start must still run every cleanup command.
        process::stopping();
        // The kubelet and kube-proxy first, so nothing restarts what the rest of the stop removes;
        // the API server before etcd, so it does not spend its shutdown retrying a vanished etcd.
        while let Some(session) = self.sessions.pop() {
            session.stop(Duration::from_secs(10));
        }
        let run_dir = run_dir();
        let _ = fs::remove_dir_all(run_dir.join("pids"));
        cleanup::run(&run_dir, &kube_build::bin_dir());
        let _ = fs::remove_file(run_dir.join("owner"));
        self.started = false;
    }
}

fn show_logs(names: &[&str]) {
    for name in names {
        if let Ok(log) = cache::log(name) {
            say!("last lines of {}:", log.display());
            show_tail(&log, 25);
        }
    }
}
