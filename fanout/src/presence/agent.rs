//! The agent of a process's presence: it writes the connections that arrived and went in
//! batches, refreshes its connections before they expire, sweeps the expired ones of the rooms it
//! serves or watches, and sends each watched room's changes as one frame per interval. A store
//! that fails stops a pass at its first error: the rest waits for the next pass, so a dead store
//! costs one timeout per pass, not one per room.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chatflow::protocol::SubscriberFrame;
use chatflow::rooms::RoomId;

use super::{Backend, Change, GATHER, MAX_GONE, Member, Presence, diff, now_ms};

/// A room's connections the store is to be told of: arrived (with their users), and gone.
type Writes = (RoomId, Vec<(String, Member)>, Vec<String>);

/// A connection's number in its process (`{pod}:{n}`), which counts arrivals.
fn arrival(conn: &str) -> u64 {
    conn.rsplit_once(':')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX)
}

impl Presence {
    /// Runs until the presence is closed, then writes what is pending.
    pub(super) async fn agent(self) {
        let s = &self.shared;
        let ttl = Duration::from_secs(s.opts.ttl_secs);
        let mut refresh = tokio::time::interval(ttl / 4);
        let mut diffs = tokio::time::interval(Duration::from_millis(s.opts.diff_interval_ms));
        for t in [&mut refresh, &mut diffs] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = s.stop.cancelled() => break,
                _ = s.wake.notified() => {
                    tokio::time::sleep(GATHER).await;
                    self.flush().await;
                }
                _ = refresh.tick() => {
                    self.flush().await;
                    self.refresh().await;
                }
                _ = diffs.tick() => self.send_diffs().await,
            }
        }
        self.flush().await;
    }

    /// Tells the store of the connections that arrived and went since the last flush.
    async fn flush(&self) {
        let s = &self.shared;
        let work: Vec<Writes> = {
            let mut local = s.local.lock().unwrap_or_else(|e| e.into_inner());
            let work = local
                .iter_mut()
                .filter(|(_, l)| !l.fresh.is_empty() || !l.gone.is_empty())
                .map(|(room, l)| {
                    let mut fresh: Vec<(String, Member)> = std::mem::take(&mut l.fresh)
                        .into_iter()
                        .filter_map(|c| l.conns.get(&c).map(|m| (c, m.clone())))
                        .collect();
                    // In arrival order: a user's first connection gives the roster its name.
                    fresh.sort_by_key(|(c, m)| (m.since, arrival(c)));
                    (*room, fresh, std::mem::take(&mut l.gone))
                })
                .collect();
            local.retain(|_, l| !l.conns.is_empty() || !l.gone.is_empty());
            work
        };
        let mut failed = false;
        for (room, fresh, gone) in work {
            let r = match &s.backend {
                Backend::Memory(rooms) => {
                    let changes = {
                        let mut rooms = rooms.lock().unwrap_or_else(|e| e.into_inner());
                        let mut changes = rooms.join(room, &fresh);
                        changes.extend(rooms.leave(room, &gone));
                        changes
                    };
                    self.note(room, changes);
                    continue;
                }
                Backend::Remote(r) => r,
            };
            // Past a failure the pass only keeps the leaves: joins not written are written by
            // the next refresh, which writes every local connection.
            if failed {
                self.put_back(room, gone);
                continue;
            }
            // The store publishes the changes; every pod, this one too, hears them.
            let now = now_ms();
            let expiry = now + s.opts.ttl_secs * 1_000;
            let written = match r.join(room, &fresh, now, expiry, self.key_ttl()).await {
                Ok(()) if gone.is_empty() => Ok(()),
                Ok(()) => r.leave(room, &gone, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                s.metrics.store_errors.inc();
                tracing::warn!(room, error = %e, "presence: changes not written; retrying");
                failed = true;
                self.put_back(room, gone);
            }
        }
    }

    /// Keys of a room outlive its last refresh by this long.
    fn key_ttl(&self) -> Duration {
        Duration::from_secs(self.shared.opts.ttl_secs * 2)
    }

    /// Queues leaves not written again for the next flush.
    fn put_back(&self, room: RoomId, gone: Vec<String>) {
        if gone.is_empty() {
            return;
        }
        let mut local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
        let l = local.entry(room).or_default();
        let room_left = MAX_GONE.saturating_sub(l.gone.len());
        l.gone.extend(gone.into_iter().take(room_left));
    }

    /// Pushes every local connection's expiry forward and sweeps the rooms of expired ones.
    async fn refresh(&self) {
        let Backend::Remote(r) = &self.shared.backend else {
            return;
        };
        let rooms: Vec<(RoomId, Vec<(String, Member)>)> = {
            let local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
            local
                .iter()
                .map(|(room, l)| {
                    let conns = l.conns.iter().map(|(c, m)| (c.clone(), m.clone()));
                    (*room, conns.collect())
                })
                .collect()
        };
        let mut swept: HashSet<RoomId> = HashSet::new();
        for (room, conns) in rooms {
            if self.shared.stop.is_cancelled() {
                return;
            }
            let now = now_ms();
            let expiry = now + self.shared.opts.ttl_secs * 1_000;
            // A refresh adds back what the store lost (a flush or restart of it), too.
            let done = match r.join(room, &conns, now, expiry, self.key_ttl()).await {
                Ok(()) => r.sweep(room, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                self.shared.metrics.store_errors.inc();
                tracing::warn!(room, error = %e, "presence: refresh failed; retrying next pass");
                return;
            }
            swept.insert(room);
        }
        // Rooms watched here but with no local users are swept too, so their leaves by expiry
        // reach the watchers.
        for room in self.watched_rooms().difference(&swept) {
            if let Err(e) = r.sweep(*room, now_ms()).await {
                self.shared.metrics.store_errors.inc();
                tracing::warn!(room, error = %e, "presence: sweep failed; retrying next pass");
                return;
            }
        }
    }

    /// The rooms local subscribers watch.
    pub(super) fn watched_rooms(&self) -> HashSet<RoomId> {
        let watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        watched.keys().copied().collect()
    }

    /// Adds changes to a watched room's next frame.
    pub(super) fn note(&self, room: RoomId, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watched.get_mut(&room) {
            for c in changes {
                w.pending.add(c);
            }
        }
    }

    /// Sends each watched room's gathered changes as one frame; a room whose count cannot be
    /// read keeps its changes for the next interval.
    async fn send_diffs(&self) {
        let due: Vec<(RoomId, diff::Pending)> = {
            let mut watched = self
                .shared
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            watched
                .iter_mut()
                .filter(|(_, w)| !w.pending.is_empty())
                .map(|(room, w)| (*room, std::mem::take(&mut w.pending)))
                .collect()
        };
        for (room, pending) in due {
            let count = match &self.shared.backend {
                Backend::Memory(rooms) => {
                    rooms.lock().unwrap_or_else(|e| e.into_inner()).count(room)
                }
                Backend::Remote(r) => match r.count(room).await {
                    Ok(n) => n,
                    Err(e) => {
                        self.shared.metrics.store_errors.inc();
                        tracing::warn!(room, error = %e, "presence: count failed; the frame waits");
                        let mut watched = self
                            .shared
                            .watched
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if let Some(w) = watched.get_mut(&room) {
                            let later = std::mem::take(&mut w.pending);
                            w.pending = pending.then(later);
                        }
                        continue;
                    }
                },
            };
            let Some(frame) = pending.frame(room, count, self.shared.opts.diff_max as usize) else {
                continue;
            };
            let bytes = Bytes::from(SubscriberFrame::Presence(frame).to_json());
            let watched = self
                .shared
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(w) = watched.get(&room) {
                let _ = w.tx.send(bytes);
                self.shared.metrics.frames.inc();
            }
        }
    }
}
