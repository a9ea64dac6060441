//! The state of one embedded queue: SQS FIFO semantics over in-memory groups, with the
//! deduplication window, visibility timeouts, retention and receipts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::super::{
    BodyFormat, EntryError, PublishEntry, PublishResult, QueueAttributes, ReceivedMessage, Tags,
};
use super::dedup::{Dedup, Seen};

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

/// One queue's messages, groups, deduplication memory and receipts.
#[derive(Default)]
pub(super) struct QueueState {
    pub(super) attrs: BTreeMap<String, String>,
    pub(super) tags: Tags,
    visibility: Duration,
    retention: Duration,
    pub(super) deleted: bool,
    groups: HashMap<String, VecDeque<Message>>,
    /// Groups with messages, in the order receives visit them; rotated for fairness.
    group_order: VecDeque<String>,
    dedup: Dedup,
    receipts: HashMap<String, (String, u64)>,
    next_seq: u64,
    pub(super) visible: u64,
    pub(super) in_flight: u64,
    /// No delivery times out and no message passes retention before this (None: nothing can),
    /// so most calls skip the scan of every group. Never later than the first such event.
    due: Option<Instant>,
}

impl QueueState {
    /// An empty queue whose sequence numbers start at the clock (ns since 1970), as SQS's grow
    /// with time: positions a subscriber kept from a queue of an earlier process stay older than
    /// this one's, as long as that one gave out fewer than a billion numbers a second.
    pub(super) fn starting_now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        QueueState {
            next_seq: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX / 2),
            ..QueueState::default()
        }
    }

    pub(super) fn apply_attrs(&mut self, attrs: BTreeMap<String, String>) {
        let parsed = QueueAttributes::from_map(&attrs);
        self.visibility = parsed.visibility_timeout;
        self.retention = parsed.retention;
        self.attrs = attrs;
        self.due = self.first_due();
    }

    /// Records an event that `expire` must not miss.
    fn due_by(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    /// The first delivery to time out or message to pass retention, from scratch. Retention
    /// applies to a group's first message once no delivery holds it, so only then does it count.
    fn first_due(&self) -> Option<Instant> {
        self.groups
            .values()
            .filter_map(|msgs| {
                let mut due: Option<Instant> = None;
                for m in msgs {
                    match &m.in_flight {
                        Some((_, until)) => due = Some(due.map_or(*until, |d| d.min(*until))),
                        None => {
                            if due.is_none() {
                                due = Some(m.sent_at + self.retention);
                            }
                            break;
                        }
                    }
                }
                due
            })
            .min()
    }

    /// Returns timed-out deliveries to the queue and drops messages past retention.
    pub(super) fn expire(&mut self, now: Instant) {
        self.dedup.expire(now);
        if self.due.is_none_or(|due| due > now) {
            return;
        }
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
        self.due = self.first_due();
    }

    /// Drops every message, in flight or not, and their receipts; deduplication ids stay.
    pub(super) fn purge(&mut self) -> u64 {
        let dropped = self.visible + self.in_flight;
        self.groups.clear();
        self.group_order.clear();
        self.receipts.clear();
        self.visible = 0;
        self.in_flight = 0;
        self.due = None;
        dropped
    }

    /// Takes up to `max` messages from unlocked groups, oldest first within a group.
    pub(super) fn take(&mut self, max: usize, now: Instant) -> Vec<ReceivedMessage> {
        let mut out = Vec::new();
        let until = now + self.visibility;
        let mut due = None;
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
                    due = Some(until);
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
                        sequence: Some(u128::from(m.seq)),
                    });
                }
            }
            self.group_order.push_back(group);
        }
        if let Some(until) = due {
            self.due_by(until);
        }
        out
    }

    /// Earliest instant an in-flight message becomes visible again.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.groups
            .values()
            .filter_map(|msgs| {
                msgs.front()
                    .and_then(|m| m.in_flight.as_ref().map(|(_, until)| *until))
            })
            .min()
    }
}

pub(super) fn publish_one(
    state: &mut QueueState,
    entry: &PublishEntry,
    now: Instant,
) -> PublishResult {
    if entry.group_id.is_empty() || entry.dedup_id.is_empty() || entry.dedup_id.len() > 128 {
        return Err(EntryError {
            code: "MissingParameter".into(),
            message: "FIFO entries need a group id and a 1-128 character deduplication id".into(),
            sender_fault: true,
        });
    }
    let message_id = match state.dedup.remember(&entry.dedup_id, now) {
        // SQS answers a duplicate with success and the first copy's id, and does not enqueue it.
        Seen::Before(first) => return Ok(first.to_string()),
        Seen::New(id) => id.to_string(),
    };
    state.next_seq += 1;
    let seq = state.next_seq;
    // Looked up before it is inserted, so a publish to an existing group copies no name.
    if !state.groups.contains_key(&entry.group_id) {
        state.groups.insert(entry.group_id.clone(), VecDeque::new());
    }
    let group = state
        .groups
        .get_mut(&entry.group_id)
        .expect("inserted above");
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
    let retained_until = now + state.retention;
    state.due_by(retained_until);
    Ok(message_id)
}

pub(super) fn delete_one(state: &mut QueueState, receipt: &str) -> Result<(), EntryError> {
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
