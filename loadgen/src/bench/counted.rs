//! A queue backend wrapper that counts the billed requests (send, receive, delete) going
//! through it: with SQS, each call of the queue interface is one request.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chatflow::queue::{Intercept, Intercepted, QueueError, ReceivedMessage, SharedQueues};
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

/// Counts the requests made through the backend it hooks into ([`counting`]).
#[derive(Default)]
pub struct Counter {
    send: AtomicU64,
    receive: AtomicU64,
    empty_receive: AtomicU64,
    delete: AtomicU64,
}

/// A backend counting its requests: read them with `.hooks().requests()`.
pub type Counted = Intercepted<Counter>;

/// Wraps `inner` so its requests are counted.
pub fn counting(inner: SharedQueues) -> Counted {
    Intercepted::new(inner, Counter::default())
}

impl Counter {
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
impl Intercept for Counter {
    async fn publish(&self, _room: RoomId) -> Result<(), QueueError> {
        self.send.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn received(&self, _room: RoomId, got: &Result<Vec<ReceivedMessage>, QueueError>) {
        self.receive.fetch_add(1, Ordering::Relaxed);
        if got.as_ref().is_ok_and(Vec::is_empty) {
            self.empty_receive.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn delete(&self, _room: RoomId) -> Result<(), QueueError> {
        self.delete.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
