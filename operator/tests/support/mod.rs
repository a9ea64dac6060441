//! What the operator's cluster tests share: a client, a namespace per test, an operator in
//! it, sets to apply, and waits on what the operator reports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::queue::{SharedQueues, SqsConfig, SqsQueues};
use chatflow::rooms::QueueNaming;
use chatflow_operator::desired::QueueLocation;
use chatflow_operator::{ChatRoomSet, OperatorConfig, OperatorHandle, start};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;

pub const NEEDS: &str = "needs kube-apiserver and LocalStack: run scripts/test";

pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

pub async fn client() -> Client {
    chatflow::telemetry::init_logging();
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at the test apiserver");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "chatroomsets.chatflow.dev",
        &PatchParams::apply("chatflow-tests").force(),
        &Patch::Apply(ChatRoomSet::crd()),
    )
    .await
    .unwrap();
    wait("CRD established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("chatroomsets.chatflow.dev").await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    client
}

pub async fn namespace(client: &Client) -> String {
    let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
    name
}

/// Deletes a test's namespace: its pods hold the test cluster's CPU requests, which later tiers
/// (the end-to-end run's Jobs) need.
pub async fn drop_namespace(client: &Client, name: &str) {
    let ns: Api<Namespace> = Api::all(client.clone());
    let _ = ns.delete(name, &Default::default()).await;
}

pub async fn operator(
    client: &Client,
    ns: &str,
    identity: &str,
    lease_seconds: u64,
) -> OperatorHandle {
    operator_allowing(client, ns, identity, lease_seconds, Vec::new()).await
}

/// An operator that lets sets name the `allowed` SQS endpoints besides LocalStack's.
pub async fn operator_allowing(
    client: &Client,
    ns: &str,
    identity: &str,
    lease_seconds: u64,
    allowed: Vec<String>,
) -> OperatorHandle {
    let config = OperatorConfig {
        namespace: Some(ns.to_owned()),
        leader_election: true,
        lease_namespace: ns.to_owned(),
        lease_name: "chatflow-operator".into(),
        identity: identity.to_owned(),
        lease_seconds,
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        defaults: QueueLocation {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint()),
        },
        queue_concurrency: 32,
        allowed_endpoints: allowed,
        ingress_policy: Default::default(),
    };
    start(config, client.clone()).await.unwrap()
}

pub fn prefix() -> String {
    format!("o{}-", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub fn set(name: &str, prefix: &str, start: u32, end: u32, per_shard: u32) -> serde_json::Value {
    json!({
        "apiVersion": "chatflow.dev/v1alpha1",
        "kind": "ChatRoomSet",
        "metadata": {"name": name},
        "spec": {
            "rooms": {"start": start, "end": end},
            "queues": {"prefix": prefix, "deletionPolicy": "Delete"},
            "producer": {"image": "chatflow/producer:test", "replicas": 2},
            "consumer": {"image": "chatflow/consumer:test", "roomsPerShard": per_shard},
            "auth": {"anonymous": true},
        }
    })
}

pub async fn apply(
    api: &Api<ChatRoomSet>,
    body: &serde_json::Value,
) -> Result<ChatRoomSet, kube::Error> {
    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
    api.patch(
        &name,
        &PatchParams::apply("chatflow-tests").force(),
        &Patch::Apply(body),
    )
    .await
}

pub async fn wait<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the status describes the current generation and `ok` holds for it.
pub async fn wait_status(
    api: &Api<ChatRoomSet>,
    name: &str,
    what: &str,
    ok: impl Fn(&ChatRoomSet) -> bool,
) -> ChatRoomSet {
    wait(what, Duration::from_secs(60), || async {
        let crs = api.get(name).await.ok()?;
        let status = crs.status.as_ref()?;
        (status.observed_generation == crs.metadata.generation && ok(&crs)).then_some(crs)
    })
    .await
}

pub fn condition(crs: &ChatRoomSet, type_: &str) -> Option<(String, String, String)> {
    crs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub async fn sqs(prefix: &str) -> SharedQueues {
    sqs_named(QueueNaming::parse(prefix).unwrap()).await
}

/// A client for queues named as `naming` says (a layout with buckets, say).
pub async fn sqs_named(naming: QueueNaming) -> SharedQueues {
    let config = SqsConfig {
        endpoint: Some(endpoint()),
        ..SqsConfig::default()
    };
    Arc::new(SqsQueues::connect(&config, naming).await.unwrap())
}

pub async fn consumer_shards(
    client: &Client,
    ns: &str,
    name: &str,
) -> BTreeMap<String, (String, String)> {
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&chatflow_operator::desired::consumer_selector(name));
    d.list(&lp)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let env: BTreeMap<String, String> = d
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .env
                .clone()
                .unwrap()
                .into_iter()
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
            (
                d.name_any(),
                (env["ROOMS_START"].clone(), env["ROOMS_END"].clone()),
            )
        })
        .collect()
}
