//! The project's developer tasks. The main one runs a command inside the test environment: real
//! servers for the test suite, installed from Debian's archive and PyPI and cached:
//!
//! - LocalStack (SQS) on 127.0.0.1:4566 and NODE_IP:4566;
//! - Redis (the history store) on 127.0.0.1:6391 and NODE_IP:6391, with its append-only file;
//! - the Docker daemon (started only if none answers, and then stopped again);
//! - a single-node Kubernetes 1.20 cluster whose kubelet runs pods on Docker: etcd on
//!   127.0.0.1:22379, kube-apiserver on https://NODE_IP:26443, controller-manager, scheduler, the
//!   kubelet on NODE_IP:10250, kube-proxy, dnsmasq (cluster DNS, *.cluster.local only) on
//!   NODE_IP:53; pods in 10.244.0.0/24, Services in 10.96.0.0/24, and pod traffic to anywhere but
//!   those, the Docker bridge and this host dropped; pods can only use locally built images;
//! - Prometheus on 127.0.0.1:9099, scraping annotated pods and evaluating the chart's alert rules.
//!
//! NODE_IP is the Docker bridge's address (172.17.0.1 by default): the host and pods both reach
//! the servers there. The command gets AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY (LocalStack's static test credentials), CHATFLOW_LOCALSTACK=1,
//! CHATFLOW_LOCALSTACK_PID, CHATFLOW_POD_AWS_ENDPOINT, CHATFLOW_REDIS_URL, CHATFLOW_REDIS_PID,
//! CHATFLOW_POD_REDIS_URL, KUBECONFIG (admin), CHATFLOW_KUBE=1,
//! CHATFLOW_CLUSTER=1, CHATFLOW_NODE_IP, CHATFLOW_POD_CIDR, CHATFLOW_SERVICE_CIDR, CHATFLOW_DOCKER
//! and CHATFLOW_PROMETHEUS.
//!
//! Settings (environment): CHATFLOW_CACHE (default ~/.cache/chatflow; the first build of the
//! Kubernetes binaries takes 5-10 min and leaves about 400 MB), CHATFLOW_PYTHON,
//! CHATFLOW_LOCALSTACK_TIMEOUT (120 s), CHATFLOW_DOCKER_TIMEOUT (60 s), CHATFLOW_KUBE_TIMEOUT
//! (180 s per step of the cluster's start), CHATFLOW_PROMETHEUS_PORT (9099), CHATFLOW_REDIS_PORT (6391),
//! CHATFLOW_DEBIAN_MIRROR and CHATFLOW_DEBIAN_SECURITY_MIRROR (default: the ones apt on this
//! machine is configured with).

mod apt;
mod cache;
mod cluster;
mod docker;
mod env;
mod helm;
mod kube_build;
mod localstack;
mod process;
mod prometheus;
mod redis;
mod watch;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Prints a line of the test environment's progress to standard error.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("testenv: {}", format_args!($($arg)*)) };
}

/// The project's developer tasks (`cargo xtask ...`).
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The test environment: LocalStack, Docker, a single-node Kubernetes cluster, Prometheus.
    Testenv {
        #[command(subcommand)]
        action: Testenv,
    },
    /// Prints the path of Helm 3, fetching it into the cache on first use.
    Helm,
    /// Installs the Debian packages behind missing commands (each COMMAND:PACKAGE).
    EnsureCommands {
        /// COMMAND:PACKAGE pairs; COMMAND may be an absolute path.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Prints "MAIN SECURITY": the Debian archives this machine's apt uses.
    DebianMirrors,
    /// Keeps a file in step with the test cluster (run by the test environment).
    #[command(hide = true)]
    Watch {
        #[command(subcommand)]
        what: Watch,
    },
}

#[derive(Debug, Subcommand)]
enum Testenv {
    /// Starts the servers, runs COMMAND with their settings in its environment, stops them.
    Run {
        /// Only LocalStack: for benchmarks, with no cluster competing for the CPU.
        #[arg(long)]
        sqs_only: bool,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Installs everything and fills the cache, starting nothing.
    Install,
}

#[derive(Debug, Subcommand)]
enum Watch {
    /// Cluster DNS: the Services' names into HOSTS_DIR/services.
    Services {
        kubeconfig: PathBuf,
        hosts_dir: PathBuf,
        domain: String,
    },
    /// Prometheus' scrape targets from the annotated pods.
    Pods {
        kubeconfig: PathBuf,
        targets: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.task {
        Task::Testenv {
            action: Testenv::Run { sqs_only, command },
        } => {
            let rules = repo_root().join("charts/chatflow/monitoring/alerts.yaml");
            env::run(sqs_only, &command, &rules)
        }
        Task::Testenv {
            action: Testenv::Install,
        } => env::install().map(|()| ExitCode::SUCCESS),
        Task::Helm => {
            println!("{}", helm::install()?.display());
            Ok(ExitCode::SUCCESS)
        }
        Task::EnsureCommands { pairs } => {
            let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
            apt::ensure_commands(&pairs).map(|()| ExitCode::SUCCESS)
        }
        Task::DebianMirrors => {
            let (main, security) = apt::mirrors();
            println!("{main} {security}");
            Ok(ExitCode::SUCCESS)
        }
        Task::Watch {
            what:
                Watch::Services {
                    kubeconfig,
                    hosts_dir,
                    domain,
                },
        } => watch::run(&kubeconfig.clone(), "services", move || {
            watch::sync_services(&kubeconfig, &hosts_dir, &domain)
        }),
        Task::Watch {
            what: Watch::Pods {
                kubeconfig,
                targets,
            },
        } => watch::run(&kubeconfig.clone(), "pods", move || {
            watch::sync_pods(&kubeconfig, &targets)
        }),
    }
}

/// The repository this program was built from.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
