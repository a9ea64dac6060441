//! The deduplication memory of one embedded queue: the ids seen within the window, at most
//! [`DEDUP_MAX_IDS`] of them, each with the message id its first copy got.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use tokio::time::Instant;

use super::{DEDUP_MAX_IDS, DEDUP_WINDOW};

/// A deduplication id reduced to 128 bits by two randomly keyed hashes. The table then holds no
/// strings: remembering an id copies none, and cleaning or growing the table hashes none again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(u64, u64);

/// Uses a [`Key`]'s own bits as its hash: they already are a keyed hash.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Whether a deduplication id was seen within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// First time: the message id given to this copy.
    New(uuid::Uuid),
    /// A duplicate: the message id its first copy got.
    Before(uuid::Uuid),
}

/// Ids seen, oldest first, and what each first copy got.
#[derive(Default)]
pub(super) struct Dedup {
    hashers: [RandomState; 2],
    seen: HashMap<Key, (uuid::Uuid, Instant), BuildHasherDefault<KeyBits>>,
    order: VecDeque<(Instant, Key)>,
}

impl Dedup {
    fn key(&self, id: &str) -> Key {
        Key(self.hashers[0].hash_one(id), self.hashers[1].hash_one(id))
    }

    /// Remembers `id` with a new message id, unless it is already remembered.
    pub(super) fn remember(&mut self, id: &str, now: Instant) -> Seen {
        let key = self.key(id);
        if let Some((first, _)) = self.seen.get(&key) {
            return Seen::Before(*first);
        }
        let message_id = uuid::Uuid::new_v4();
        let expires = now + DEDUP_WINDOW;
        self.seen.insert(key, (message_id, expires));
        self.order.push_back((expires, key));
        if self.order.len() > DEDUP_MAX_IDS
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        Seen::New(message_id)
    }

    /// Forgets the ids whose window has ended.
    pub(super) fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, key)) = self.order.pop_front() {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_remembered_with_its_first_message_id() {
        let mut d = Dedup::default();
        let now = Instant::now();
        let Seen::New(first) = d.remember("a", now) else {
            panic!("a new id")
        };
        assert_eq!(d.remember("a", now), Seen::Before(first));
        assert!(matches!(d.remember("b", now), Seen::New(id) if id != first));
        d.expire(now + DEDUP_WINDOW);
        assert!(matches!(d.remember("a", now), Seen::New(_)), "window over");
    }
}
