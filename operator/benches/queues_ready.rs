//! Time for a 1,000-room ChatRoomSet to reach QueuesReady, beside a sequential create loop
//! against the same LocalStack in the same run, and the operator's memory while managing it.
//! Needs the test environment: `cargo xtask testenv run -- cargo bench -p chatflow-operator`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::queue::{QueueAttributes, SharedQueues, SqsConfig, SqsQueues};
use chatflow::rooms::QueueNaming;
use chatflow_operator::ChatRoomSet;
use futures::StreamExt;
use kube::{Api, Client};
use support::{ROOMS, uid};

#[global_allocator]
static ALLOC: chatflow_testkit::alloc::Counting = chatflow_testkit::alloc::Counting;

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
    let Some(endpoint) = support::environment("queues_ready") else {
        return Ok(());
    };
    println!("queues_ready: {ROOMS} rooms against LocalStack at {endpoint}");
    scenario(&endpoint).await?;
    // LocalStack answers from the same machine; a real SQS call crosses a network. The same
    // run through a proxy that adds 20 ms per response shows what concurrency buys there.
    let upstream = endpoint.trim_start_matches("http://").parse()?;
    let proxy = chatflow_testkit::Proxy::with_delay(upstream, Duration::from_millis(20)).await?;
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
    let ns = support::namespace(&client, "bench").await?;
    let heap_before = chatflow_testkit::alloc::live_bytes();
    // Timed from a running, leading operator: start-up is not part of reaching QueuesReady.
    let operator = support::operator(client.clone(), &ns, &endpoint).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let operator_time = support::big_set_ready(&api, &format!("b{}-", uid())).await?;
    // A resync later, what the operator holds while managing the set.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heap = chatflow_testkit::alloc::live_bytes().saturating_sub(heap_before);

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

    support::delete_big_set(&api).await?;
    operator.shutdown().await;
    for room in 1..=ROOMS {
        seq.delete_queue(room).await?;
        par.delete_queue(room).await?;
    }
    Ok(())
}
