//! In-process FIFO queues with SQS FIFO semantics: message groups, in-flight group locking,
//! a deduplication window that outlives deletes, visibility timeouts and long polls.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

mod dedup;
mod state;

use state::{QueueState, delete_one, publish_one};

use super::{
    EntryError, MAX_BATCH, PublishEntry, PublishResult, QueueAttributes, QueueDepth, QueueError,
    Queues, ReceivedMessage, Tags,
};
use crate::rooms::{QueueNaming, RoomId};

/// How long SQS remembers a deduplication id.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Most deduplication ids one embedded queue remembers; the oldest half goes at once when it is
/// reached. SQS has no such bound; here it keeps memory flat under load (five minutes at 100,000
/// msg/s would be 30 million ids), and a table that stops growing stops pausing the publisher to
/// grow.
pub const DEDUP_MAX_IDS: usize = 100_000;

/// Embedded queues, one per room, named as SQS would name them.
#[derive(Default)]
pub struct EmbeddedQueues {
    naming: QueueNaming,
    /// By room: one naming per set makes a room and its queue's name stand for each other, and
    /// a number is cheaper to look up on every call than a name built for it. Read on every
    /// call, written only to create or delete a queue, so publishers on every thread look up at
    /// once.
    queues: RwLock<HashMap<RoomId, Arc<QueueCell>>>,
}

struct QueueCell {
    name: String,
    state: Mutex<QueueState>,
    /// Woken when a message may have become receivable.
    ready: Notify,
    /// Receives waiting on `ready`: with none, a publish skips the wake-up and its lock.
    waiting: AtomicUsize,
}

/// Counts one receive as waiting for as long as it lives, dropped half done or not.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EmbeddedQueues {
    /// Empty set of queues named by `naming`.
    pub fn new(naming: QueueNaming) -> Self {
        EmbeddedQueues {
            naming,
            queues: RwLock::default(),
        }
    }

    /// Deletes every message of a room's queue, as SQS's PurgeQueue does, and returns how many
    /// there were; deduplication ids stay remembered.
    pub fn purge(&self, room: RoomId) -> Result<u64, QueueError> {
        let cell = self.cell(room)?;
        let mut state = cell.state()?;
        Ok(state.purge())
    }

    /// Runs `f` on a room's queue under the read lock of the set: no reference is taken, so a
    /// publish touches no count shared with every other publisher.
    fn with_cell<T>(
        &self,
        room: RoomId,
        f: impl FnOnce(&QueueCell) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        match queues.get(&self.naming.queue_key(room)) {
            Some(cell) => f(cell),
            None => Err(QueueError::NotFound {
                queue: self.naming.queue_name(room)?,
            }),
        }
    }

    fn cell(&self, room: RoomId) -> Result<Arc<QueueCell>, QueueError> {
        let found = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.naming.queue_key(room))
            .cloned();
        match found {
            Some(cell) => Ok(cell),
            None => Err(QueueError::NotFound {
                queue: self.naming.queue_name(room)?,
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent enough to serve.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl QueueCell {
    /// Wakes the receives waiting for a message, if there are any. A receive counts itself
    /// before it looks under the lock, and a publish reads the count after it leaves the lock,
    /// so a message is either seen by the look or followed by a wake-up.
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.ready.notify_waiters();
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, QueueState>, QueueError> {
        let state = lock(&self.state);
        if state.deleted {
            return Err(QueueError::NotFound {
                queue: self.name.clone(),
            });
        }
        Ok(state)
    }
}

#[async_trait]
impl Queues for EmbeddedQueues {
    fn naming(&self) -> &QueueNaming {
        &self.naming
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_queue_tagged(
        &self,
        room: RoomId,
        attrs: &QueueAttributes,
        tags: &Tags,
    ) -> Result<(), QueueError> {
        let name = self.naming.queue_name(room)?;
        let room = self.naming.queue_key(room);
        let wanted = attrs.to_map();
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = queues.get(&room) {
            let state = lock(&cell.state);
            if !state.deleted {
                if state.attrs == wanted {
                    return Ok(());
                }
                return Err(QueueError::AlreadyExists {
                    queue: name,
                    message: "a queue of this name exists with other attributes".into(),
                });
            }
        }
        let mut state = QueueState::starting_now();
        state.tags = tags.clone();
        state.apply_attrs(wanted);
        queues.insert(
            room,
            Arc::new(QueueCell {
                name,
                state: Mutex::new(state),
                ready: Notify::new(),
                waiting: AtomicUsize::new(0),
            }),
        );
        Ok(())
    }

    async fn queue_tags(&self, room: RoomId) -> Result<Tags, QueueError> {
        Ok(self.cell(room)?.state()?.tags.clone())
    }

    async fn tag_queue(&self, room: RoomId, tags: &Tags) -> Result<(), QueueError> {
        let cell = self.cell(room)?;
        let mut state = cell.state()?;
        state
            .tags
            .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    async fn queue_attributes(&self, room: RoomId) -> Result<BTreeMap<String, String>, QueueError> {
        Ok(self.cell(room)?.state()?.attrs.clone())
    }

    async fn set_queue_attributes(
        &self,
        room: RoomId,
        attrs: BTreeMap<String, String>,
    ) -> Result<(), QueueError> {
        let cell = self.cell(room)?;
        let mut state = cell.state()?;
        if let Some(v) = attrs.get("FifoQueue").filter(|v| *v != "true") {
            return Err(QueueError::Invalid(format!(
                "FifoQueue cannot change to {v}"
            )));
        }
        let mut merged = state.attrs.clone();
        merged.extend(attrs);
        state.apply_attrs(merged);
        Ok(())
    }

    async fn delete_queue(&self, room: RoomId) -> Result<(), QueueError> {
        self.naming.queue_name(room)?;
        let removed = self
            .queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.naming.queue_key(room));
        if let Some(cell) = removed {
            lock(&cell.state).deleted = true;
            cell.ready.notify_waiters();
        }
        Ok(())
    }

    async fn publish(
        &self,
        room: RoomId,
        entries: &[PublishEntry],
    ) -> Result<Vec<PublishResult>, QueueError> {
        super::check_batch(entries.len())?;
        self.with_cell(room, |cell| {
            let results = {
                let mut state = cell.state()?;
                let now = Instant::now();
                state.expire(now);
                entries
                    .iter()
                    .map(|e| publish_one(&mut state, e, now))
                    .collect()
            };
            cell.wake();
            Ok(results)
        })
    }

    // Messages are taken under the lock, with no await in between: a dropped receive took none.
    fn receive_cancel_safe(&self) -> bool {
        true
    }

    fn publishes_in_place(&self) -> bool {
        true
    }

    async fn receive(
        &self,
        room: RoomId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let max = max.clamp(1, MAX_BATCH);
        let cell = self.cell(room)?;
        let deadline = Instant::now() + wait.min(super::MAX_WAIT);
        let _waiting = Waiting::new(&cell.waiting);
        loop {
            let notified = cell.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so a publish between the look and the wait still wakes us.
            notified.as_mut().enable();
            let wake_at = {
                let mut state = cell.state()?;
                let now = Instant::now();
                state.expire(now);
                let got = state.take(max, now);
                if !got.is_empty() || now >= deadline {
                    return Ok(got);
                }
                state.next_expiry().map_or(deadline, |at| at.min(deadline))
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn delete_batch(
        &self,
        room: RoomId,
        receipts: &[String],
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        super::check_batch(receipts.len())?;
        let cell = self.cell(room)?;
        let results = {
            let mut state = cell.state()?;
            state.expire(Instant::now());
            receipts.iter().map(|r| delete_one(&mut state, r)).collect()
        };
        // Deleting the last in-flight message of a group unlocks the group.
        cell.wake();
        Ok(results)
    }

    async fn depth(&self, room: RoomId) -> Result<QueueDepth, QueueError> {
        let cell = self.cell(room)?;
        let mut state = cell.state()?;
        state.expire(Instant::now());
        Ok(QueueDepth {
            visible: state.visible,
            in_flight: state.in_flight,
        })
    }
}

#[cfg(test)]
mod tests;
