//! The test cluster's supporting pieces: claiming its run directory, readiness probes, the pause
//! image and the egress guard.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::{
    ETCD_PEER_PORT, ETCD_PORT, KUBE_PORT, KUBELET_PORT, NODE_NAME, PAUSE_IMAGE, POD_CIDR,
    PROCESSES, SERVICE_CIDR,
};
use crate::process::{self, session_pids};
use crate::{cache, docker, say};

/// Fails if another run on this machine is using the cluster, if processes of an earlier one are
/// still there, or if a server already holds one of the cluster's ports.
pub fn check_free(run_dir: &Path, node_ip: Ipv4Addr) -> Result<()> {
    if let Some(owner) = cache::run_owner(run_dir) {
        bail!(
            "the test cluster is in use by another test run on this machine (started by PID {owner}); wait for it to finish"
        );
    }
    let leftover: Vec<String> = PROCESSES
        .iter()
        .filter_map(|name| process::read_pid(&run_dir.join(format!("pids/{name}.pid"))))
        .filter(|sid| !session_pids(*sid).is_empty())
        .map(|sid| format!("kill -- -{sid}"))
        .collect();
    if !leftover.is_empty() {
        bail!(
            "processes of an earlier test cluster are still running; stop them with: {}",
            leftover.join("; ")
        );
    }
    let local = Ipv4Addr::LOCALHOST;
    for (ip, port) in [
        (local, ETCD_PORT),
        (local, ETCD_PEER_PORT),
        (node_ip, KUBE_PORT),
        (node_ip, KUBELET_PORT),
        (node_ip, 53),
    ] {
        let addr = SocketAddr::from((ip, port));
        if process::port_in_use(addr) {
            bail!("{addr} is already in use by another process; stop it before running the tests");
        }
    }
    Ok(())
}

/// True when the API server is ready and the default namespace exists: tests create objects there
/// straight away, so this does not rely on /readyz covering the controller that makes it.
pub fn api_ready(run_dir: &Path, node_ip: Ipv4Addr) -> bool {
    let header = format!("@{}", run_dir.join("auth-header").display());
    let ca = run_dir.join("pki/ca.crt");
    ["/readyz", "/api/v1/namespaces/default"]
        .iter()
        .all(|path| {
            process::succeeds(
                Command::new("curl")
                    .args(["-sf", "-o", "/dev/null", "--max-time", "5", "--cacert"])
                    .arg(&ca)
                    .args([
                        "-H",
                        &header,
                        &format!("https://{node_ip}:{KUBE_PORT}{path}"),
                    ]),
            )
        })
}

fn kubectl_jsonpath(kubeconfig: &Path, args: &[&str]) -> String {
    process::output(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args),
    )
    .unwrap_or_default()
}

/// True once the node reports Ready.
pub fn node_ready(kubeconfig: &Path) -> bool {
    kubectl_jsonpath(
        kubeconfig,
        &[
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    ) == "True"
}

/// True once the default service account has a token: pods are rejected until then.
pub fn default_sa_ready(kubeconfig: &Path) -> bool {
    !kubectl_jsonpath(
        kubeconfig,
        &[
            "--namespace",
            "default",
            "get",
            "serviceaccount",
            "default",
            "-o",
            "jsonpath={.secrets[0].name}",
        ],
    )
    .is_empty()
}

/// Docker's cgroup driver, which the kubelet must use too.
pub fn cgroup_driver() -> String {
    process::output(&mut docker::docker(&[
        "info",
        "--format",
        "{{.CgroupDriver}}",
    ]))
    .map(|d| d.trim().to_owned())
    .ok()
    .filter(|d| !d.is_empty())
    .unwrap_or_else(|| "cgroupfs".into())
}

/// Makes the image every pod's sandbox runs from the cached static binary PAUSE: nothing can be
/// pulled here. The label ties the image to the binary, so a rebuilt binary makes a new image.
pub fn pause_image(pause: &Path) -> Result<()> {
    let want = process::output(Command::new("sha256sum").arg(pause))?
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned();
    let have = process::output(&mut docker::docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"dev.chatflow.pause-sha256\"}}",
        PAUSE_IMAGE,
    ]))
    .unwrap_or_default();
    if have.trim() == want {
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("chatflow-pause.{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let result = import_pause(pause, &tmp, &want);
    let _ = fs::remove_dir_all(&tmp);
    result.with_context(|| format!("making the pause image {PAUSE_IMAGE}"))?;
    say!("made the pause image {PAUSE_IMAGE}");
    Ok(())
}

fn import_pause(pause: &Path, tmp: &Path, sha: &str) -> Result<()> {
    fs::copy(pause, tmp.join("pause"))?;
    let archive = tmp.join("pause.tar");
    process::run(
        Command::new("tar")
            .arg("-C")
            .arg(tmp)
            .args(["--owner=0", "--group=0", "-cf"])
            .arg(&archive)
            .arg("pause"),
    )?;
    let label = format!("LABEL dev.chatflow.pause-sha256={sha}");
    let mut import = docker::docker(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/pause\"]",
        "--change",
        "USER 65535:65535",
        "--change",
        &label,
    ]);
    import.arg(&archive).arg(PAUSE_IMAGE).stdout(Stdio::null());
    process::run(&mut import)
}

/// Nothing in a test may leave the machine: packets from pods may go only to the pod and service
/// networks, the Docker bridge (BRIDGE) and this host. The raw table sees them before any other
/// rule (the CNI plugins and kube-proxy put theirs first in FORWARD) and before DNAT, so Service
/// addresses are still what they match.
pub fn egress_guard(bridge: &str, log: &Path) -> Result<()> {
    let mut rules = vec![vec!["-N", "CHATFLOW-EGRESS"]];
    for dst in [POD_CIDR, SERVICE_CIDR, bridge] {
        rules.push(vec!["-A", "CHATFLOW-EGRESS", "-d", dst, "-j", "RETURN"]);
    }
    rules.push(vec![
        "-A",
        "CHATFLOW-EGRESS",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "RETURN",
    ]);
    rules.push(vec!["-A", "CHATFLOW-EGRESS", "-j", "DROP"]);
    rules.push(vec![
        "-I",
        "PREROUTING",
        "1",
        "-s",
        POD_CIDR,
        "-j",
        "CHATFLOW-EGRESS",
    ]);
    let mut file = process::append(log)?;
    for rule in rules {
        writeln!(file, "iptables -t raw {}", rule.join(" "))?;
        let mut iptables = Command::new("iptables");
        iptables
            .args(["-t", "raw"])
            .args(&rule)
            .stdout(file.try_clone()?)
            .stderr(file.try_clone()?);
        if let Err(err) = process::run(&mut iptables) {
            say!(
                "installing the egress guard (iptables) failed; {}:",
                log.display()
            );
            process::show_tail(log, 20);
            return Err(err);
        }
    }
    Ok(())
}
