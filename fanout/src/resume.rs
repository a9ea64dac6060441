//! What a resuming subscriber is sent before live events: from the room's memory, from a fetch
//! made elsewhere (an edge asks the shard), or from the history store when the memory does not
//! reach back to the subscriber's position.

use bytes::Bytes;
use chatflow::protocol::{Position, RecoveryNotice};
use chatflow::rooms::RoomId;

use crate::history::Replay;
use crate::store::{Store, StoreError, StoreMetrics};

/// The history store behind one room, for resumes its memory cannot answer.
#[derive(Clone)]
pub struct Backing {
    /// The store.
    pub store: Store,
    /// The room.
    pub room: RoomId,
    /// Counts resumes served from the store and the store's failures.
    pub metrics: StoreMetrics,
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backing")
            .field("store", &self.store)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// Events of a resume that the room's history does not reach back to, fetched from where they
/// are still held (an edge asks the shard).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The position the subscriber resumed after.
    pub from: Position,
    /// Whether the source vouched for them being every message after `from`.
    pub recovered: bool,
    /// The events, oldest first.
    pub events: Vec<Bytes>,
    /// The room's history generation before they were fetched, while the room was already
    /// receiving: if it is unchanged at the join, the room's events follow them without a gap.
    pub generation: u64,
}

/// A replay ready to send.
#[derive(Debug)]
pub struct Plan {
    /// The notice that goes first.
    pub notice: RecoveryNotice,
    /// The events, oldest first.
    pub events: Vec<Bytes>,
    /// Live events at or before this position are already among `events` (or the subscriber's).
    pub sent_upto: Position,
    /// Set when the store answered while the room's memory held nothing after the position: the
    /// events between this position and the first live one may have been stored only after the
    /// read (by the shard that had the room before), so they are read again then.
    pub recheck: Option<Position>,
}

/// The replay for a subscriber resuming after `after`, given what the room's memory held at
/// the join (`replay`).
pub async fn plan(
    after: Position,
    replay: Replay,
    fetched: Option<Fetched>,
    backing: Option<&Backing>,
) -> Plan {
    if let Some(f) = fetched {
        let continuous = replay.recovered || replay.generation == f.generation;
        let mut events = f.events;
        events.extend(replay.events.into_iter().map(|(_, b)| b));
        return Plan {
            notice: notice(f.from, f.recovered && continuous, &events),
            events,
            sent_upto: after,
            recheck: None,
        };
    }
    let backing = match backing {
        Some(b) if !replay.recovered => b,
        _ => {
            let recovered = replay.recovered;
            return from_memory(after, replay, recovered);
        }
    };
    let stored = match backing.store.since(backing.room, after).await {
        Ok(stored) => stored,
        Err(e) => {
            backing.metrics.failed("read");
            tracing::warn!(room = backing.room, error = %e, "history store read failed; resume answered from memory");
            return from_memory(after, replay, false);
        }
    };
    let memory_upto = replay.events.last().map(|(p, _)| *p);
    backing.metrics.answered();
    backing.metrics.resumes.inc();
    // Every event before the first one in memory was stored before this shard received it
    // (a batch is appended before it is deleted, and the queue hands a room's next batch out
    // only after that), so the store and the memory join without a gap.
    let reached = stored.reached(after);
    // The memory joins the store only if it let go of nothing the store does not reach: a shard
    // whose memory is shorter than a batch the store has not taken yet would leave a hole.
    let joined = replay.floor.is_none_or(|floor| floor <= reached);
    let covered = stored.covered && joined;
    let recheck = (covered && replay.events.is_empty()).then_some(reached);
    let mut events: Vec<Bytes> = stored.events.into_iter().map(|(_, b)| b).collect();
    events.extend(
        replay
            .events
            .into_iter()
            .filter(|(p, _)| *p > reached)
            .map(|(_, b)| b),
    );
    Plan {
        notice: notice(after, covered, &events),
        events,
        sent_upto: memory_upto.unwrap_or(reached).max(reached),
        recheck,
    }
}

/// The notice that opens a replay of `events`.
fn notice(after: Position, recovered: bool, events: &[Bytes]) -> RecoveryNotice {
    RecoveryNotice {
        after,
        recovered,
        replayed: events.len() as u64,
    }
}

/// A replay of what the room's memory holds after `after`, vouched for as `recovered`.
fn from_memory(after: Position, replay: Replay, recovered: bool) -> Plan {
    let sent_upto = replay.events.last().map_or(after, |(p, _)| (*p).max(after));
    let events: Vec<Bytes> = replay.events.into_iter().map(|(_, b)| b).collect();
    Plan {
        notice: notice(after, recovered, &events),
        events,
        sent_upto,
        recheck: None,
    }
}

/// The stored events after `from` and before `next` (the first live event), or an error when
/// the store cannot vouch for them any more.
pub async fn gap(
    backing: &Backing,
    from: Position,
    next: Position,
) -> Result<Vec<(Position, Bytes)>, StoreError> {
    let stored = backing
        .store
        .since(backing.room, from)
        .await
        .inspect_err(|_| backing.metrics.failed("read"))?;
    if !stored.covered {
        return Err(StoreError::Trimmed(from));
    }
    Ok(stored
        .events
        .into_iter()
        .take_while(|(p, _)| *p < next)
        .collect())
}
