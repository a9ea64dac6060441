//! The whole pipeline in one process: producer and consumer on loopback over one queue backend.

use std::sync::Arc;
use std::time::Duration;

use chatflow::envelope::Packing;
use chatflow::queue::{EmbeddedQueues, QueueError, SharedQueues, SqsConfig, SqsQueues};
use chatflow::rooms::{Layout, QueueNaming, RoomRange};
use chatflow_consumer::{ConsumerConfig, ConsumerHandle};
use chatflow_producer::{ProducerConfig, ProducerHandle};

use crate::run::Targets;

/// A producer and a consumer started in this process.
pub struct LocalSystem {
    /// The ingest tier.
    pub producer: ProducerHandle,
    /// The fan-out tier.
    pub consumer: ConsumerHandle,
    /// Their queues.
    pub queues: SharedQueues,
    rooms: RoomRange,
    owned_queues: bool,
}

/// Why the local system did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Queue set-up failed.
    #[error("queue set-up failed: {0}")]
    Queue(#[from] QueueError),
    /// The producer did not start.
    #[error("producer: {0}")]
    Producer(chatflow::service::StartError),
    /// The consumer did not start.
    #[error("consumer: {0}")]
    Consumer(chatflow::service::StartError),
}

impl LocalSystem {
    /// Starts both tiers for `rooms`, on embedded queues or, with an endpoint, on SQS
    /// (queues named for this run, created now and deleted by [`LocalSystem::stop`]).
    pub async fn start(rooms: RoomRange, sqs_endpoint: Option<String>) -> Result<Self, LocalError> {
        let (queues, owned_queues): (SharedQueues, bool) = match sqs_endpoint {
            None => (Arc::new(EmbeddedQueues::default()), false),
            Some(endpoint) => (
                Arc::new(run_queues(&endpoint, Layout::PerRoom).await?),
                true,
            ),
        };
        Self::start_on(rooms, queues, owned_queues, Packing::default()).await
    }

    /// Starts both tiers for `rooms` on `queues`, the producer packing as told; with
    /// `owned_queues` the rooms' queues are deleted by [`LocalSystem::stop`].
    pub async fn start_on(
        rooms: RoomRange,
        queues: SharedQueues,
        owned_queues: bool,
        packing: Packing,
    ) -> Result<Self, LocalError> {
        let mut producer_config = ProducerConfig::local(rooms.start(), rooms.end());
        producer_config.packing = packing;
        Self::start_with(rooms, queues, owned_queues, producer_config).await
    }

    /// Starts both tiers for `rooms` on `queues` with the producer configured as given.
    pub async fn start_with(
        rooms: RoomRange,
        queues: SharedQueues,
        owned_queues: bool,
        producer_config: ProducerConfig,
    ) -> Result<Self, LocalError> {
        let consumer_config = ConsumerConfig::local(rooms.start(), rooms.end());
        Self::start_configured(
            rooms,
            queues,
            owned_queues,
            producer_config,
            consumer_config,
        )
        .await
    }

    /// Starts both tiers for `rooms` on `queues`, each configured as given.
    pub async fn start_configured(
        rooms: RoomRange,
        queues: SharedQueues,
        owned_queues: bool,
        producer_config: ProducerConfig,
        consumer_config: ConsumerConfig,
    ) -> Result<Self, LocalError> {
        chatflow::queue::ensure_rooms(queues.as_ref(), rooms).await?;
        let producer = chatflow_producer::start(producer_config, queues.clone())
            .await
            .map_err(LocalError::Producer)?;
        let consumer = chatflow_consumer::start(consumer_config, queues.clone())
            .await
            .map_err(LocalError::Consumer)?;
        Ok(LocalSystem {
            producer,
            consumer,
            queues,
            rooms,
            owned_queues,
        })
    }

    /// URL templates of the two tiers.
    pub fn targets(&self) -> Targets {
        let sub = self.consumer.addr;
        Targets {
            ingest: format!("ws://{}/chat/{{roomId}}", self.producer.addr),
            subscribe: Some(Arc::new(move |room| format!("ws://{sub}/subscribe/{room}"))),
            credentials: None,
        }
    }

    /// Drains and stops both tiers; deletes the run's SQS queues.
    pub async fn stop(self) {
        self.producer.shutdown().await;
        self.consumer.shutdown().await;
        if self.owned_queues {
            for room in self.queues.naming().queue_keys(self.rooms) {
                if let Err(e) = self.queues.delete_queue(room).await {
                    tracing::warn!(room, error = %e, "could not delete a run queue");
                }
            }
        }
    }
}

/// An SQS client whose queue names are unique to this run.
pub async fn run_queues(endpoint: &str, layout: Layout) -> Result<SqsQueues, QueueError> {
    let prefix = format!("lg{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Load generator runs count rooms from 1.
    let naming = QueueNaming::parse(&prefix)
        .expect("generated prefix is valid")
        .with_layout(layout, 1);
    let config = SqsConfig {
        endpoint: Some(endpoint.to_owned()),
        call_timeout: Duration::from_secs(10),
        ..SqsConfig::default()
    };
    SqsQueues::connect(&config, naming).await
}
