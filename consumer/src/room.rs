//! A room's audience and memory: its subscribers and the message ids it has broadcast.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One subscriber as the room sees it.
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    kick: CancellationToken,
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
    subscribers: RwLock<Vec<Subscriber>>,
    /// Ids already broadcast, to drop redeliveries.
    pub seen: Mutex<Seen>,
    next_id: AtomicU64,
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
    /// An empty room remembering `dedup` ids.
    pub fn new(dedup: usize) -> Self {
        Room {
            subscribers: RwLock::default(),
            seen: Mutex::new(Seen::new(dedup)),
            next_id: AtomicU64::new(1),
        }
    }

    /// Adds a subscriber; returns its id and the token that fires when it is dropped.
    pub fn join(&self, tx: mpsc::Sender<Bytes>) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = CancellationToken::new();
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                id,
                tx,
                kick: kick.clone(),
            });
        (id, kick)
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

    /// Hands the same bytes to every subscriber; one whose buffer is full is dropped, so a
    /// slow reader never stalls the room.
    pub fn broadcast(&self, event: &Bytes) -> Fanout {
        let mut fanout = Fanout::default();
        let mut slow = Vec::new();
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
        fanout
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

    #[tokio::test]
    async fn a_full_subscriber_is_dropped_and_the_rest_still_get_the_message() {
        let room = Room::new(10);
        let (fast_tx, mut fast_rx) = mpsc::channel(8);
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        room.join(fast_tx);
        let (_, kicked) = room.join(slow_tx);
        let ev = Bytes::from_static(b"e");
        assert_eq!(
            room.broadcast(&ev),
            Fanout {
                delivered: 2,
                dropped: 0
            }
        );
        assert_eq!(
            room.broadcast(&ev),
            Fanout {
                delivered: 1,
                dropped: 1
            }
        );
        assert!(kicked.is_cancelled());
        assert_eq!(room.len(), 1);
        assert_eq!(fast_rx.recv().await.unwrap(), ev);
    }
}
