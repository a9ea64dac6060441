//! The deduplication memory of one embedded queue: the ids seen within the window, at most
//! [`DEDUP_MAX_IDS`] of them and never fewer than the most recent half of that, each with the
//! message id its first copy got.

use std::collections::HashMap;
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

type Table = HashMap<Key, (uuid::Uuid, Instant), BuildHasherDefault<KeyBits>>;

/// Ids remembered in two generations of half the bound each: new ids go into the current one,
/// and a full current one replaces the previous, which is forgotten whole. Nothing is removed
/// one by one, so the tables never fill with tombstones and never pause a publish to rebuild
/// themselves; they grow during the first generation and are reused after. The most recent half
/// of the bound is always remembered, the bound never exceeded.
#[derive(Default)]
pub(super) struct Dedup {
    hashers: [RandomState; 2],
    current: Table,
    previous: Table,
    /// When the newest id of each generation leaves the window: past it, the whole one can go.
    current_until: Option<Instant>,
    previous_until: Option<Instant>,
}

/// Ids per generation.
const GENERATION: usize = DEDUP_MAX_IDS / 2;

impl Dedup {
    fn key(&self, id: &str) -> Key {
        Key(self.hashers[0].hash_one(id), self.hashers[1].hash_one(id))
    }

    /// Remembers `id` with a new message id, unless it is remembered and its window is open.
    pub(super) fn remember(&mut self, id: &str, now: Instant) -> Seen {
        let key = self.key(id);
        for table in [&self.current, &self.previous] {
            if let Some((first, until)) = table.get(&key)
                && *until > now
            {
                return Seen::Before(*first);
            }
        }
        if self.current.len() >= GENERATION {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.previous_until = self.current_until.take();
            // Cleared, not dropped: its memory serves the next generation.
            self.current.clear();
        }
        let message_id = uuid::Uuid::new_v4();
        let until = now + DEDUP_WINDOW;
        // An id whose window ended may still sit in the current generation: this replaces it.
        self.current.insert(key, (message_id, until));
        self.current_until = Some(until);
        Seen::New(message_id)
    }

    /// Forgets each generation whose every id has left the window.
    pub(super) fn expire(&mut self, now: Instant) {
        if self.previous_until.is_some_and(|at| at <= now) {
            self.previous = Table::default();
            self.previous_until = None;
        }
        if self.current_until.is_some_and(|at| at <= now) {
            self.current = Table::default();
            self.current_until = None;
        }
    }

    /// Ids remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
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

    #[test]
    fn an_id_past_its_window_is_new_again_before_its_generation_goes() {
        let mut d = Dedup::default();
        let start = Instant::now();
        let Seen::New(first) = d.remember("a", start) else {
            panic!("a new id")
        };
        let later = start + DEDUP_WINDOW / 2;
        d.remember("b", later);
        let after = start + DEDUP_WINDOW;
        d.expire(after);
        assert!(matches!(d.remember("a", after), Seen::New(id) if id != first));
        assert!(
            matches!(d.remember("b", after), Seen::Before(_)),
            "b's window is open"
        );
    }

    #[test]
    fn memory_stays_within_the_bound_and_keeps_the_latest_half() {
        let mut d = Dedup::default();
        let now = Instant::now();
        let ids: Vec<String> = (0..DEDUP_MAX_IDS * 2 + 7)
            .map(|i| format!("id-{i}"))
            .collect();
        for id in &ids {
            d.remember(id, now);
            assert!(d.len() <= DEDUP_MAX_IDS);
        }
        let recent = &ids[ids.len() - GENERATION..];
        assert!(
            recent
                .iter()
                .all(|id| matches!(d.remember(id, now), Seen::Before(_)))
        );
        assert!(
            matches!(d.remember(&ids[0], now), Seen::New(_)),
            "the oldest went"
        );
    }
}
