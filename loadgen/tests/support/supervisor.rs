//! Runs the Deployments an operator writes as local processes: each container's image maps to a
//! built binary, its env is passed through (fieldRef and $(VAR) resolved as the kubelet would),
//! its port is remapped on loopback, and readiness is reported back into the Deployment status.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::process::{Child, Command};

/// One local "pod".
pub struct Proc {
    child: Child,
    /// Loopback port it listens on.
    pub port: u16,
}

/// The local stand-in for kubelet and the Deployment controller in one namespace.
pub struct Supervisor {
    api: Api<Deployment>,
    bin_dir: PathBuf,
    procs: HashMap<String, (String, Vec<Proc>)>,
}

impl Supervisor {
    /// Supervises the ChatFlow Deployments of `ns`.
    pub fn new(client: Client, ns: &str) -> Self {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let bin_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        for bin in ["chatflow-producer", "chatflow-consumer"] {
            assert!(
                bin_dir.join(bin).exists(),
                "{} is missing: build it first (cargo build -p chatflow-producer -p chatflow-consumer)",
                bin_dir.join(bin).display()
            );
        }
        Supervisor {
            api: Api::namespaced(client, ns),
            bin_dir,
            procs: HashMap::new(),
        }
    }

    /// Local ports of a Deployment's processes.
    pub fn ports(&self, deployment: &str) -> Vec<u16> {
        self.procs
            .get(deployment)
            .map(|(_, p)| p.iter().map(|p| p.port).collect())
            .unwrap_or_default()
    }

    /// Names of the Deployments that have processes.
    pub fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .procs
            .iter()
            .filter(|(_, (_, p))| !p.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Brings processes in line with the Deployments and reports readiness.
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=chatflow-operator");
        let deployments = self.api.list(&lp).await?.items;
        let wanted: BTreeMap<String, &Deployment> =
            deployments.iter().map(|d| (d.name_any(), d)).collect();
        self.procs.retain(|name, (_, procs)| {
            if wanted.contains_key(name) {
                return true;
            }
            for p in procs.iter_mut() {
                let _ = p.child.start_kill();
            }
            false
        });
        for (name, d) in &wanted {
            let spec = d.spec.as_ref().expect("deployment spec");
            let container = &spec.template.spec.as_ref().expect("pod spec").containers[0];
            let fingerprint = serde_json::to_string(container)?;
            let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
            let entry = self
                .procs
                .entry(name.clone())
                .or_insert_with(|| (fingerprint.clone(), Vec::new()));
            if entry.0 != fingerprint {
                // A changed pod template replaces every process, as Recreate would.
                for p in entry.1.iter_mut() {
                    let _ = p.child.start_kill();
                }
                entry.1.clear();
                entry.0 = fingerprint;
            }
            entry
                .1
                .retain_mut(|p| matches!(p.child.try_wait(), Ok(None)));
            while entry.1.len() > replicas {
                if let Some(mut p) = entry.1.pop() {
                    let _ = p.child.start_kill();
                }
            }
            while entry.1.len() < replicas {
                let index = entry.1.len();
                entry.1.push(spawn(&self.bin_dir, name, index, container)?);
            }
            let mut ready = 0;
            for p in &entry.1 {
                if is_ready(p.port).await {
                    ready += 1;
                }
            }
            let status = json!({"status": {
                "observedGeneration": d.metadata.generation,
                "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": ready, "availableReplicas": ready,
            }});
            let current = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            if current != ready
                || d.status.as_ref().and_then(|s| s.observed_generation) != d.metadata.generation
            {
                self.api
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
            }
        }
        Ok(())
    }

    /// Stops every process.
    pub fn stop_all(&mut self) {
        for (_, (_, procs)) in self.procs.iter_mut() {
            for p in procs.iter_mut() {
                let _ = p.child.start_kill();
            }
        }
        self.procs.clear();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Expands $(VAR) references against the variables defined before, as the kubelet does.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = value.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

fn spawn(
    bin_dir: &std::path::Path,
    deployment: &str,
    index: usize,
    c: &Container,
) -> anyhow::Result<Proc> {
    let image = c.image.clone().unwrap_or_default();
    let bin = if image.contains("producer") {
        "chatflow-producer"
    } else if image.contains("consumer") {
        "chatflow-consumer"
    } else {
        anyhow::bail!("no local binary for image {image}");
    };
    let pod = format!("{deployment}-local-{index}");
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c.env.clone().unwrap_or_default() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from))
                if from
                    .field_ref
                    .as_ref()
                    .is_some_and(|f| f.field_path == "metadata.name") =>
            {
                pod.clone()
            }
            _ => continue,
        };
        env.push((e.name, value));
    }
    let port = free_port();
    let child = Command::new(bin_dir.join(bin))
        .envs(env)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "RUST_LOG",
            std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok(Proc { child, port })
}

async fn is_ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await, Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200"))
}
