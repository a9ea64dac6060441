//! In-process FIFO queues with SQS FIFO semantics: message groups, in-flight group locking,
//! a deduplication window that outlives deletes, visibility timeouts and long polls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    BodyFormat, EntryError, MAX_BATCH, PublishEntry, PublishResult, QueueAttributes, QueueDepth,
    QueueError, Queues, ReceivedMessage, Tags,
};
use crate::rooms::{QueueNaming, RoomId};

/// How long SQS remembers a deduplication id.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Embedded queues, keyed by the same names SQS would use.
#[derive(Default)]
pub struct EmbeddedQueues {
    naming: QueueNaming,
    queues: Mutex<HashMap<String, Arc<QueueCell>>>,
}

struct QueueCell {
    name: String,
    state: Mutex<QueueState>,
    /// Woken when a message may have become receivable.
    ready: Notify,
}

struct Message {
    seq: u64,
    message_id: String,
    body: String,
    format: BodyFormat,
    sent_at: Instant,
    receive_count: u32,
    /// Receipt and hidden-until instant while in flight.
    in_flight: Option<(String, Instant)>,
}

#[derive(Default)]
struct QueueState {
    attrs: BTreeMap<String, String>,
    tags: Tags,
    visibility: Duration,
    retention: Duration,
    deleted: bool,
    groups: HashMap<String, VecDeque<Message>>,
    /// Groups with messages, in the order receives visit them; rotated for fairness.
    group_order: VecDeque<String>,
    dedup: HashMap<String, (String, Instant)>,
    dedup_expiry: VecDeque<(Instant, String)>,
    receipts: HashMap<String, (String, u64)>,
    next_seq: u64,
    visible: u64,
    in_flight: u64,
}

impl EmbeddedQueues {
    /// Empty set of queues named by `naming`.
    pub fn new(naming: QueueNaming) -> Self {
        EmbeddedQueues {
            naming,
            queues: Mutex::default(),
        }
    }

    fn cell(&self, room: RoomId) -> Result<Arc<QueueCell>, QueueError> {
        let name = self.naming.queue_name(room)?;
        lock(&self.queues)
            .get(&name)
            .cloned()
            .ok_or(QueueError::NotFound { queue: name })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent enough to serve.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl QueueCell {
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

impl QueueState {
    fn apply_attrs(&mut self, attrs: BTreeMap<String, String>) {
        let parsed = QueueAttributes::from_map(&attrs);
        self.visibility = parsed.visibility_timeout;
        self.retention = parsed.retention;
        self.attrs = attrs;
    }

    /// Returns timed-out deliveries to the queue and drops messages past retention.
    fn expire(&mut self, now: Instant) {
        let QueueState {
            groups,
            receipts,
            visible,
            in_flight,
            retention,
            ..
        } = self;
        for msgs in groups.values_mut() {
            for m in msgs.iter_mut() {
                match &m.in_flight {
                    Some((receipt, until)) if *until <= now => {
                        receipts.remove(receipt);
                        m.in_flight = None;
                        *in_flight -= 1;
                        *visible += 1;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            while msgs
                .front()
                .is_some_and(|m| m.in_flight.is_none() && m.sent_at + *retention <= now)
            {
                msgs.pop_front();
                *visible -= 1;
            }
        }
        self.groups.retain(|_, msgs| !msgs.is_empty());
        let groups = &self.groups;
        self.group_order.retain(|g| groups.contains_key(g));
        while self.dedup_expiry.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = self.dedup_expiry.pop_front() {
                self.dedup.remove(&id);
            }
        }
    }

    /// Takes up to `max` messages from unlocked groups, oldest first within a group.
    fn take(&mut self, max: usize, now: Instant) -> Vec<ReceivedMessage> {
        let mut out = Vec::new();
        let until = now + self.visibility;
        for _ in 0..self.group_order.len() {
            if out.len() == max {
                break;
            }
            let Some(group) = self.group_order.pop_front() else {
                break;
            };
            let msgs = self
                .groups
                .get_mut(&group)
                .expect("group_order lists live groups");
            // A group with a message in flight is locked: later messages would overtake it.
            if msgs.front().is_some_and(|m| m.in_flight.is_none()) {
                for m in msgs.iter_mut().take(max - out.len()) {
                    self.next_seq += 1;
                    let receipt = format!("{}-{}-{}", m.seq, m.receive_count + 1, self.next_seq);
                    m.receive_count += 1;
                    m.in_flight = Some((receipt.clone(), until));
                    self.receipts
                        .insert(receipt.clone(), (group.clone(), m.seq));
                    self.visible -= 1;
                    self.in_flight += 1;
                    out.push(ReceivedMessage {
                        message_id: m.message_id.clone(),
                        body: m.body.clone(),
                        receipt,
                        receive_count: m.receive_count,
                        group_id: group.clone(),
                        format: m.format.clone(),
                    });
                }
            }
            self.group_order.push_back(group);
        }
        out
    }

    /// Earliest instant an in-flight message becomes visible again.
    fn next_expiry(&self) -> Option<Instant> {
        self.groups
            .values()
            .filter_map(|msgs| {
                msgs.front()
                    .and_then(|m| m.in_flight.as_ref().map(|(_, until)| *until))
            })
            .min()
    }
}

#[async_trait]
impl Queues for EmbeddedQueues {
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
        let wanted = attrs.to_map();
        let mut queues = lock(&self.queues);
        if let Some(cell) = queues.get(&name) {
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
        let mut state = QueueState {
            tags: tags.clone(),
            ..QueueState::default()
        };
        state.apply_attrs(wanted);
        queues.insert(
            name.clone(),
            Arc::new(QueueCell {
                name,
                state: Mutex::new(state),
                ready: Notify::new(),
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
        let name = self.naming.queue_name(room)?;
        if let Some(cell) = lock(&self.queues).remove(&name) {
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
        let cell = self.cell(room)?;
        let results = {
            let mut state = cell.state()?;
            let now = Instant::now();
            state.expire(now);
            entries
                .iter()
                .map(|e| publish_one(&mut state, e, now))
                .collect()
        };
        cell.ready.notify_waiters();
        Ok(results)
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
        cell.ready.notify_waiters();
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

fn publish_one(state: &mut QueueState, entry: &PublishEntry, now: Instant) -> PublishResult {
    if entry.group_id.is_empty() || entry.dedup_id.is_empty() || entry.dedup_id.len() > 128 {
        return Err(EntryError {
            code: "MissingParameter".into(),
            message: "FIFO entries need a group id and a 1-128 character deduplication id".into(),
            sender_fault: true,
        });
    }
    if let Some((message_id, _)) = state.dedup.get(&entry.dedup_id) {
        // SQS answers a duplicate with success and the first copy's id, and does not enqueue it.
        return Ok(message_id.clone());
    }
    state.next_seq += 1;
    let seq = state.next_seq;
    let message_id = uuid::Uuid::new_v4().to_string();
    let expires = now + DEDUP_WINDOW;
    state
        .dedup
        .insert(entry.dedup_id.clone(), (message_id.clone(), expires));
    state
        .dedup_expiry
        .push_back((expires, entry.dedup_id.clone()));
    let group = state.groups.entry(entry.group_id.clone()).or_default();
    if group.is_empty() {
        state.group_order.push_back(entry.group_id.clone());
    }
    group.push_back(Message {
        seq,
        message_id: message_id.clone(),
        body: entry.body.clone(),
        format: entry.format.clone(),
        sent_at: now,
        receive_count: 0,
        in_flight: None,
    });
    state.visible += 1;
    Ok(message_id)
}

fn delete_one(state: &mut QueueState, receipt: &str) -> Result<(), EntryError> {
    let invalid = || EntryError {
        code: "ReceiptHandleIsInvalid".into(),
        message: "the receipt handle is unknown or its delivery has timed out".into(),
        sender_fault: true,
    };
    let (group, seq) = state.receipts.remove(receipt).ok_or_else(invalid)?;
    let msgs = state.groups.get_mut(&group).ok_or_else(invalid)?;
    let pos = msgs.iter().position(|m| m.seq == seq).ok_or_else(invalid)?;
    msgs.remove(pos);
    state.in_flight -= 1;
    if msgs.is_empty() {
        state.groups.remove(&group);
        state.group_order.retain(|g| *g != group);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dedup: &str) -> PublishEntry {
        PublishEntry {
            body: dedup.into(),
            group_id: "g".into(),
            dedup_id: dedup.into(),
            format: BodyFormat::Task,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_window_ends_after_five_minutes() {
        let q = EmbeddedQueues::default();
        q.create_queue(1, &QueueAttributes::default())
            .await
            .unwrap();
        q.publish(1, &[entry("a")]).await.unwrap();
        tokio::time::advance(DEDUP_WINDOW - Duration::from_secs(1)).await;
        q.publish(1, &[entry("a")]).await.unwrap();
        assert_eq!(q.depth(1).await.unwrap().visible, 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        q.publish(1, &[entry("a")]).await.unwrap();
        assert_eq!(q.depth(1).await.unwrap().visible, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retention_drops_old_messages() {
        let q = EmbeddedQueues::default();
        let attrs = QueueAttributes {
            retention: Duration::from_secs(60),
            ..Default::default()
        };
        q.create_queue(1, &attrs).await.unwrap();
        q.publish(1, &[entry("a")]).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(q.depth(1).await.unwrap(), QueueDepth::default());
        assert!(q.receive(1, 10, Duration::ZERO).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_deleted_queue_fails_its_long_polls() {
        let q = Arc::new(EmbeddedQueues::default());
        q.create_queue(1, &QueueAttributes::default())
            .await
            .unwrap();
        let poll = tokio::spawn({
            let q = q.clone();
            async move { q.receive(1, 10, Duration::from_secs(20)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.delete_queue(1).await.unwrap();
        let res = tokio::time::timeout(Duration::from_secs(2), poll)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(res, Err(QueueError::NotFound { .. })), "{res:?}");
    }
}
