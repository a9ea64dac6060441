//! What the operator benchmarks share: the CRD, a fresh namespace, a leading operator in it, and
//! a 1,000-room set that reaches QueuesReady.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chatflow_operator::desired::QueueLocation;
use chatflow_operator::{ChatRoomSet, OperatorConfig, OperatorHandle};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

/// Rooms of the benchmark set.
pub const ROOMS: u32 = 1000;

/// Eight random hex digits, for names no earlier run used.
pub fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// The test environment's LocalStack endpoint, or None (with a line saying how to get one).
pub fn environment(bench: &str) -> Option<String> {
    match (
        std::env::var("AWS_ENDPOINT_URL"),
        std::env::var_os("KUBECONFIG"),
    ) {
        (Ok(endpoint), Some(_)) => Some(endpoint),
        _ => {
            println!(
                "{bench}: skipped (needs the test environment: cargo xtask testenv run -- cargo bench -p chatflow-operator --bench {bench})"
            );
            None
        }
    }
}

/// Installs the current CRD and makes a namespace of its own for one run.
pub async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "chatroomsets.chatflow.dev",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(ChatRoomSet::crd()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ns = format!("{prefix}-{}", uid());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    Ok(ns)
}

/// An operator for `ns`, over `client`, with queues at `endpoint`, once it leads.
pub async fn operator(client: Client, ns: &str, endpoint: &str) -> anyhow::Result<OperatorHandle> {
    let operator = chatflow_operator::start(
        OperatorConfig {
            namespace: Some(ns.to_owned()),
            leader_election: true,
            lease_namespace: ns.to_owned(),
            lease_name: "chatflow-operator".into(),
            identity: "bench".into(),
            lease_seconds: 15,
            listen_addr: "127.0.0.1:0".parse()?,
            defaults: QueueLocation {
                region: Some("us-east-1".into()),
                endpoint: Some(endpoint.to_owned()),
            },
            queue_concurrency: 32,
            allowed_endpoints: Vec::new(),
            ingress_policy: Default::default(),
        },
        client,
    )
    .await?;
    while operator.metrics.leader.get() != 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(operator)
}

/// Applies the set `big` ([`ROOMS`] rooms, 20 shards) with queue prefix `prefix` and waits
/// until it reports QueuesReady; returns how long that took.
pub async fn big_set_ready(api: &Api<ChatRoomSet>, prefix: &str) -> anyhow::Result<Duration> {
    let body = json!({
        "apiVersion": "chatflow.dev/v1alpha1", "kind": "ChatRoomSet", "metadata": {"name": "big"},
        "spec": {"rooms": {"start": 1, "end": ROOMS}, "queues": {"prefix": prefix, "deletionPolicy": "Delete"},
                 "producer": {"image": "chatflow/producer:bench"},
                 "consumer": {"image": "chatflow/consumer:bench", "roomsPerShard": 50},
                 "auth": {"anonymous": true}}
    });
    let started = Instant::now();
    api.patch(
        "big",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&body),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let crs = api.get("big").await?;
        let ready = crs.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "QueuesReady" && c.status == "True")
        });
        if ready {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "QueuesReady not reached in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes the set `big` (its queues go with it) and waits until it is gone.
pub async fn delete_big_set(api: &Api<ChatRoomSet>) -> anyhow::Result<()> {
    api.delete("big", &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while api.get_opt("big").await?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "set big not deleted in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
