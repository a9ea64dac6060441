//! One receive of a queue: its messages broadcast in queue order to their rooms, made durable in
//! the history store (when there is one), and deleted in one call.

use bytes::Bytes;
use chatflow::envelope;
use chatflow::protocol::{
    BroadcastEvent, Position, SubscriberFrame, TaskMessage, now_rfc3339, parse_rfc3339,
};
use chatflow::queue::ReceivedMessage;
use chatflow::retry::Backoff;
use chatflow::rooms::RoomId;
use std::time::Duration;
use time::OffsetDateTime;

use super::{PollContext, QueueRooms};
use crate::metrics::{Metrics, RoomLabel};
use chatflow_fanout::room::{Event, Room};
use chatflow_fanout::store::Store;

/// What one receive brought one room: the events broadcast.
struct RoomBatch {
    id: RoomId,
    events: Vec<(Position, Bytes)>,
    /// Seconds since the producer received the oldest of them.
    oldest: f64,
    /// Chat messages broadcast, positioned or not.
    broadcast: u64,
}

/// Broadcasts a received batch in order to the rooms its chat messages name, makes each room's
/// part durable in the history store (when there is one), then deletes all of it in one call. A
/// batch the store did not take by shutdown is left in the queue whole (a queue message of a
/// bucket carries several rooms): it comes back to the next shard, and the store skips what it
/// already holds.
pub async fn handle_batch(rooms: &QueueRooms, ctx: &PollContext, msgs: Vec<ReceivedMessage>) {
    let m = &ctx.metrics;
    m.messages_received.inc_by(msgs.len() as u64);
    let mut receipts = Vec::with_capacity(msgs.len());
    // Few rooms per receive in practice: a list keeps their first-seen order.
    let mut parts: Vec<RoomBatch> = Vec::new();
    for msg in msgs {
        let tasks = match envelope::unpack(&msg.format, &msg.body) {
            Ok(tasks) => tasks,
            Err(e) => {
                // Redelivering it would fail the same way forever: drop it, loudly.
                m.malformed.inc();
                tracing::error!(queue = rooms.key, message_id = %msg.message_id, error = %e, "dropping a malformed queue message");
                receipts.push(msg.receipt);
                continue;
            }
        };
        for (index, task) in (0u32..).zip(tasks) {
            let position = msg.sequence.map(|sequence| Position { sequence, index });
            take(rooms, m, &msg.message_id, task, position, &mut parts);
        }
        receipts.push(msg.receipt);
    }
    // Every room of the queue, so a room absent from this receive does not keep an old age.
    for (id, _) in &rooms.rooms {
        let oldest = parts.iter().find(|p| p.id == *id).map_or(0.0, |p| p.oldest);
        m.queue_age(*id, oldest);
    }
    // Counted per room and receive, not per message: the family's lookup stays off the hot path.
    for p in &parts {
        m.room_broadcasts
            .get_or_create(&RoomLabel { room: p.id })
            .inc_by(p.broadcast);
    }
    if let Some(store) = &ctx.store {
        // A bucket's receive can carry many rooms: their appends go out together.
        let appends = parts
            .iter()
            .filter(|p| !p.events.is_empty())
            .map(|p| persist(p.id, store, ctx, &p.events));
        if !futures::future::join_all(appends)
            .await
            .into_iter()
            .all(|taken| taken)
        {
            tracing::info!(
                queue = rooms.key,
                "stopping with a batch the history store has not taken: left in the queue"
            );
            return;
        }
    }
    delete_broadcast(rooms.key, ctx, receipts).await;
}

/// Broadcasts one chat message to its room, when the queue holds that room and the message
/// keeps the protocol's rules. Dropped otherwise, not redelivered: it would fail the same way
/// every time. Its index is skipped, so the positions of the others stay those of their
/// envelope.
fn take(
    rooms: &QueueRooms,
    m: &Metrics,
    message_id: &str,
    task: TaskMessage,
    position: Option<Position>,
    parts: &mut Vec<RoomBatch>,
) {
    let Some((room_id, room)) = rooms.room(task.room_id) else {
        m.rejected.inc();
        tracing::error!(queue = rooms.key, room = task.room_id, %message_id, "dropping a queued chat message of a room this queue does not hold");
        return;
    };
    if let Err(why) = task.recheck(room_id) {
        m.rejected.inc();
        tracing::error!(room = room_id, %message_id, %why, "dropping a queued chat message that breaks the protocol's rules");
        return;
    }
    let Some((age, bytes)) = broadcast(room, m, task, position) else {
        return;
    };
    let part = match parts.iter().position(|p| p.id == room_id) {
        Some(at) => &mut parts[at],
        None => {
            parts.push(RoomBatch {
                id: room_id,
                events: Vec::new(),
                oldest: 0.0,
                broadcast: 0,
            });
            parts.last_mut().expect("just pushed")
        }
    };
    part.broadcast += 1;
    if let Some(age) = age {
        part.oldest = part.oldest.max(age);
    }
    if let Some(position) = position {
        part.events.push((position, bytes));
    }
}

/// Appends a batch to the history store, retrying until it is taken or the shard stops (false).
/// While the store is down the room's batch stays in flight, so its queue group stays locked:
/// the room pauses rather than delete what no resume could get back.
async fn persist(
    room_id: RoomId,
    store: &Store,
    ctx: &PollContext,
    events: &[(Position, Bytes)],
) -> bool {
    let m = &ctx.metrics;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let started = std::time::Instant::now();
        match store.append(room_id, events).await {
            Ok(len) => {
                m.store.appended(room_id, started.elapsed(), len);
                return true;
            }
            Err(e) => {
                m.store.failed("append");
                tracing::warn!(room = room_id, error = %e, "history store append failed; the batch stays in the queue until it is stored");
            }
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return false,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Broadcasts one chat message unless this room has already broadcast its id; returns the
/// seconds since the producer received it and the event as sent.
fn broadcast(
    room: &Room,
    m: &Metrics,
    task: TaskMessage,
    position: Option<Position>,
) -> Option<(Option<f64>, Bytes)> {
    let fresh = room
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(&task.message_id);
    if !fresh {
        m.duplicates_dropped.inc();
        return None;
    }
    let received_at = parse_rfc3339(&task.received_at);
    let event = BroadcastEvent {
        position,
        ..BroadcastEvent::from_task(task, now_rfc3339())
    };
    let bytes: Bytes = SubscriberFrame::Event(event).to_json().into();
    let fanout = room.broadcast(Event {
        position,
        bytes: bytes.clone(),
    });
    m.broadcasts.inc();
    if fanout.delivered == 0 {
        m.unheard.inc();
    }
    m.deliveries.inc_by(fanout.delivered);
    m.dropped_slow_subscribers.inc_by(fanout.dropped);
    let age = received_at.map(|at| (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0));
    if let Some(age) = age {
        m.latency.observe(age);
    }
    Some((age, bytes))
}

/// Deletes what was broadcast. Failed receipts get one immediate second try: a message left
/// in flight keeps its whole room locked until the visibility timeout brings it back.
async fn delete_broadcast(queue: RoomId, ctx: &PollContext, mut receipts: Vec<String>) {
    let m = &ctx.metrics;
    for attempt in 1..=2 {
        match ctx.queues.delete_batch(queue, &receipts).await {
            Ok(results) => {
                receipts = receipts
                    .into_iter()
                    .zip(results)
                    .filter_map(|(r, res)| res.err().filter(|e| !e.sender_fault).map(|_| r))
                    .collect();
            }
            Err(e) if attempt == 2 => {
                tracing::warn!(queue, error = %e, "delete failed; the batch comes back and is dropped as duplicates");
            }
            Err(_) => {}
        }
        if receipts.is_empty() {
            return;
        }
    }
    m.delete_errors.inc_by(receipts.len() as u64);
    tracing::warn!(
        queue,
        failed = receipts.len(),
        "deletes failed; those messages come back and are dropped as duplicates"
    );
}
