//! A room's poll loop: receive, unpack, broadcast in queue order, then delete what was
//! broadcast.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatflow::envelope;
use chatflow::protocol::{
    BroadcastEvent, Position, SubscriberFrame, TaskMessage, now_rfc3339, parse_rfc3339,
};
use chatflow::queue::{MAX_BATCH, ReceivedMessage, SharedQueues};
use chatflow::retry::Backoff;
use chatflow::rooms::RoomId;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use chatflow_fanout::room::{Event, Room};
use chatflow_fanout::store::Store;

/// What every room's poller shares.
pub struct PollContext {
    /// Queue backend.
    pub queues: SharedQueues,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Long-poll wait.
    pub wait: Duration,
    /// Turns when polls are capped (fair: waiters are served in order).
    pub turns: Option<Arc<Semaphore>>,
    /// Fires on shutdown: no new polls start.
    pub stop: CancellationToken,
    /// How long a room without subscribers waits before its first poll.
    pub hold: Duration,
    /// Where batches are made durable before they are deleted, when configured.
    pub store: Option<Store>,
}

/// How long an idle room waits before queueing for its next turn when pollers are shared.
pub const IDLE_PAUSE: Duration = Duration::from_millis(500);

/// Polls `room` until shutdown; a batch in hand is always finished and deleted.
pub async fn run(room_id: RoomId, room: Arc<Room>, ctx: Arc<PollContext>) {
    // A shard that just started (a restart, a reshard) lets the room's subscribers reconnect
    // before it takes the backlog: what it broadcast to nobody would be deleted, and lost to
    // every subscriber whose position is older than this shard's history.
    let started = tokio::time::Instant::now();
    // A shard with a predecessor (one that holds for its audience) lets the long-poll wait pass
    // first: the pod it replaces may still have a poll in flight for this room, which would take
    // the room's next batch, out of this shard's sight, once this shard deleted its first one.
    if !ctx.hold.is_zero() {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.wait) => {}
        }
    }
    tokio::select! {
        _ = ctx.stop.cancelled() => return,
        _ = room.audience() => {}
        _ = tokio::time::sleep_until(started + ctx.hold) => {}
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if ctx.stop.is_cancelled() {
            return;
        }
        let permit = match &ctx.turns {
            Some(sem) => tokio::select! {
                _ = ctx.stop.cancelled() => return,
                p = sem.clone().acquire_owned() => Some(p.expect("semaphore is never closed")),
            },
            None => None,
        };
        let receive = ctx.queues.receive(room_id, MAX_BATCH, ctx.wait);
        let got = if ctx.queues.receive_cancel_safe() {
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                got = receive => got,
            }
        } else {
            // A long poll abandoned at shutdown would still take what arrives, and hide it from
            // the next shard for the visibility timeout: finish it, and broadcast what it brings
            // to the subscribers that are still here.
            receive.await
        };
        drop(permit);
        match got {
            Ok(msgs) => {
                backoff.reset();
                if !msgs.is_empty() {
                    handle_batch(room_id, &room, &ctx, msgs).await;
                    continue;
                }
                ctx.metrics.queue_age(room_id, 0.0);
                if ctx.turns.is_some() {
                    // With shared pollers the wait is short or zero; an idle room steps aside for
                    // a moment so empty polls do not spin while busy rooms wait for a turn.
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        _ = tokio::time::sleep(IDLE_PAUSE) => {}
                    }
                }
            }
            Err(e) => {
                ctx.metrics.poll_errors.inc();
                tracing::warn!(room = room_id, error = %e, "receive failed; retrying");
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// Broadcasts a received batch in order, makes it durable in the history store (when there is
/// one), then deletes all of it in one call. A batch the store did not take by shutdown is left
/// in the queue: it comes back to the next shard.
pub async fn handle_batch(
    room_id: RoomId,
    room: &Room,
    ctx: &PollContext,
    msgs: Vec<ReceivedMessage>,
) {
    let m = &ctx.metrics;
    m.messages_received.inc_by(msgs.len() as u64);
    let mut receipts = Vec::with_capacity(msgs.len());
    let mut broadcast_events = Vec::new();
    let mut oldest = 0.0f64;
    for msg in msgs {
        let tasks = match envelope::unpack(&msg.format, &msg.body) {
            Ok(tasks) => tasks,
            Err(e) => {
                // Redelivering it would fail the same way forever: drop it, loudly.
                m.malformed.inc();
                tracing::error!(room = room_id, message_id = %msg.message_id, error = %e, "dropping a malformed queue message");
                receipts.push(msg.receipt);
                continue;
            }
        };
        receipts.push(msg.receipt);
        for (index, task) in (0u32..).zip(tasks) {
            // Dropped, not redelivered: it would break the same rule every time. Its index is
            // skipped, so the positions of the others stay those of their envelope.
            if let Err(why) = task.recheck(room_id) {
                m.rejected.inc();
                tracing::error!(room = room_id, message_id = %msg.message_id, %why, "dropping a queued chat message that breaks the protocol's rules");
                continue;
            }
            let position = msg.sequence.map(|sequence| Position { sequence, index });
            let Some((age, bytes)) = broadcast(room, m, task, position) else {
                continue;
            };
            if let Some(age) = age {
                oldest = oldest.max(age);
            }
            if let Some(position) = position {
                broadcast_events.push((position, bytes));
            }
        }
    }
    m.queue_age(room_id, oldest);
    if let Some(store) = &ctx.store
        && !broadcast_events.is_empty()
        && !persist(room_id, store, ctx, &broadcast_events).await
    {
        tracing::info!(
            room = room_id,
            "stopping with a batch the history store has not taken: left in the queue"
        );
        return;
    }
    delete_broadcast(room_id, ctx, receipts).await;
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
async fn delete_broadcast(room_id: RoomId, ctx: &PollContext, mut receipts: Vec<String>) {
    let m = &ctx.metrics;
    for attempt in 1..=2 {
        match ctx.queues.delete_batch(room_id, &receipts).await {
            Ok(results) => {
                receipts = receipts
                    .into_iter()
                    .zip(results)
                    .filter_map(|(r, res)| res.err().filter(|e| !e.sender_fault).map(|_| r))
                    .collect();
            }
            Err(e) if attempt == 2 => {
                tracing::warn!(room = room_id, error = %e, "delete failed; the batch comes back and is dropped as duplicates");
            }
            Err(_) => {}
        }
        if receipts.is_empty() {
            return;
        }
    }
    m.delete_errors.inc_by(receipts.len() as u64);
    tracing::warn!(
        room = room_id,
        failed = receipts.len(),
        "deletes failed; those messages come back and are dropped as duplicates"
    );
}
