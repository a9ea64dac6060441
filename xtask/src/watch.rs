//! Keeps files in step with the test cluster: cluster DNS from its Services, and Prometheus'
//! scrape targets from its pods. Each runs as a server of its own (`xtask watch ...`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::process;

/// Runs SYNC once at start and again after every change to RESOURCE (all namespaces).
///
/// A watch only signals that something changed, and every change re-reads the whole list: a new
/// object is seen moments after it is created, and a watch that reconnects misses nothing.
pub fn run(kubeconfig: &Path, resource: &str, sync: impl Fn() -> Result<()>) -> ! {
    loop {
        // `get --watch` first prints every object, then one line per change after that listing.
        let child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", resource, "--all-namespaces", "--watch", "-o", "name"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        if let Ok(mut child) = child {
            let (tx, rx) = mpsc::channel();
            let stdout = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if line.is_err() || tx.send(()).is_err() {
                        break;
                    }
                }
            });
            while rx.recv().is_ok() {
                // A burst of changes (or the first listing) costs one run.
                while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
                if let Err(err) = sync() {
                    eprintln!("sync after a change to {resource}: {err:#}");
                }
            }
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn kubectl_json(kubeconfig: &Path, resource: &str) -> Result<Value> {
    let out = process::output(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", resource, "--all-namespaces", "-o", "json"]),
    )?;
    serde_json::from_str(&out).with_context(|| format!("parsing kubectl get {resource}"))
}

/// Writes CONTENT to PATH if it differs, through TMP (on the same file system) moved over it, so
/// a reader never sees a half-written file.
fn replace_if_changed(path: &Path, tmp: &Path, content: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    fs::write(tmp, content)?;
    fs::rename(tmp, path)?;
    Ok(())
}

/// The hosts file of the cluster's Services: NAME.NAMESPACE.svc.DOMAIN and NAME.NAMESPACE.svc ->
/// ClusterIP. Headless Services ("None") and ExternalName ones (no address) get no entry.
fn service_hosts(services: &Value, domain: &str) -> String {
    let mut lines: Vec<String> = items(services)
        .filter_map(|svc| {
            let ip = svc["spec"]["clusterIP"].as_str()?;
            if !ip.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let name = format!(
                "{}.{}",
                svc["metadata"]["name"].as_str()?,
                svc["metadata"]["namespace"].as_str()?
            );
            Some(format!("{ip} {name}.svc.{domain} {name}.svc\n"))
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// Writes the Services' names into `services` in HOSTS_DIR, the directory dnsmasq reads
/// (--hostsdir; it re-reads changed files by itself).
pub fn sync_services(kubeconfig: &Path, hosts_dir: &Path, domain: &str) -> Result<()> {
    let services = kubectl_json(kubeconfig, "services")?;
    // dnsmasq reads every file in its directory, so the temporary file stays outside it.
    let tmp = hosts_dir.with_extension("tmp");
    replace_if_changed(
        &hosts_dir.join("services"),
        &tmp,
        &service_hosts(&services, domain),
    )
}

/// Prometheus' scrape targets as kubernetes_sd would find them: every Running pod annotated
/// prometheus.io/scrape=true, at its IP and prometheus.io/port, path prometheus.io/path, labelled
/// namespace, pod and component.
fn scrape_targets(pods: &Value) -> Value {
    let mut groups: Vec<Value> = items(pods)
        .filter_map(|pod| {
            let (meta, status) = (&pod["metadata"], &pod["status"]);
            let notes = &meta["annotations"];
            if notes["prometheus.io/scrape"] != "true" || status["phase"] != "Running" {
                return None;
            }
            let ip = status["podIP"].as_str().filter(|ip| !ip.is_empty())?;
            let port = notes["prometheus.io/port"].as_str().filter(|p| !p.is_empty())?;
            Some(json!({
                "targets": [format!("{ip}:{port}")],
                "labels": {
                    "__metrics_path__": notes["prometheus.io/path"].as_str().unwrap_or("/metrics"),
                    "namespace": meta["namespace"],
                    "pod": meta["name"],
                    "component": meta["labels"]["app.kubernetes.io/component"].as_str().unwrap_or(""),
                },
            }))
        })
        .collect();
    groups.sort_by_key(|g| g["targets"][0].as_str().unwrap_or_default().to_owned());
    Value::Array(groups)
}

/// Writes the scrape targets of the cluster's pods to TARGETS, which Prometheus reads through
/// file_sd (Debian's build has no Kubernetes discovery) and re-reads when it changes.
pub fn sync_pods(kubeconfig: &Path, targets: &Path) -> Result<()> {
    let pods = kubectl_json(kubeconfig, "pods")?;
    let json = serde_json::to_string_pretty(&scrape_targets(&pods))?;
    replace_if_changed(targets, &targets.with_extension("tmp"), &json)
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_with_an_address_become_hosts() {
        let services = json!({"items": [
            {"metadata": {"name": "kubernetes", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.1"}},
            {"metadata": {"name": "headless", "namespace": "chat"}, "spec": {"clusterIP": "None"}},
            {"metadata": {"name": "external", "namespace": "chat"}, "spec": {"type": "ExternalName"}},
        ]});
        assert_eq!(
            service_hosts(&services, "cluster.local"),
            "10.96.0.1 kubernetes.default.svc.cluster.local kubernetes.default.svc\n"
        );
    }

    #[test]
    fn only_running_annotated_pods_are_scraped() {
        let pod = |name: &str, phase: &str, scrape: &str| {
            json!({
                "metadata": {"name": name, "namespace": "chat",
                    "labels": {"app.kubernetes.io/component": "producer"},
                    "annotations": {"prometheus.io/scrape": scrape, "prometheus.io/port": "9090"}},
                "status": {"phase": phase, "podIP": "10.244.0.7"},
            })
        };
        let pods = json!({"items": [pod("a", "Running", "true"), pod("b", "Pending", "true"), pod("c", "Running", "false")]});
        assert_eq!(
            scrape_targets(&pods),
            json!([{"targets": ["10.244.0.7:9090"], "labels": {
                "__metrics_path__": "/metrics", "namespace": "chat", "pod": "a", "component": "producer"}}])
        );
    }
}
