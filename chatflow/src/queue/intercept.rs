//! A queue backend with hooks on its data path (publish, receive, delete), every other call
//! passed through: for counting requests, or for holding or failing calls in tests.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    EntryError, PublishEntry, PublishResult, QueueAttributes, QueueDepth, QueueError, Queues,
    ReceivedMessage, SharedQueues, Tags,
};
use crate::rooms::{QueueNaming, RoomId};

/// What runs around the data-path calls of an [`Intercepted`] backend.
#[async_trait]
pub trait Intercept: Send + Sync + 'static {
    /// Before a publish; an error is returned in its place.
    async fn publish(&self, _room: RoomId) -> Result<(), QueueError> {
        Ok(())
    }

    /// After a receive, with what it returned.
    fn received(&self, _room: RoomId, _got: &Result<Vec<ReceivedMessage>, QueueError>) {}

    /// Before a batch delete; an error is returned in its place.
    async fn delete(&self, _room: RoomId) -> Result<(), QueueError> {
        Ok(())
    }
}

/// `inner` with `hooks` run around its publishes, receives and deletes.
pub struct Intercepted<H> {
    inner: SharedQueues,
    hooks: H,
}

impl<H: Intercept> Intercepted<H> {
    /// Wraps a backend.
    pub fn new(inner: SharedQueues, hooks: H) -> Self {
        Intercepted { inner, hooks }
    }

    /// The hooks, to read what they recorded or to steer them.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }
}

#[async_trait]
impl<H: Intercept> Queues for Intercepted<H> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn naming(&self) -> &QueueNaming {
        self.inner.naming()
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
        self.hooks.publish(room).await?;
        self.inner.publish(room, entries).await
    }

    async fn receive(
        &self,
        room: RoomId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let got = self.inner.receive(room, max, wait).await;
        self.hooks.received(room, &got);
        got
    }

    async fn delete_batch(
        &self,
        room: RoomId,
        receipts: &[String],
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.hooks.delete(room).await?;
        self.inner.delete_batch(room, receipts).await
    }

    async fn depth(&self, room: RoomId) -> Result<QueueDepth, QueueError> {
        self.inner.depth(room).await
    }
}
