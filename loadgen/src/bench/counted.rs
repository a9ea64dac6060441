//! A queue backend wrapper that counts the billed requests (send, receive, delete) going
//! through it: with SQS, each call of the queue interface is one request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatflow::queue::{
    EntryError, PublishEntry, PublishResult, QueueAttributes, QueueDepth, QueueError, Queues,
    ReceivedMessage, SharedQueues, Tags,
};
use chatflow::rooms::RoomId;

/// Requests made so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// SendMessageBatch calls.
    pub send: u64,
    /// ReceiveMessage calls, empty ones included.
    pub receive: u64,
    /// ReceiveMessage calls that returned nothing.
    pub empty_receive: u64,
    /// DeleteMessageBatch calls.
    pub delete: u64,
}

impl Requests {
    /// Send, receive and delete requests together.
    pub fn total(&self) -> u64 {
        self.send + self.receive + self.delete
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Requests) -> Requests {
        Requests {
            send: self.send - earlier.send,
            receive: self.receive - earlier.receive,
            empty_receive: self.empty_receive - earlier.empty_receive,
            delete: self.delete - earlier.delete,
        }
    }
}

/// Counts the requests made through `inner`.
pub struct Counted {
    inner: SharedQueues,
    send: AtomicU64,
    receive: AtomicU64,
    empty_receive: AtomicU64,
    delete: AtomicU64,
}

impl Counted {
    /// Wraps a backend.
    pub fn new(inner: SharedQueues) -> Self {
        Counted {
            inner,
            send: AtomicU64::new(0),
            receive: AtomicU64::new(0),
            empty_receive: AtomicU64::new(0),
            delete: AtomicU64::new(0),
        }
    }

    /// The counts so far.
    pub fn requests(&self) -> Requests {
        Requests {
            send: self.send.load(Ordering::Relaxed),
            receive: self.receive.load(Ordering::Relaxed),
            empty_receive: self.empty_receive.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Queues for Counted {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn receive_cancel_safe(&self) -> bool {
        self.inner.receive_cancel_safe()
    }

    async fn create_queue_tagged(
        &self,
        room: RoomId,
        attrs: &QueueAttributes,
        tags: &Tags,
    ) -> Result<(), QueueError> {
        self.inner.create_queue_tagged(room, attrs, tags).await
    }

    async fn queue_tags(&self, room: RoomId) -> Result<Tags, QueueError> {
        self.inner.queue_tags(room).await
    }

    async fn tag_queue(&self, room: RoomId, tags: &Tags) -> Result<(), QueueError> {
        self.inner.tag_queue(room, tags).await
    }

    async fn queue_attributes(&self, room: RoomId) -> Result<BTreeMap<String, String>, QueueError> {
        self.inner.queue_attributes(room).await
    }

    async fn set_queue_attributes(
        &self,
        room: RoomId,
        attrs: BTreeMap<String, String>,
    ) -> Result<(), QueueError> {
        self.inner.set_queue_attributes(room, attrs).await
    }

    async fn delete_queue(&self, room: RoomId) -> Result<(), QueueError> {
        self.inner.delete_queue(room).await
    }

    async fn publish(
        &self,
        room: RoomId,
        entries: &[PublishEntry],
    ) -> Result<Vec<PublishResult>, QueueError> {
        self.send.fetch_add(1, Ordering::Relaxed);
        self.inner.publish(room, entries).await
    }

    async fn receive(
        &self,
        room: RoomId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.receive.fetch_add(1, Ordering::Relaxed);
        let got = self.inner.receive(room, max, wait).await;
        if got.as_ref().is_ok_and(Vec::is_empty) {
            self.empty_receive.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    async fn delete_batch(
        &self,
        room: RoomId,
        receipts: &[String],
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.delete.fetch_add(1, Ordering::Relaxed);
        self.inner.delete_batch(room, receipts).await
    }

    async fn depth(&self, room: RoomId) -> Result<QueueDepth, QueueError> {
        self.inner.depth(room).await
    }
}
