//! Joins and leaves gathered over an interval into one frame: a user who left and came back
//! within it (a reconnect) is no change at all, and a storm is named up to a limit and counted
//! beyond it.

use std::collections::HashMap;

use chatflow::protocol::{PresenceDiff, PresentUser};
use chatflow::rooms::RoomId;

use super::{Change, Member};

/// A room's changes since its last frame.
#[derive(Default)]
pub(super) struct Pending {
    /// Per user touched: whether they were present before the interval, and now, if present.
    users: HashMap<String, (bool, Option<Member>)>,
    /// Users in the order first touched, so a frame lists arrivals in order.
    order: Vec<String>,
    /// Send a frame even without changes: a new watcher's first, saying changes flow from now.
    greet: bool,
}

impl Pending {
    /// Adds one change.
    pub(super) fn add(&mut self, change: Change) {
        let (user, now) = match change {
            Change::Joined(m) => (m.user.clone(), Some(m)),
            Change::Left(user) => (user, None),
        };
        match self.users.get_mut(&user) {
            Some(entry) => entry.1 = now,
            None => {
                // A join means they were away before; a leave that they were present.
                let before = now.is_none();
                self.order.push(user.clone());
                self.users.insert(user, (before, now));
            }
        }
    }

    /// These changes followed by `later`: a frame that could not be sent waits for the next.
    pub(super) fn then(mut self, later: Pending) -> Pending {
        let mut users = later.users;
        for user in later.order {
            let Some((before, now)) = users.remove(&user) else {
                continue;
            };
            match self.users.get_mut(&user) {
                Some(entry) => entry.1 = now,
                None => {
                    self.order.push(user.clone());
                    self.users.insert(user, (before, now));
                }
            }
        }
        self.greet |= later.greet;
        self
    }

    /// Asks for a frame at the next interval whatever changes, carrying the count.
    pub(super) fn greet(&mut self) {
        self.greet = true;
    }

    /// Whether nothing is due.
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty() && !self.greet
    }

    /// The frame for these changes, naming at most `max` users; None when they cancel out.
    pub(super) fn frame(self, room: RoomId, count: u64, max: usize) -> Option<PresenceDiff> {
        let mut joined = Vec::new();
        let mut left = Vec::new();
        let mut omitted = 0u64;
        let mut users = self.users;
        for user in self.order {
            let Some((before, now)) = users.remove(&user) else {
                continue;
            };
            match (before, now) {
                (false, Some(m)) if joined.len() + left.len() < max => joined.push(PresentUser {
                    user_id: m.user,
                    name: m.name,
                    since: m.since,
                }),
                (true, None) if joined.len() + left.len() < max => left.push(user),
                (false, Some(_)) | (true, None) => omitted += 1,
                _ => {}
            }
        }
        if joined.is_empty() && left.is_empty() && omitted == 0 && !self.greet {
            return None;
        }
        Some(PresenceDiff {
            room_id: room,
            count,
            joined,
            left,
            omitted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(user: &str) -> Change {
        Change::Joined(Member {
            user: user.to_owned(),
            name: Some(user.to_uppercase()),
            since: 5,
        })
    }

    #[test]
    fn a_reconnect_within_the_interval_is_no_change() {
        let mut p = Pending::default();
        p.add(Change::Left("alice".into()));
        p.add(joined("alice"));
        p.add(joined("bob"));
        p.add(Change::Left("bob".into()));
        assert!(!p.is_empty());
        assert_eq!(p.frame(1, 4, 100), None);
    }

    #[test]
    fn a_frame_names_arrivals_and_departures_in_order() {
        let mut p = Pending::default();
        p.add(joined("carol"));
        p.add(Change::Left("dave".into()));
        p.add(joined("erin"));
        let f = p.frame(7, 2, 100).unwrap();
        assert_eq!(f.room_id, 7);
        assert_eq!(f.count, 2);
        let names: Vec<_> = f.joined.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(names, ["carol", "erin"]);
        assert_eq!(f.joined[0].name.as_deref(), Some("CAROL"));
        assert_eq!(f.left, ["dave"]);
        assert_eq!(f.omitted, 0);
    }

    #[test]
    fn changes_kept_for_a_later_frame_come_before_the_later_ones() {
        let mut first = Pending::default();
        first.add(joined("alice"));
        first.add(Change::Left("bob".into()));
        let mut later = Pending::default();
        later.add(Change::Left("alice".into()));
        later.add(joined("carol"));
        later.greet();
        let f = first.then(later).frame(1, 1, 100).unwrap();
        let names: Vec<_> = f.joined.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(names, ["carol"], "alice came and went");
        assert_eq!(f.left, ["bob"]);
    }

    #[test]
    fn a_storm_is_named_up_to_the_limit_and_counted_beyond_it() {
        let mut p = Pending::default();
        for i in 0..1000 {
            p.add(joined(&format!("u{i}")));
        }
        let f = p.frame(1, 1000, 100).unwrap();
        assert_eq!(f.joined.len(), 100);
        assert_eq!(f.omitted, 900);
        let json =
            String::from_utf8(chatflow::protocol::SubscriberFrame::Presence(f).to_json()).unwrap();
        assert!(json.starts_with(r#"{"status":"PRESENCE","roomId":1,"count":1000,"joined":[{"userId":"u0","name":"U0","since":5}"#), "{json}");
    }
}
