//! The whole system on the test kube-apiserver and LocalStack: the operator reconciles the kind
//! example, the supervisor runs the Deployments it wrote as local processes, loadgen drives them,
//! and scaling the set starts and stops processes to match.

#[path = "support/supervisor.rs"]
mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::rooms::RoomRange;
use chatflow_loadgen::progress::Progress;
use chatflow_loadgen::report;
use chatflow_loadgen::run::{self, Targets, Workload};
use chatflow_operator::desired::QueueLocation;
use chatflow_operator::{ChatRoomSet, OperatorConfig};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;
use supervisor::Supervisor;
use tokio::sync::Mutex;

fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// The settings shared with scripts/e2e-kind.sh.
fn e2e_env() -> BTreeMap<String, String> {
    std::fs::read_to_string(repo_path("scripts/e2e.env"))
        .expect("scripts/e2e.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

async fn wait_ready(
    api: &Api<ChatRoomSet>,
    name: &str,
    shards: u32,
    sup: &Arc<Mutex<Supervisor>>,
) -> ChatRoomSet {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sup.lock().await.sync().await.expect("supervisor sync");
        let crs = api.get(name).await.expect("set");
        if let Some(s) = &crs.status {
            let ready = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready && s.observed_generation == crs.metadata.generation && s.shard_count == shards
            {
                return crs;
            }
        }
        assert!(
            Instant::now() < deadline,
            "set not Ready with {shards} shards: {:?}",
            crs.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn targets(crs: &ChatRoomSet, sup: &Supervisor) -> Targets {
    let status = crs.status.as_ref().unwrap();
    let producer = &status.producer.as_ref().unwrap().service;
    let ingest = format!("ws://127.0.0.1:{}/chat/{{roomId}}", sup.ports(producer)[0]);
    let routes: Vec<String> = status
        .shards
        .iter()
        .map(|s| {
            format!(
                "{}=ws://127.0.0.1:{}/subscribe/{{roomId}}",
                s.rooms,
                sup.ports(&s.name)[0]
            )
        })
        .collect();
    Targets {
        ingest,
        subscribe: Some(run::subscribe_router(&routes.join(",")).unwrap()),
    }
}

async fn drive(
    targets: &Targets,
    rooms: RoomRange,
    messages: u64,
    env: &BTreeMap<String, String>,
    drain: Duration,
) {
    let w = Workload {
        messages,
        warmup_connections: 0,
        warmup_messages: 0,
        rooms,
        connections_per_room: env["E2E_CONNECTIONS_PER_ROOM"].parse().unwrap(),
        subscribers_per_room: env["E2E_SUBSCRIBERS_PER_ROOM"].parse().unwrap(),
        window: 32,
        drain_timeout: drain,
        ..Workload::default()
    };
    let result = run::execute(targets, &w, &Progress::new(false))
        .await
        .expect("loadgen run");
    let s = report::summarize(&result);
    assert_eq!(s.ok, messages, "every message acknowledged: {:?}", s.errors);
    let v = s.delivery.expect("delivery checked");
    assert!(v.clean() && v.lost == 0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn the_kind_example_serves_end_to_end_and_follows_scaling() {
    chatflow::telemetry::init_logging();
    let env = e2e_env();
    let client = Client::try_default().await.expect("KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "chatroomsets.chatflow.dev",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(ChatRoomSet::crd()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ns = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let operator = chatflow_operator::start(
        OperatorConfig {
            namespace: Some(ns.clone()),
            leader_election: true,
            lease_namespace: ns.clone(),
            lease_name: "chatflow-operator".into(),
            identity: "e2e".into(),
            lease_seconds: 15,
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            defaults: QueueLocation {
                region: Some("us-east-1".into()),
                endpoint: Some(endpoint.clone()),
            },
            queue_concurrency: 32,
        },
        client.clone(),
    )
    .await
    .unwrap();

    // The example as a user applies it, pointed at this machine's LocalStack.
    let yaml = std::fs::read_to_string(repo_path(&env["E2E_EXAMPLE"])).expect("example manifest");
    let mut set: serde_json::Value = serde_yaml::from_str(&yaml).expect("example parses");
    let name = env["E2E_SET_NAME"].clone();
    assert_eq!(set["metadata"]["name"], name.as_str());
    set["metadata"]["namespace"] = ns.clone().into();
    set["spec"]["queues"]["endpoint"] = endpoint.into();
    set["spec"]["queues"]["prefix"] =
        format!("e2e{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]).into();
    set["spec"]["queues"]["deletionPolicy"] = "Delete".into();
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&set),
    )
    .await
    .unwrap();

    let rooms: RoomRange = env["E2E_ROOMS"].parse().unwrap();
    let per_shard: u32 = set["spec"]["consumer"]["roomsPerShard"].as_u64().unwrap() as u32;
    let sup = Arc::new(Mutex::new(Supervisor::new(client.clone(), &ns)));
    let crs = wait_ready(
        &api,
        &name,
        rooms.shards(per_shard).unwrap().len() as u32,
        &sup,
    )
    .await;
    let t = targets(&crs, &*sup.lock().await).await;
    drive(
        &t,
        rooms,
        env["E2E_MESSAGES"].parse().unwrap(),
        &env,
        Duration::from_secs(15),
    )
    .await;

    // Fewer, larger shards: new processes for the new shards, the old ones stopped.
    let scaled: u32 = env["E2E_SCALED_ROOMS_PER_SHARD"].parse().unwrap();
    let patch = json!({"spec": {"consumer": {"roomsPerShard": scaled}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let shards = rooms.shards(scaled).unwrap();
    let crs = wait_ready(&api, &name, shards.len() as u32, &sup).await;
    let running = sup.lock().await.running();
    let mut want: Vec<String> = shards
        .iter()
        .map(|r| format!("{name}-consumer-{}-{}", r.start(), r.end()))
        .collect();
    want.push(format!("{name}-producer"));
    want.sort();
    assert_eq!(running, want, "processes follow the shards");
    let t = targets(&crs, &*sup.lock().await).await;
    // A stopped shard's cut-short long poll can still take messages on the queue side; they
    // come back after the visibility timeout (30 s), so the wait for deliveries covers it.
    drive(&t, rooms, 2_000, &env, Duration::from_secs(45)).await;

    // Processes first, so none polls a queue the deletion removes.
    sup.lock().await.stop_all();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt(&name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "set not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.shutdown().await;
}
