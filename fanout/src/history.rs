//! A room's recent broadcasts, so a subscriber that reconnects with the position of the last
//! message it saw gets what it missed, or is told that this shard cannot cover the gap.

use std::collections::VecDeque;

use bytes::Bytes;
use chatflow::protocol::Position;

/// The last `cap` broadcasts of one room, oldest first.
pub struct History {
    entries: VecDeque<(Position, Bytes)>,
    cap: usize,
    /// Position of the newest entry let go: everything after it is still held. None while
    /// nothing was let go, when the history starts at the first message this shard received.
    floor: Option<Position>,
    /// How many times the history restarted after a gap: equal generations mean the events
    /// recorded in between follow each other without one.
    generation: u64,
}

/// What a resuming subscriber gets before live events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// True when `events` are every message this room had after the subscriber's position.
    pub recovered: bool,
    /// Held events after the subscriber's position, oldest first, with their positions.
    pub events: Vec<(Position, Bytes)>,
    /// The history's generation when the replay was taken.
    pub generation: u64,
    /// The newest position the history let go of, if it let go of any.
    pub floor: Option<Position>,
}

impl History {
    /// An empty history holding at most `cap` events (0 keeps none: every resume is partial).
    pub fn new(cap: usize) -> Self {
        History {
            entries: VecDeque::with_capacity(cap.min(1024)),
            cap,
            floor: None,
            generation: 0,
        }
    }

    /// Records a broadcast, letting go of the oldest beyond the capacity.
    pub fn push(&mut self, position: Position, event: Bytes) {
        if self.cap == 0 {
            self.floor = Some(position);
            return;
        }
        if self.entries.len() == self.cap
            && let Some((old, _)) = self.entries.pop_front()
        {
            self.floor = Some(old);
        }
        self.entries.push_back((position, event));
    }

    /// Whether every message after `after` is held (see [`History::since`]).
    pub fn covers(&self, after: Position) -> bool {
        match (self.floor, self.entries.front()) {
            (Some(floor), _) => after >= floor,
            (None, Some((oldest, _))) => after >= *oldest,
            (None, None) => false,
        }
    }

    /// Forgets everything: what comes next follows a gap, so no earlier position can be vouched
    /// for.
    pub fn restart(&mut self) {
        self.entries.clear();
        self.floor = None;
        self.generation += 1;
    }

    /// The number of restarts so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The newest `n` held events, oldest first.
    pub fn latest(&self, n: usize) -> Vec<(Position, Bytes)> {
        let start = self.entries.len().saturating_sub(n);
        self.entries.range(start..).cloned().collect()
    }

    /// The held events after `after`, and whether they are all that followed it. A position
    /// before what this history reaches (let go, or from before this shard started) cannot be
    /// proven covered: messages between it and the oldest held event may have been broadcast
    /// by another shard, or let go here.
    pub fn since(&self, after: Position) -> Replay {
        let recovered = self.covers(after);
        let start = self.entries.partition_point(|(p, _)| *p <= after);
        Replay {
            recovered,
            generation: self.generation,
            floor: self.floor,
            events: self.entries.range(start..).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: u128) -> Position {
        Position { sequence, index: 0 }
    }

    fn filled(cap: usize, sequences: std::ops::RangeInclusive<u128>) -> History {
        let mut h = History::new(cap);
        for s in sequences {
            h.push(at(s), Bytes::from(s.to_string()));
        }
        h
    }

    fn bodies(r: &Replay) -> Vec<String> {
        r.events
            .iter()
            .map(|(_, e)| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_position_inside_the_history_gets_exactly_what_followed_it() {
        let h = filled(10, 1..=5);
        let r = h.since(at(3));
        assert!(r.recovered);
        assert_eq!(bodies(&r), ["4", "5"]);
        let r = h.since(at(5));
        assert!(
            r.recovered && r.events.is_empty(),
            "caught up: nothing to replay"
        );
    }

    #[test]
    fn a_position_the_history_let_go_of_is_answered_as_partial() {
        let h = filled(3, 1..=6);
        assert!(
            h.since(at(3)).recovered,
            "3 was let go but 4.. are all held"
        );
        let r = h.since(at(2));
        assert!(!r.recovered, "3 is gone");
        assert_eq!(bodies(&r), ["4", "5", "6"]);
    }

    #[test]
    fn a_new_shard_cannot_vouch_for_what_came_before_its_first_message() {
        let h = filled(10, 7..=8);
        let r = h.since(at(5));
        assert!(
            !r.recovered,
            "6 may have been broadcast and deleted elsewhere"
        );
        assert_eq!(bodies(&r), ["7", "8"]);
        assert!(!History::new(10).since(at(5)).recovered);
    }

    #[test]
    fn envelope_indexes_order_within_a_sequence() {
        let mut h = History::new(10);
        for index in 0..3 {
            h.push(
                Position { sequence: 9, index },
                Bytes::from(index.to_string()),
            );
        }
        let r = h.since(Position {
            sequence: 9,
            index: 0,
        });
        assert!(r.recovered);
        assert_eq!(bodies(&r), ["1", "2"]);
    }

    #[test]
    fn a_history_of_zero_holds_nothing_and_promises_nothing() {
        let h = filled(0, 1..=3);
        let r = h.since(at(1));
        assert!(!r.recovered && r.events.is_empty());
        assert_eq!(r.floor, Some(at(3)), "everything up to 3 was let go");
        assert!(
            h.since(at(3)).recovered,
            "caught up with the last broadcast"
        );
    }
}
