//! Time for a 1,000-room ChatRoomSet to reach QueuesReady, beside a sequential create loop
//! against the same LocalStack in the same run, and the operator's memory while managing it.
//! Needs the test environment: `scripts/testenv.sh run -- cargo bench -p chatflow-operator`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::queue::{QueueAttributes, SharedQueues, SqsConfig, SqsQueues};
use chatflow::rooms::QueueNaming;
use chatflow_operator::desired::QueueLocation;
use chatflow_operator::{ChatRoomSet, OperatorConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

#[global_allocator]
static ALLOC: chatflow::alloc::Counting = chatflow::alloc::Counting;

const ROOMS: u32 = 1000;

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

async fn sqs(endpoint: &str, prefix: &str) -> SharedQueues {
    let config = SqsConfig {
        endpoint: Some(endpoint.into()),
        ..SqsConfig::default()
    };
    Arc::new(
        SqsQueues::connect(&config, QueueNaming::parse(prefix).unwrap())
            .await
            .unwrap(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (Ok(endpoint), Some(_)) = (
        std::env::var("AWS_ENDPOINT_URL"),
        std::env::var_os("KUBECONFIG"),
    ) else {
        println!(
            "queues_ready: skipped (needs the test environment: scripts/testenv.sh run -- cargo bench -p chatflow-operator)"
        );
        return Ok(());
    };
    println!("queues_ready: {ROOMS} rooms against LocalStack at {endpoint}");
    scenario(&endpoint).await?;
    // LocalStack answers from the same machine; a real SQS call crosses a network. The same
    // run through a proxy that adds 20 ms per response shows what concurrency buys there.
    let upstream = endpoint.trim_start_matches("http://").parse()?;
    let proxy = chatflow::testkit::Proxy::with_delay(upstream, Duration::from_millis(20)).await?;
    println!("queues_ready: {ROOMS} rooms through a proxy adding 20 ms per response");
    scenario(&proxy.endpoint()).await
}

async fn scenario(endpoint: &str) -> anyhow::Result<()> {
    let endpoint = endpoint.to_owned();

    // Baseline: one CreateQueue after another, as a naive controller would.
    let seq_prefix = format!("s{}-", uid());
    let seq = sqs(&endpoint, &seq_prefix).await;
    let attrs = QueueAttributes::default();
    let started = Instant::now();
    for room in 1..=ROOMS {
        seq.create_queue(room, &attrs).await?;
    }
    let sequential = started.elapsed();

    // Ceiling: the same creates, 32 at a time, with nothing else going on.
    let par_prefix = format!("p{}-", uid());
    let par = sqs(&endpoint, &par_prefix).await;
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(1..=ROOMS)
        .map(|room| {
            let (par, attrs) = (par.clone(), attrs.clone());
            async move { par.create_queue(room, &attrs).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let concurrent = started.elapsed();

    let client = Client::try_default().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "chatroomsets.chatflow.dev",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(ChatRoomSet::crd()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ns = format!("bench-{}", uid());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let heap_before = chatflow::alloc::live_bytes();
    let operator = chatflow_operator::start(
        OperatorConfig {
            namespace: Some(ns.clone()),
            leader_election: true,
            lease_namespace: ns.clone(),
            lease_name: "chatflow-operator".into(),
            identity: "bench".into(),
            lease_seconds: 15,
            listen_addr: "127.0.0.1:0".parse()?,
            defaults: QueueLocation {
                region: Some("us-east-1".into()),
                endpoint: Some(endpoint.clone()),
            },
            queue_concurrency: 32,
        },
        client.clone(),
    )
    .await?;
    // Timed from a running, leading operator: start-up is not part of reaching QueuesReady.
    while operator.metrics.leader.get() != 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let op_prefix = format!("b{}-", uid());
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let body = json!({
        "apiVersion": "chatflow.dev/v1alpha1", "kind": "ChatRoomSet", "metadata": {"name": "big"},
        "spec": {"rooms": {"start": 1, "end": ROOMS}, "queues": {"prefix": op_prefix, "deletionPolicy": "Delete"},
                 "producer": {"image": "chatflow/producer:bench"},
                 "consumer": {"image": "chatflow/consumer:bench", "roomsPerShard": 50}}
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
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "QueuesReady not reached in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let operator_time = started.elapsed();
    // A resync later, what the operator holds while managing the set.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heap = chatflow::alloc::live_bytes().saturating_sub(heap_before);

    println!(
        "  sequential CreateQueue loop (baseline)  {:>8.2} s",
        sequential.as_secs_f64()
    );
    println!(
        "  concurrent CreateQueue loop, 32 at once {:>8.2} s   ({:.1}x faster; LocalStack's ceiling here)",
        concurrent.as_secs_f64(),
        sequential.as_secs_f64() / concurrent.as_secs_f64()
    );
    println!(
        "  operator to QueuesReady                 {:>8.2} s   ({:.1}x faster)",
        operator_time.as_secs_f64(),
        sequential.as_secs_f64() / operator_time.as_secs_f64()
    );
    println!(
        "  operator heap while managing the set    {:>8.1} MiB",
        heap as f64 / (1024.0 * 1024.0)
    );

    api.delete("big", &DeleteParams::default()).await?;
    while api.get_opt("big").await?.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.shutdown().await;
    for room in 1..=ROOMS {
        seq.delete_queue(room).await?;
        par.delete_queue(room).await?;
    }
    Ok(())
}
