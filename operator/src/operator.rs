//! The running operator: leader election, the controller while leading, and the HTTP endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatflow::about::Info;
use chatflow::http;
use chatflow::router::Router;
use futures::{FutureExt, StreamExt};
use hyper::StatusCode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::crd::ChatRoomSet;
use crate::desired::ingress::IngressPolicy;
use crate::desired::{FIELD_MANAGER, QueueLocation};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Stores, error_policy, reconcile};

/// How the operator runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OperatorConfig {
    /// Namespace to watch; all namespaces when None.
    pub namespace: Option<String>,
    /// Whether to hold a Lease before reconciling.
    pub leader_election: bool,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Seconds a lease is valid without renewal.
    pub lease_seconds: u64,
    /// Health, readiness and metrics address.
    pub listen_addr: SocketAddr,
    /// Queue region and endpoint for sets that name none.
    pub defaults: QueueLocation,
    /// Queue calls in flight at once per set.
    pub queue_concurrency: usize,
    /// SQS endpoints a spec may name besides the default one.
    pub allowed_endpoints: Vec<String>,
    /// Hosts and annotations a spec's Ingress may use.
    pub ingress_policy: IngressPolicy,
}

/// A running operator.
pub struct OperatorHandle {
    /// Where /health, /ready and /metrics are served.
    pub addr: SocketAddr,
    /// Metrics (tests read them directly).
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl OperatorHandle {
    /// Stops reconciling, releases the lease, and waits.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts the operator.
pub async fn start(config: OperatorConfig, client: Client) -> anyhow::Result<OperatorHandle> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let info = Info::new(
        "operator",
        serde_json::to_value(&config).expect("config serializes"),
    );
    let listener = TcpListener::bind(config.listen_addr).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let leading = Arc::new(AtomicBool::new(!config.leader_election));
    // A standby replica is ready (the router's `/ready` with no endpoints): it serves its
    // endpoints and waits for the lease.
    let router = Router::new(registry, info).route("/leader", {
        let leading = leading.clone();
        move || {
            http::text(
                StatusCode::OK,
                format!("{}\n", leading.load(Ordering::Relaxed)),
            )
        }
    });
    tokio::spawn(router.serve(listener, shutdown.clone()));
    let ctx = Arc::new({
        let mut c = Context::new(
            client.clone(),
            metrics.clone(),
            config.defaults.clone(),
            &config.identity,
        );
        c.queue_concurrency = config.queue_concurrency;
        c.allowed_endpoints = config.allowed_endpoints.clone();
        c.ingress_policy = config.ingress_policy.clone();
        c
    });
    let task = tokio::spawn(lead_and_run(config, client, ctx, leading, shutdown.clone()));
    Ok(OperatorHandle {
        addr,
        metrics,
        shutdown,
        task,
    })
}

async fn lead_and_run(
    config: OperatorConfig,
    client: Client,
    ctx: Arc<Context>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    if !config.leader_election {
        run_controller(&config, client, ctx, shutdown).await;
        return;
    }
    loop {
        let manager = match LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.lease_namespace)
            .with_identity(&config.identity)
            .with_field_manager(format!("{FIELD_MANAGER}-{}", config.identity))
            .with_duration(config.lease_seconds)
            .with_grace((config.lease_seconds / 3).max(1))
            .build()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "lease manager not ready; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        let (mut is_leader, lease_task) = manager.watch().await;
        loop {
            while !*is_leader.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        drop(is_leader);
                        let _ = lease_task.await;
                        return;
                    }
                    changed = is_leader.changed() => if changed.is_err() { break; },
                }
            }
            if is_leader.has_changed().is_err() {
                break;
            }
            tracing::info!(identity = %config.identity, "leader lease acquired: reconciling");
            leading.store(true, Ordering::Relaxed);
            ctx.metrics.leader.set(1);
            let term = shutdown.child_token();
            let watch_term = {
                let term = term.clone();
                let mut rx = is_leader.clone();
                tokio::spawn(async move {
                    while *rx.borrow_and_update() {
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                    term.cancel();
                })
            };
            run_controller(&config, client.clone(), ctx.clone(), term).await;
            watch_term.abort();
            leading.store(false, Ordering::Relaxed);
            ctx.metrics.leader.set(0);
            if shutdown.is_cancelled() {
                // Dropping the receiver makes the lease task release the lease for a fast handover.
                drop(is_leader);
                let _ = lease_task.await;
                return;
            }
            tracing::warn!("leader lease lost: stopped reconciling");
        }
        // The lease task ended (API trouble): build a new manager.
        let _ = lease_task.await;
    }
}

async fn run_controller(
    config: &OperatorConfig,
    client: Client,
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = &config.namespace;
    let managed = format!("app.kubernetes.io/managed-by={FIELD_MANAGER}");
    let owned = watcher::Config::default().labels(&managed);
    // Watch caches the reconciler reads instead of listing on every reconcile.
    let (deployments, deployments_writer) = reflector::store();
    let (services, services_writer) = reflector::store();
    let caches_stop = stop.child_token();
    let until_stop = |cache| tokio::spawn(caches_stop.clone().run_until_cancelled_owned(cache));
    let caches = [
        until_stop(
            reflect(
                api::<Deployment>(&client, ns),
                owned.clone(),
                deployments_writer,
            )
            .boxed(),
        ),
        until_stop(reflect(api::<Service>(&client, ns), owned.clone(), services_writer).boxed()),
    ];
    let stores = Stores {
        deployments,
        services,
    };
    let ready = async {
        let _ = stores.deployments.wait_until_ready().await;
        let _ = stores.services.wait_until_ready().await;
    };
    let waiting = async {
        // A watch that never syncs (RBAC, an unreachable API) would leave a leader that never
        // reconciles: say so until it does.
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            tracing::error!(
                waited_s = started.elapsed().as_secs(),
                "owned-object caches not synced: not reconciling yet (check the watch errors above)"
            );
        }
    };
    let synced = tokio::select! {
        _ = ready => true,
        _ = waiting => false,
        _ = stop.cancelled() => false,
    };
    if !synced {
        caches_stop.cancel();
        return;
    }
    ctx.set_stores(Some(stores));
    Controller::new(api::<ChatRoomSet>(&client, ns), watcher::Config::default())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    // An object that was deleted before its reconcile is not news.
                    kube::runtime::controller::Error::ObjectNotFound(_) => {
                        tracing::debug!(error = %e, "controller event")
                    }
                    _ => tracing::warn!(error = %e, "controller error"),
                }
            }
        })
        .await;
    ctx.set_stores(None);
    caches_stop.cancel();
    for cache in caches {
        let _ = cache.await;
    }
}

/// Keeps `writer`'s cache of `api`'s objects matching `config` current until dropped.
async fn reflect<K>(api: Api<K>, config: watcher::Config, writer: reflector::store::Writer<K>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflector(writer, watcher(api, config))
        .default_backoff()
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "owned-object cache: watch error");
            }
        })
        .await;
}
