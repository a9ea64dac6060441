//! Removes what the cluster leaves on the machine once its processes are gone: pod containers, the
//! kubelet's mounts, iptables rules, the pod bridge, cgroups and pod log links. Locally built
//! images stay: they are a cache.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::docker;
use crate::process::{self, command_exists};
use crate::say;

/// Prefixes of the chains the kubelet, kube-proxy, the CNI plugins and the egress guard add.
const CHAIN_PREFIXES: [&str; 3] = ["KUBE-", "CNI-", "CHATFLOW-"];

/// Cleans up after the cluster whose run directory is RUN_DIR and binaries are in BIN.
pub fn run(run_dir: &Path, bin: &Path) {
    if docker::answers() {
        // dockershim labels every container it makes.
        let ids = process::output(&mut docker::docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=io.kubernetes.docker.type",
        ]))
        .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut rm = docker::docker(&["rm", "-f", "-v"]);
            if !process::succeeds(rm.args(&ids)) {
                say!("could not remove all pod containers: {}", ids.join(" "));
            }
        }
    }
    unmount_under(run_dir);
    let kube_proxy = bin.join("kube-proxy");
    if kube_proxy.exists() && command_exists("iptables") {
        process::succeeds(Command::new(kube_proxy).arg("--cleanup"));
    }
    remove_chains("iptables");
    remove_chains("ip6tables");
    if process::succeeds(Command::new("ip").args(["link", "show", "cni0"]))
        && !process::succeeds(Command::new("ip").args(["link", "delete", "cni0"]))
    {
        say!("could not delete the pod bridge cni0");
    }
    // Empty QoS and pod cgroups the kubelet made; children first.
    let mut cgroups = vec![Path::new("/sys/fs/cgroup/kubepods").to_path_buf()];
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        cgroups.extend(controllers.flatten().map(|c| c.path().join("kubepods")));
    }
    for dir in cgroups.iter().filter(|d| d.is_dir()) {
        remove_empty_dirs(dir);
    }
    // The kubelet links pod logs to the containers' log files, which went with the containers.
    for dir in ["/var/log/pods", "/var/log/containers"] {
        remove_dangling_links(Path::new(dir));
        remove_empty_dirs(Path::new(dir));
    }
    // The kubelet 1.20 also announces its device-plugin socket in a fixed place, whatever its root.
    let _ = fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
    let _ = fs::remove_file("/var/lib/kubelet/device-plugins/DEPRECATION");
    let _ = fs::remove_dir("/var/lib/kubelet/device-plugins");
    let _ = fs::remove_dir("/var/lib/kubelet");
}

/// Unmounts everything under RUN_DIR, deepest first: secret and service-account volumes are tmpfs
/// mounts under the kubelet's root directory.
fn unmount_under(run_dir: &Path) {
    let root = format!("{}/", run_dir.display());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|point| point.starts_with(&root))
        .collect();
    points.sort_unstable_by(|a, b| b.cmp(a));
    for point in points {
        if !process::succeeds(Command::new("umount").arg(point))
            && !process::succeeds(Command::new("umount").args(["-l", point]))
        {
            say!("could not unmount {point}");
        }
    }
}

/// Removes DIR and the directories under it that are empty, children first (`rmdir` leaves the
/// others).
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Deletes the symbolic links under DIR whose targets are gone.
fn remove_dangling_links(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_symlink() && fs::metadata(&path).is_err() => {
                let _ = fs::remove_file(&path);
            }
            Ok(t) if t.is_dir() => remove_dangling_links(&path),
            _ => {}
        }
    }
}

/// Deletes, in every table of CMD (iptables or ip6tables), the cluster's chains and the rules that
/// jump to them from other chains, in one iptables-restore transaction per table.
fn remove_chains(cmd: &str) {
    if !command_exists(&format!("{cmd}-save")) {
        return;
    }
    for table in ["raw", "mangle", "nat", "filter"] {
        let saved = process::output(Command::new(format!("{cmd}-save")).args(["-t", table]))
            .unwrap_or_default();
        let Some(script) = removal_script(table, &saved) else {
            continue;
        };
        let restore = Command::new(format!("{cmd}-restore"))
            .arg("--noflush")
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(script.as_bytes())?;
                child.wait()
            });
        if !restore.is_ok_and(|status| status.success()) {
            say!("could not remove the cluster's {cmd} rules from the {table} table");
        }
    }
}

fn ours(chain: &str) -> bool {
    CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// The iptables-restore input that removes, from `iptables-save -t TABLE` output SAVED, the rules
/// of other chains that jump to ours, then our chains; None when there is nothing of ours.
fn removal_script(table: &str, saved: &str) -> Option<String> {
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    for line in saved.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if ours(name) {
                chains.push(name.to_owned());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            let jumps = [" -j ", " -g "].iter().any(|flag| {
                rule.match_indices(flag)
                    .any(|(i, _)| ours(&rule[i + flag.len()..]))
            });
            if !ours(chain) && jumps {
                rules.push(format!("-D {rule}"));
            }
        }
    }
    if chains.is_empty() && rules.is_empty() {
        return None;
    }
    let mut script = format!("*{table}\n");
    for rule in &rules {
        script += &format!("{rule}\n");
    }
    for chain in &chains {
        script += &format!("-F {chain}\n");
    }
    for chain in &chains {
        script += &format!("-X {chain}\n");
    }
    script += "COMMIT\n";
    Some(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clusters_chains_and_the_jumps_to_them_are_removed() {
        let saved = "\
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:CNI-abc - [0:0]
-A PREROUTING -m comment --comment \"kube\" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 10.244.0.0/24 -g CNI-abc
-A KUBE-SERVICES -j RETURN
COMMIT
";
        assert_eq!(
            removal_script("nat", saved).unwrap(),
            "*nat
-D PREROUTING -m comment --comment \"kube\" -j KUBE-SERVICES
-D POSTROUTING -s 10.244.0.0/24 -g CNI-abc
-F KUBE-SERVICES
-F CNI-abc
-X KUBE-SERVICES
-X CNI-abc
COMMIT
"
        );
        assert_eq!(
            removal_script("filter", ":INPUT ACCEPT [0:0]\n-A INPUT -j DOCKER\n"),
            None
        );
    }
}
