//! What a 1,000-room ChatRoomSet costs while nothing changes: SQS requests and Kubernetes API
//! requests per idle minute, once it is Ready. SQS requests are read from LocalStack's request
//! log, API requests counted by a layer on the operator's client.
//! Needs the test environment: `cargo xtask testenv run -- cargo bench -p chatflow-operator --bench idle_calls`.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatflow_operator::ChatRoomSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DeleteParams;
use kube::client::ClientBuilder;
use kube::{Api, Client, Config};
use support::{ROOMS, uid};
const WINDOW: Duration = Duration::from_secs(180);

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// "VERB resource" of an API request path, e.g. "PATCH deployments".
fn api_call(method: &str, path: &str, query: Option<&str>) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // /api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]] or /apis/GROUP/VERSION/namespaces/NS/...
    let rest = match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() > i + 2 => &parts[i + 2..],
        _ => {
            &parts[parts
                .len()
                .min(if parts.first() == Some(&"api") { 2 } else { 3 })..]
        }
    };
    let resource = match rest {
        [r, _, sub, ..] => format!("{r}/{sub}"),
        [r, ..] => (*r).to_owned(),
        [] => path.to_owned(),
    };
    let watch = query.is_some_and(|q| q.contains("watch=true"));
    let verb = match (method, rest.len(), watch) {
        ("GET", _, true) => "WATCH",
        ("GET", 1, _) => "LIST",
        (m, _, _) => m,
    };
    format!("{verb} {resource}")
}

/// SQS operations in LocalStack's log since `skip` lines, by operation.
fn sqs_calls(log: &str, skip: usize) -> (usize, BTreeMap<String, u64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut by_op = BTreeMap::new();
    for line in lines.iter().skip(skip) {
        if let Some(op) = line
            .split("AWS sqs.")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            *by_op.entry(op.to_owned()).or_default() += 1;
        }
    }
    (lines.len(), by_op)
}

fn per_minute(counts: &BTreeMap<String, u64>) -> String {
    let minutes = WINDOW.as_secs_f64() / 60.0;
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("{k} {:.1}", *v as f64 / minutes))
        .collect();
    format!("{:.1}/min ({})", total as f64 / minutes, parts.join(", "))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(endpoint) = support::environment("idle_calls") else {
        return Ok(());
    };
    let cache = std::env::var("CHATFLOW_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/chatflow",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let log = format!("{cache}/logs/localstack.log");

    let plain = Client::try_default().await?;
    let api_counts: Counts = Arc::default();
    let counting = {
        let counts = api_counts.clone();
        tower::util::MapRequestLayer::new(move |req: hyper::Request<kube::client::Body>| {
            let call = api_call(req.method().as_str(), req.uri().path(), req.uri().query());
            *counts.lock().unwrap().entry(call).or_default() += 1;
            req
        })
    };
    let client = ClientBuilder::try_from(Config::infer().await?)?
        .with_layer(&counting)
        .build();

    let ns = support::namespace(&plain, "idle").await?;
    let operator = support::operator(client, &ns, &endpoint).await?;
    let api: Api<ChatRoomSet> = Api::namespaced(plain.clone(), &ns);
    support::big_set_ready(&api, &format!("i{}-", uid())).await?;
    // Settle, then count: only what the operator does to a set that does not change.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (skip, _) = sqs_calls(&log, 0);
    api_counts.lock().unwrap().clear();
    let reconciles_before = operator.metrics.reconciles.get();
    tokio::time::sleep(WINDOW).await;
    let (_, sqs) = sqs_calls(&log, skip);
    let api_calls = api_counts.lock().unwrap().clone();
    let reconciles = operator.metrics.reconciles.get() - reconciles_before;
    println!(
        "idle_calls: {ROOMS} rooms, 20 shards, idle for {} s after QueuesReady",
        WINDOW.as_secs()
    );
    println!(
        "  reconciles  {:.1}/min",
        reconciles as f64 / (WINDOW.as_secs_f64() / 60.0)
    );
    println!("  SQS         {}", per_minute(&sqs));
    println!("  API         {}", per_minute(&api_calls));

    support::delete_big_set(&api).await?;
    operator.shutdown().await;
    Api::<Namespace>::all(plain)
        .delete(&ns, &DeleteParams::default())
        .await?;
    Ok(())
}
