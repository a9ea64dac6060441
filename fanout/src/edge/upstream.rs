//! One room's upstream subscription: subscribes to the owning shard, relays each event to the
//! room's local subscribers, and resumes from the last relayed position when the shard goes
//! away (a roll, a reshard, this edge falling behind), so a reconnect loses nothing the shard
//! still holds and repeats nothing already relayed.

use chatflow::retry::Backoff;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatflow::protocol::{Position, RecoveryNotice, SubscriberFrame};
use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientReader, connect_reader};

use super::{Hub, Shared};
use crate::room::Event;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);
/// How often an idle room checks whether its linger is over.
const TICK: Duration = Duration::from_secs(1);

/// Why a connection to the shard ended.
enum End {
    /// The edge is stopping.
    Stopped,
    /// No local subscriber for the linger period: the hub is gone from the map.
    Released,
    /// The shard closed or the connection broke.
    Lost(String),
}

/// Since when a room has had no local subscriber.
struct Idle {
    since: Option<Instant>,
    linger: Duration,
}

impl Idle {
    fn over(&mut self, hub: &Hub) -> bool {
        if hub.users.load(Ordering::Acquire) > 0 {
            self.since = None;
            return false;
        }
        self.since.get_or_insert_with(Instant::now).elapsed() >= self.linger
    }
}

/// A connection that ends sooner than this did not really work: the retry pause keeps growing.
const SHORT_LIVED: Duration = Duration::from_secs(1);

/// Relays `room` until the edge stops or nobody has listened for the linger period.
pub(super) async fn run(shared: Arc<Shared>, room: RoomId, hub: Arc<Hub>) {
    let mut idle = Idle {
        since: None,
        linger: shared.config.linger(),
    };
    let mut last: Option<Position> = None;
    let mut pause = Backoff::new(FIRST_PAUSE, LONGEST_PAUSE);
    loop {
        if shared.relaying.is_cancelled() {
            return;
        }
        if idle.over(&hub) && shared.release(room, &hub) {
            return;
        }
        let reader = match connect(&shared, room, last).await {
            Ok(reader) => reader,
            Err(e) => {
                shared.metrics.upstream_failures.inc();
                let wait = pause.next_delay();
                tracing::warn!(room, error = %e, retry_in = ?wait, "edge upstream unavailable");
                tokio::select! {
                    _ = shared.relaying.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        shared.metrics.upstream_connects.inc();
        shared.metrics.upstreams.inc();
        let connected = Instant::now();
        let end = relay(&shared, room, &hub, reader, &mut last, &mut idle).await;
        shared.metrics.upstreams.dec();
        match end {
            End::Stopped => return,
            End::Released => {
                tracing::debug!(room, "edge upstream released: no local subscribers");
                return;
            }
            End::Lost(why) => {
                tracing::info!(room, after = ?last, why, "edge upstream lost; resuming");
                if connected.elapsed() >= SHORT_LIVED {
                    pause.reset();
                }
                tokio::select! {
                    _ = shared.relaying.cancelled() => return,
                    _ = tokio::time::sleep(pause.next_delay()) => {}
                }
            }
        }
    }
}

async fn connect(
    shared: &Shared,
    room: RoomId,
    last: Option<Position>,
) -> Result<ClientReader, String> {
    let url = shared
        .routes
        .resolve(room)
        .await
        .map_err(|e| e.to_string())?;
    let url = match last {
        Some(p) => format!("{url}?after={p}"),
        None => url,
    };
    tokio::select! {
        _ = shared.relaying.cancelled() => Err("stopping".to_owned()),
        r = connect_reader(&url, CONNECT_TIMEOUT) => r.map_err(|e| format!("{url}: {e}")),
    }
}

/// Relays one connection's events until it ends.
async fn relay(
    shared: &Shared,
    room: RoomId,
    hub: &Arc<Hub>,
    mut reader: ClientReader,
    last: &mut Option<Position>,
    idle: &mut Idle,
) -> End {
    match *last {
        // The first subscription: in place once the shard accepted it.
        None if !hub.is_primed() => hub.prime(),
        // Subscribed again without a position (nothing was relayed yet): whatever the outage
        // took cannot be named, so local subscribers are let go to resume with their own.
        None => {
            shared.metrics.upstream_gaps.inc();
            hub.room.restart_history();
            hub.room.close_all();
        }
        Some(_) => {}
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            _ = shared.relaying.cancelled() => return End::Stopped,
            _ = tick.tick() => {
                // Released only here, with the connection still open: if someone came back
                // meanwhile, the relay goes on without a reconnect.
                if idle.over(hub) && shared.release(room, hub) { return End::Released; }
                continue;
            }
            ev = reader.next() => ev,
        };
        let bytes = match ev {
            Ok(ClientEvent::Text(b)) => b,
            Ok(ClientEvent::Binary(_)) => continue,
            Ok(ClientEvent::Closed(code, reason)) => {
                return End::Lost(format!("closed by the shard ({code:?}): {reason}"));
            }
            Err(e) => return End::Lost(e.to_string()),
        };
        // The bytes are relayed as they came; the edge reads only where they stand.
        let position = match serde_json::from_slice::<SubscriberFrame>(&bytes) {
            Ok(SubscriberFrame::Event(event)) => event.position,
            Ok(SubscriberFrame::Recovery(notice)) => {
                if let (Some(after), false) = (*last, notice.recovered) {
                    gap(shared, hub, after, notice.replayed);
                }
                continue;
            }
            // The edge never asks its shards for presence: edges keep their own.
            Ok(SubscriberFrame::Presence(_)) => continue,
            Err(e) => {
                tracing::warn!(room, error = %e, "edge upstream sent a frame it cannot read; skipped");
                continue;
            }
        };
        // A resume never repeats what it was asked to skip, but a shard's redelivery after its
        // own restart could: the position says.
        if let (Some(p), Some(l)) = (position, *last)
            && p <= l
        {
            continue;
        }
        *last = position.or(*last);
        let fanout = hub.room.broadcast(Event { position, bytes });
        shared.metrics.broadcasts.inc();
        shared.metrics.deliveries.inc_by(fanout.delivered);
        shared
            .metrics
            .dropped_slow_subscribers
            .inc_by(fanout.dropped);
    }
}

/// A resume the shard could not cover: the room's history forgets what came before, and the
/// local subscribers are told, as a shard tells a subscriber that resumes.
fn gap(shared: &Shared, hub: &Hub, after: Position, replayed: u64) {
    shared.metrics.upstream_gaps.inc();
    tracing::warn!(after = %after, "edge upstream resumed with a gap the shard cannot vouch for");
    hub.room.restart_history();
    let notice = SubscriberFrame::Recovery(RecoveryNotice {
        after,
        recovered: false,
        replayed,
    });
    hub.room.broadcast(Event {
        position: None,
        bytes: Bytes::from(notice.to_json()),
    });
}
