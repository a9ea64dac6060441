//! What the benchmarks over SQS share: the endpoint, optionally behind a proxy that delays every
//! response as a remote SQS would, and one run of the whole pipeline on fresh queues with the
//! SQS requests it made.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatflow::rooms::{Layout, RoomRange};
use chatflow_consumer::ConsumerConfig;
use chatflow_producer::ProducerConfig;
use chatflow_testkit::Proxy;

use super::counted::{Requests, counting};
use crate::local::{LocalSystem, run_queues};
use crate::progress::Progress;
use crate::report::Summary;
use crate::run::{self, Workload};

/// The SQS endpoint the benchmark uses; the proxy in front of it, when there is one, lives as
/// long as this does.
pub struct Endpoint {
    /// URL to give the clients.
    pub url: String,
    _proxy: Option<Proxy>,
}

impl Endpoint {
    /// `sqs_endpoint` as it is (`delay_ms` 0), or behind a proxy that delivers every response
    /// `delay_ms` late.
    pub async fn new(sqs_endpoint: &str, delay_ms: u64) -> anyhow::Result<Self> {
        if delay_ms == 0 {
            return Ok(Endpoint {
                url: sqs_endpoint.to_owned(),
                _proxy: None,
            });
        }
        let upstream: SocketAddr = sqs_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .context("--proxy-delay-ms needs an http://IP:PORT endpoint")?;
        let proxy = Proxy::with_delay(upstream, Duration::from_millis(delay_ms)).await?;
        Ok(Endpoint {
            url: proxy.endpoint(),
            _proxy: Some(proxy),
        })
    }

    /// How the endpoint is described in a benchmark's first line.
    pub fn describe(sqs_endpoint: &str, delay_ms: u64) -> String {
        match delay_ms {
            0 => sqs_endpoint.to_owned(),
            ms => format!("{sqs_endpoint} (+{ms} ms per response)"),
        }
    }
}

/// One pipeline run: its summary and the SQS requests it made.
pub struct PipelineRun {
    /// What the load generator measured.
    pub summary: Summary,
    /// Requests to SQS during the measured run.
    pub requests: Requests,
}

/// Runs `workload` through a producer and a consumer configured as given, over new queues at
/// `endpoint` laid out as their `queue_bucket_rooms` says, counting the SQS requests.
pub async fn pipeline(
    endpoint: &str,
    rooms: RoomRange,
    producer: ProducerConfig,
    consumer: ConsumerConfig,
    workload: &Workload,
    progress: bool,
) -> anyhow::Result<PipelineRun> {
    let layout = Layout::with_bucket_rooms(producer.queue.queue_bucket_rooms);
    let counted = Arc::new(counting(Arc::new(run_queues(endpoint, layout).await?)));
    let system =
        LocalSystem::start_configured(rooms, counted.clone(), true, producer, consumer).await?;
    let before = counted.hooks().requests();
    let result = run::execute(&system.targets(), workload, &Progress::new(progress)).await;
    let requests = counted.hooks().requests().since(&before);
    system.stop().await;
    Ok(PipelineRun {
        summary: crate::report::summarize(&result?),
        requests,
    })
}
