//! A room's audience and memory: its subscribers, its recent broadcasts and the message ids it
//! has broadcast.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use chatflow::protocol::Position;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::history::{History, Replay};

/// One broadcast as a subscriber's connection receives it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its place in the room, when the queue gave one.
    pub position: Option<Position>,
    /// The JSON text frame.
    pub bytes: Bytes,
}

/// One subscriber as the room sees it.
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Event>,
    kick: CancellationToken,
}

/// A subscriber's place in the room.
pub struct Joined {
    /// Its id, to leave with.
    pub id: u64,
    /// Fires when the room drops it for falling behind.
    pub kick: CancellationToken,
    /// What it missed, when it resumed from a position.
    pub replay: Option<Replay>,
}

/// Remembers the last `cap` message ids, oldest forgotten first.
pub struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    /// Empty memory of `cap` ids.
    pub fn new(cap: usize) -> Self {
        Seen {
            ids: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Records `id`; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Subscribers of one room and the ids already broadcast to them.
pub struct Room {
    /// Held while a broadcast is recorded and fanned out, and while a subscriber joins, so a
    /// resuming subscriber's replay and its first live event neither overlap nor leave a gap.
    history: Mutex<History>,
    subscribers: RwLock<Vec<Subscriber>>,
    /// Ids already broadcast, to drop redeliveries.
    pub seen: Mutex<Seen>,
    next_id: AtomicU64,
    joined: Notify,
}

/// What a broadcast did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers handed the message.
    pub delivered: u64,
    /// Subscribers dropped for being full.
    pub dropped: u64,
}

impl Room {
    /// An empty room remembering `dedup` ids and its last `history` broadcasts.
    pub fn new(dedup: usize, history: usize) -> Self {
        Room {
            history: Mutex::new(History::new(history)),
            subscribers: RwLock::default(),
            seen: Mutex::new(Seen::new(dedup)),
            next_id: AtomicU64::new(1),
            joined: Notify::new(),
        }
    }

    /// Adds a subscriber, with what it missed since `after` when it resumes from there.
    pub fn join(&self, tx: mpsc::Sender<Event>, after: Option<Position>) -> Joined {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = CancellationToken::new();
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let replay = after.map(|after| history.since(after));
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                id,
                tx,
                kick: kick.clone(),
            });
        drop(history);
        self.joined.notify_waiters();
        Joined { id, kick, replay }
    }

    /// Returns once the room has a subscriber (at once if it has one).
    pub async fn audience(&self) {
        loop {
            // Created before the check, so a join in between still wakes it.
            let joined = self.joined.notified();
            if !self.is_empty() {
                return;
            }
            joined.await;
        }
    }

    /// Removes a subscriber that left.
    pub fn leave(&self, id: u64) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.id != id);
    }

    /// Current subscriber count.
    pub fn len(&self) -> usize {
        self.subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether nobody listens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the event in the history and hands it to every subscriber; one whose buffer is
    /// full is dropped, so a slow reader never stalls the room.
    pub fn broadcast(&self, event: Event) -> Fanout {
        let mut fanout = Fanout::default();
        let mut slow = Vec::new();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(position) = event.position {
            history.push(position, event.bytes.clone());
        }
        {
            let subs = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
            for s in subs.iter() {
                match s.tx.try_send(event.clone()) {
                    Ok(()) => fanout.delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => slow.push(s.id),
                    // Already leaving; its connection task removes it.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        if !slow.is_empty() {
            let mut subs = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
            subs.retain(|s| {
                let keep = !slow.contains(&s.id);
                if !keep {
                    s.kick.cancel();
                }
                keep
            });
            fanout.dropped = slow.len() as u64;
        }
        drop(history);
        fanout
    }

    /// What a subscriber resuming after `after` would be replayed from memory, without joining.
    pub fn since(&self, after: Position) -> Replay {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(after)
    }

    /// The newest `n` broadcasts held in memory, oldest first.
    pub fn latest(&self, n: usize) -> Vec<(Position, Bytes)> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latest(n)
    }

    /// Whether the history holds every message after `after`.
    pub fn covers(&self, after: Position) -> bool {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .covers(after)
    }

    /// The history's generation (see [`History::generation`]).
    pub fn generation(&self) -> u64 {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation()
    }

    /// Forgets the history: the events to come follow a gap.
    pub fn restart_history(&self) {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restart();
    }

    /// Disconnects everyone (shutdown).
    pub fn close_all(&self) {
        for s in self
            .subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            drop(s.tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_forgets_the_oldest_beyond_its_capacity() {
        let mut s = Seen::new(2);
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        assert!(s.insert("b"));
        assert!(s.insert("c"));
        assert!(s.insert("a"), "a was forgotten");
        assert!(!s.insert("c"));
    }

    fn event(sequence: u128) -> Event {
        Event {
            position: Some(Position { sequence, index: 0 }),
            bytes: Bytes::from(sequence.to_string()),
        }
    }

    #[tokio::test]
    async fn a_full_subscriber_is_dropped_and_the_rest_still_get_the_message() {
        let room = Room::new(10, 10);
        let (fast_tx, mut fast_rx) = mpsc::channel(8);
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        room.join(fast_tx, None);
        let kicked = room.join(slow_tx, None).kick;
        let ev = event(1);
        assert_eq!(
            room.broadcast(ev.clone()),
            Fanout {
                delivered: 2,
                dropped: 0
            }
        );
        assert_eq!(
            room.broadcast(event(2)),
            Fanout {
                delivered: 1,
                dropped: 1
            }
        );
        assert!(kicked.is_cancelled());
        assert_eq!(room.len(), 1);
        assert_eq!(fast_rx.recv().await.unwrap().bytes, ev.bytes);
    }

    #[tokio::test]
    async fn a_resuming_subscriber_gets_the_gap_then_live_events_without_overlap() {
        let room = Room::new(10, 10);
        for s in 1..=4 {
            room.broadcast(event(s));
        }
        let (tx, mut rx) = mpsc::channel(8);
        let joined = room.join(
            tx,
            Some(Position {
                sequence: 2,
                index: 0,
            }),
        );
        let replay = joined.replay.expect("resumed");
        assert!(replay.recovered);
        let bytes: Vec<Bytes> = replay.events.into_iter().map(|(_, b)| b).collect();
        assert_eq!(bytes, [event(3).bytes, event(4).bytes]);
        room.broadcast(event(5));
        assert_eq!(rx.recv().await.unwrap().bytes, event(5).bytes);
        assert!(rx.try_recv().is_err(), "nothing replayed twice");
    }

    #[tokio::test]
    async fn audience_waits_for_the_first_subscriber() {
        let room = std::sync::Arc::new(Room::new(10, 10));
        let waiting = tokio::spawn({
            let room = room.clone();
            async move { room.audience().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let (tx, _rx) = mpsc::channel(1);
        room.join(tx, None);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the join")
            .unwrap();
    }
}
