//! A queue's poll loop: receive, unpack, broadcast in queue order, then delete what was
//! broadcast. A queue holds one room, or a bucket of rooms whose messages share envelopes.

mod batch;

use std::sync::Arc;
use std::time::Duration;

use chatflow::queue::{MAX_BATCH, SharedQueues};
use chatflow::retry::Backoff;
use chatflow::rooms::RoomId;
use futures::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use chatflow_fanout::room::Room;
use chatflow_fanout::store::Store;

pub use batch::handle_batch;

/// What every queue's poller shares.
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

/// The rooms one queue holds, in room order: one room, or a bucket's.
pub struct QueueRooms {
    /// The queue's key (its first room), which queue calls name it by.
    pub key: RoomId,
    /// Its rooms and their state.
    pub rooms: Vec<(RoomId, Arc<Room>)>,
}

impl QueueRooms {
    /// The state of a room this queue holds. A queue of one room answers with its room for any
    /// id, as it always has: the message's own check then refuses one of another room.
    fn room(&self, id: RoomId) -> Option<(RoomId, &Room)> {
        if let [(only, room)] = self.rooms.as_slice() {
            return Some((*only, room));
        }
        // The rooms are consecutive from the first: the id is the index.
        let first = self.rooms.first()?.0;
        let (found, room) = self.rooms.get(id.checked_sub(first)? as usize)?;
        (*found == id).then_some((*found, room.as_ref()))
    }

    /// Returns once every room of the queue has a subscriber: a bucket's backlog goes to all
    /// its rooms at once, and a room whose subscribers are not back yet would lose its part.
    async fn audience(&self) {
        join_all(self.rooms.iter().map(|(_, room)| room.audience())).await;
    }
}

/// Polls the queue of `rooms` until shutdown; a batch in hand is always finished and deleted.
pub async fn run(rooms: QueueRooms, ctx: Arc<PollContext>) {
    let key = rooms.key;
    // A shard that just started (a restart, a reshard) lets the rooms' subscribers reconnect
    // before it takes the backlog: what it broadcast to nobody would be deleted, and lost to
    // every subscriber whose position is older than this shard's history.
    let started = tokio::time::Instant::now();
    // A shard with a predecessor (one that holds for its audience) lets the long-poll wait pass
    // first: the pod it replaces may still have a poll in flight for this queue, which would
    // take the next batch, out of this shard's sight, once this shard deleted its first one.
    if !ctx.hold.is_zero() {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.wait) => {}
        }
    }
    tokio::select! {
        _ = ctx.stop.cancelled() => return,
        _ = rooms.audience() => {}
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
        let receive = ctx.queues.receive(key, MAX_BATCH, ctx.wait);
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
                    handle_batch(&rooms, &ctx, msgs).await;
                    continue;
                }
                for (room_id, _) in &rooms.rooms {
                    ctx.metrics.queue_age(*room_id, 0.0);
                }
                if ctx.turns.is_some() {
                    // With shared pollers the wait is short or zero; an idle queue steps aside
                    // for a moment so empty polls do not spin while busy ones wait for a turn.
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        _ = tokio::time::sleep(IDLE_PAUSE) => {}
                    }
                }
            }
            Err(e) => {
                ctx.metrics.poll_errors.inc();
                tracing::warn!(queue = key, error = %e, "receive failed; retrying");
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}
