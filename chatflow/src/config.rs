//! Command-line and environment options every service shares: rooms and the queue backend.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::queue::{EmbeddedQueues, QueueError, SharedQueues, SqsConfig, SqsQueues};
use crate::rooms::{Layout, QueueNaming, RoomError, RoomRange};

/// Which queue service holds the room queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Amazon SQS or LocalStack.
    Sqs,
    /// In-process queues (single process only).
    Embedded,
}

/// Rooms served and where their queues live.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct QueueOptions {
    /// First room served.
    #[arg(long, env = "ROOMS_START", default_value_t = 1)]
    pub rooms_start: u32,
    /// Last room served.
    #[arg(long, env = "ROOMS_END", default_value_t = 20)]
    pub rooms_end: u32,
    /// Queue backend.
    #[arg(long, env = "QUEUE_BACKEND", value_enum, default_value = "sqs")]
    pub queue_backend: Backend,
    /// Queue-name prefix, or a full queue-URL prefix (https://sqs.REGION.amazonaws.com/ACCOUNT/chatflow-).
    #[arg(long, env = "SQS_QUEUE_URL_PREFIX", default_value = crate::rooms::DEFAULT_PREFIX)]
    pub queue_prefix: String,
    /// SQS endpoint override (LocalStack); AWS's regional endpoint otherwise.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// AWS region; the default AWS chain otherwise.
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Rooms per FIFO queue: 0 or 1 gives every room a queue of its own; N lays blocks of N
    /// consecutive rooms, counted from ROOMS_START, onto one queue and message group, so quiet
    /// rooms share envelopes, sends, receives and deletes. Producers and consumers of a set
    /// must agree on it, and consumers must start on a bucket boundary.
    #[arg(long, env = "QUEUE_BUCKET_ROOMS", default_value_t = 0)]
    pub queue_bucket_rooms: u32,
    /// Upper bound on one queue call (long polls get their wait on top), in milliseconds.
    #[arg(long, env = "QUEUE_CALL_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    pub queue_call_timeout_ms: u64,
}

/// Why the queue options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueOptionsError {
    /// Bad rooms or prefix.
    #[error(transparent)]
    Rooms(#[from] RoomError),
    /// The queue client could not be built.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl QueueOptions {
    /// The validated room range.
    pub fn rooms(&self) -> Result<RoomRange, RoomError> {
        RoomRange::new(self.rooms_start, self.rooms_end)
    }

    /// The validated queue naming; every room of the range gets a valid name.
    pub fn naming(&self) -> Result<QueueNaming, RoomError> {
        let rooms = self.rooms()?;
        let naming = QueueNaming::parse(&self.queue_prefix)?.with_layout(
            Layout::with_bucket_rooms(self.queue_bucket_rooms),
            rooms.start(),
        );
        naming.check_range(rooms)?;
        Ok(naming)
    }

    /// Builds the configured backend.
    pub async fn connect(&self) -> Result<SharedQueues, QueueOptionsError> {
        let naming = self.naming()?;
        Ok(match self.queue_backend {
            Backend::Embedded => {
                // Nothing else creates the queues of a process's own memory.
                let queues: SharedQueues = Arc::new(EmbeddedQueues::new(naming));
                crate::queue::ensure_rooms(queues.as_ref(), self.rooms()?).await?;
                queues
            }
            Backend::Sqs => {
                let config = SqsConfig {
                    endpoint: self.aws_endpoint_url.clone(),
                    region: self.aws_region.clone(),
                    call_timeout: Duration::from_millis(self.queue_call_timeout_ms),
                    ..SqsConfig::default()
                };
                Arc::new(SqsQueues::connect(&config, naming).await?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        queue: QueueOptions,
    }

    #[tokio::test]
    async fn an_embedded_backend_starts_with_every_room_queue_in_place() {
        let cli = Cli::parse_from([
            "test",
            "--queue-backend",
            "embedded",
            "--rooms-start",
            "3",
            "--rooms-end",
            "5",
        ]);
        let queues = cli.queue.connect().await.unwrap();
        for room in 3..=5 {
            assert!(queues.depth(room).await.is_ok(), "room {room} has no queue");
        }
        assert!(
            queues.depth(6).await.is_err(),
            "room 6 is outside the range"
        );
    }
}
