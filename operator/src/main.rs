//! chatflow-operator: parse configuration, connect to Kubernetes, reconcile until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use chatflow_operator::desired::QueueLocation;
use chatflow_operator::desired::ingress::IngressPolicy;
use chatflow_operator::{OperatorConfig, start};
use clap::Parser;

/// ChatFlow operator.
#[derive(Debug, Parser)]
#[command(name = "chatflow-operator", version, about)]
struct Args {
    /// Namespace to watch (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Hold a coordination Lease before reconciling, so only one replica acts.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "chatflow-operator")]
    lease_name: String,
    /// Identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, env = "LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_seconds: u64,
    /// Address of /health, /ready and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8090")]
    listen_addr: SocketAddr,
    /// Region for sets that name none.
    #[arg(long, env = "AWS_REGION")]
    aws_region: Option<String>,
    /// SQS endpoint for sets that name none (LocalStack).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// Queue calls in flight at once per set.
    #[arg(long, env = "QUEUE_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=512))]
    queue_concurrency: u64,
    /// SQS endpoints a ChatRoomSet may name in spec.queues.endpoint besides AWS_ENDPOINT_URL
    /// (comma-separated); a set naming another one is refused.
    #[arg(long, env = "ALLOWED_SQS_ENDPOINTS", value_delimiter = ',')]
    allowed_sqs_endpoints: Vec<String>,
    /// Hosts a set's spec.ingress may name (comma-separated: exact, `*.example.com`, or `*`).
    #[arg(
        long,
        env = "ALLOWED_INGRESS_HOSTS",
        value_delimiter = ',',
        default_value = "*"
    )]
    allowed_ingress_hosts: Vec<String>,
    /// Annotation keys a set's spec.ingress may carry (comma-separated: exact, or prefixes
    /// ending in `/` or `-`); unset: timeouts, stickiness and TLS of ALB, nginx, cert-manager.
    #[arg(long, env = "ALLOWED_INGRESS_ANNOTATIONS", value_delimiter = ',')]
    allowed_ingress_annotations: Option<Vec<String>>,
}

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "operator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let identity = args
        .identity
        .unwrap_or_else(|| format!("chatflow-operator-{}", std::process::id()));
    let config = OperatorConfig {
        namespace: args.watch_namespace,
        leader_election: args.leader_election,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_seconds: args.lease_seconds,
        listen_addr: args.listen_addr,
        defaults: QueueLocation {
            region: args.aws_region,
            endpoint: args.aws_endpoint_url,
        },
        queue_concurrency: args.queue_concurrency as usize,
        allowed_endpoints: args
            .allowed_sqs_endpoints
            .into_iter()
            .filter(|e| !e.trim().is_empty())
            .collect(),
        ingress_policy: IngressPolicy {
            hosts: args.allowed_ingress_hosts,
            annotations: args
                .allowed_ingress_annotations
                .unwrap_or_else(|| IngressPolicy::default().annotations),
        },
    };
    let operator = start(config, client).await?;
    chatflow::telemetry::shutdown_signal().await;
    tracing::info!("shutdown signal received");
    operator.shutdown().await;
    Ok(())
}
