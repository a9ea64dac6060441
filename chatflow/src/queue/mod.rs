//! The FIFO queue layer: one interface, two backends (`sqs` for LocalStack and AWS, `embedded`
//! for zero-setup local runs and tests).

mod embedded;
mod intercept;
mod owned;
mod sqs;
mod sqs_errors;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use embedded::EmbeddedQueues;
pub use intercept::{Intercept, Intercepted};
pub use owned::{Deletion, OWNER_TAG, delete_owned, ensure_owned};
pub use sqs::{SqsConfig, SqsQueues};
pub use types::{
    BodyFormat, Ensured, EntryError, FORMAT_ATTRIBUTE, PublishEntry, PublishResult,
    QueueAttributes, QueueDepth, QueueError, ReceivedMessage,
};

use crate::rooms::{QueueNaming, RoomId, RoomRange};

/// Most entries SQS takes in one batch call, and most messages one receive returns.
pub const MAX_BATCH: usize = 10;

/// Longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Queue tags, by key.
pub type Tags = BTreeMap<String, String>;

/// A shared handle to a queue backend.
pub type SharedQueues = Arc<dyn Queues>;

/// Per-room FIFO queues, whichever service holds them.
#[async_trait]
pub trait Queues: Send + Sync + 'static {
    /// Backend name for logs and metrics.
    fn backend(&self) -> &'static str;

    /// How rooms map to queues: with buckets, calls for rooms of one bucket reach one queue.
    fn naming(&self) -> &QueueNaming;

    /// Creates the room's queue carrying `tags`; succeeds when it exists with the same
    /// attributes (its tags are left as they are), fails with [`QueueError::AlreadyExists`] when
    /// it exists with different ones.
    async fn create_queue_tagged(
        &self,
        room: RoomId,
        attrs: &QueueAttributes,
        tags: &Tags,
    ) -> Result<(), QueueError>;

    /// [`Queues::create_queue_tagged`] without tags.
    async fn create_queue(&self, room: RoomId, attrs: &QueueAttributes) -> Result<(), QueueError> {
        self.create_queue_tagged(room, attrs, &Tags::new()).await
    }

    /// The queue's tags.
    async fn queue_tags(&self, room: RoomId) -> Result<Tags, QueueError>;

    /// Adds tags to the queue, replacing the values of keys it already has.
    async fn tag_queue(&self, room: RoomId, tags: &Tags) -> Result<(), QueueError>;

    /// The queue's current attributes, by SQS attribute name.
    async fn queue_attributes(&self, room: RoomId) -> Result<BTreeMap<String, String>, QueueError>;

    /// Changes mutable attributes of an existing queue.
    async fn set_queue_attributes(
        &self,
        room: RoomId,
        attrs: BTreeMap<String, String>,
    ) -> Result<(), QueueError>;

    /// Deletes the room's queue; a queue that is already gone is not an error.
    async fn delete_queue(&self, room: RoomId) -> Result<(), QueueError>;

    /// Publishes up to [`MAX_BATCH`] entries; one result per entry, in entry order.
    async fn publish(
        &self,
        room: RoomId,
        entries: &[PublishEntry],
    ) -> Result<Vec<PublishResult>, QueueError>;

    /// Whether dropping an unfinished [`Queues::receive`] leaves every message in the queue. A
    /// remote long poll, once sent, takes what arrives even when nobody reads the answer, and
    /// those messages stay hidden for the visibility timeout.
    fn receive_cancel_safe(&self) -> bool {
        false
    }

    /// Whether a publish completes in memory, never waiting on a peer: a producer then
    /// publishes from the connection that read the messages, with no batcher in between.
    fn publishes_in_place(&self) -> bool {
        false
    }

    /// Long-polls for up to `max` messages, waiting at most `wait` when none is available.
    async fn receive(
        &self,
        room: RoomId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes received messages by receipt handle; one result per handle, in order.
    async fn delete_batch(
        &self,
        room: RoomId,
        receipts: &[String],
    ) -> Result<Vec<Result<(), EntryError>>, QueueError>;

    /// Approximate number of visible and in-flight messages.
    async fn depth(&self, room: RoomId) -> Result<QueueDepth, QueueError>;

    /// Creates the queue, or brings an existing one's attributes back to `attrs`.
    async fn ensure_queue(
        &self,
        room: RoomId,
        attrs: &QueueAttributes,
    ) -> Result<Ensured, QueueError> {
        match self.create_queue(room, attrs).await {
            Ok(()) => Ok(Ensured::Ready),
            Err(QueueError::AlreadyExists { .. }) => {
                let current = self.queue_attributes(room).await?;
                let drifted = attrs.drift(&current);
                if drifted.is_empty() {
                    return Ok(Ensured::Ready);
                }
                let keys: Vec<String> = drifted.keys().cloned().collect();
                self.set_queue_attributes(room, drifted).await?;
                Ok(Ensured::Repaired(keys))
            }
            Err(err) => Err(err),
        }
    }
}

/// Refuses an empty batch or one larger than [`MAX_BATCH`], as SQS does, in both backends.
fn check_batch(len: usize) -> Result<(), QueueError> {
    if len == 0 || len > MAX_BATCH {
        return Err(QueueError::Invalid(format!(
            "a batch holds 1 to {MAX_BATCH} entries, got {len}"
        )));
    }
    Ok(())
}

/// Creates (or repairs) the queue of every room of the range with default attributes, 16 calls
/// at a time.
pub async fn ensure_rooms(queues: &dyn Queues, rooms: RoomRange) -> Result<(), QueueError> {
    let attrs = QueueAttributes::default();
    let ids = queues.naming().queue_keys(rooms);
    for chunk in ids.chunks(16) {
        let results =
            futures::future::join_all(chunk.iter().map(|room| queues.ensure_queue(*room, &attrs)))
                .await;
        for r in results {
            r?;
        }
    }
    Ok(())
}
