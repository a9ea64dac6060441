//! Presence in this process only: the standalone server, and pods without a store.

use std::collections::{BTreeSet, HashMap};

use chatflow::rooms::RoomId;

use super::{Change, Member, Roster};

/// Every room's connections and users, held under the caller's lock.
#[derive(Default)]
pub(super) struct Rooms {
    rooms: HashMap<RoomId, Room>,
}

#[derive(Default)]
struct Room {
    /// Connection to its user.
    conns: HashMap<String, String>,
    /// User to live connections, name and first-seen time.
    users: HashMap<String, (usize, Member)>,
    /// (first seen, user): the roster's order.
    order: BTreeSet<(u64, String)>,
}

impl Rooms {
    /// Adds connections; the users that were not present before are returned as joins.
    pub(super) fn join(&mut self, room: RoomId, entries: &[(String, Member)]) -> Vec<Change> {
        let r = self.rooms.entry(room).or_default();
        let mut changes = Vec::new();
        for (conn, member) in entries {
            if r.conns.contains_key(conn) {
                continue;
            }
            r.conns.insert(conn.clone(), member.user.clone());
            let (refs, _) = r
                .users
                .entry(member.user.clone())
                .or_insert_with(|| (0, member.clone()));
            *refs += 1;
            if *refs == 1 {
                r.order.insert((member.since, member.user.clone()));
                changes.push(Change::Joined(member.clone()));
            }
        }
        changes
    }

    /// Removes connections; users left with none are returned as leaves.
    pub(super) fn leave(&mut self, room: RoomId, conns: &[String]) -> Vec<Change> {
        let Some(r) = self.rooms.get_mut(&room) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        for conn in conns {
            let Some(user) = r.conns.remove(conn) else {
                continue;
            };
            if let Some((refs, member)) = r.users.get_mut(&user) {
                *refs -= 1;
                if *refs == 0 {
                    r.order.remove(&(member.since, user.clone()));
                    r.users.remove(&user);
                    changes.push(Change::Left(user));
                }
            }
        }
        if r.conns.is_empty() {
            self.rooms.remove(&room);
        }
        changes
    }

    /// Users present in `room`.
    pub(super) fn count(&self, room: RoomId) -> u64 {
        self.rooms.get(&room).map_or(0, |r| r.users.len() as u64)
    }

    /// A page of `room`'s roster, oldest arrival first.
    pub(super) fn roster(&self, room: RoomId, offset: u64, limit: u64) -> Roster {
        let Some(r) = self.rooms.get(&room) else {
            return Roster::default();
        };
        let members = r
            .order
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .filter_map(|(_, user)| r.users.get(user).map(|(_, m)| m.clone()))
            .collect();
        Roster {
            count: r.users.len() as u64,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: &str, since: u64) -> Member {
        Member {
            user: user.to_owned(),
            name: None,
            since,
        }
    }

    #[test]
    fn a_user_stays_until_their_last_connection_goes() {
        let mut rooms = Rooms::default();
        let joins = rooms.join(
            1,
            &[
                ("a1".into(), member("alice", 10)),
                ("a2".into(), member("alice", 11)),
                ("b1".into(), member("bob", 12)),
            ],
        );
        assert_eq!(
            joins,
            vec![
                Change::Joined(member("alice", 10)),
                Change::Joined(member("bob", 12))
            ]
        );
        assert_eq!(rooms.count(1), 2);
        assert!(rooms.leave(1, &["a1".into()]).is_empty());
        assert_eq!(rooms.count(1), 2);
        assert_eq!(
            rooms.leave(1, &["a2".into(), "a2".into()]),
            vec![Change::Left("alice".into())]
        );
        let roster = rooms.roster(1, 0, 10);
        assert_eq!((roster.count, roster.members), (1, vec![member("bob", 12)]));
        rooms.leave(1, &["b1".into()]);
        assert_eq!(rooms.count(1), 0);
        assert!(rooms.rooms.is_empty(), "an empty room is forgotten");
    }

    #[test]
    fn the_roster_pages_in_arrival_order() {
        let mut rooms = Rooms::default();
        let entries: Vec<_> = (0..25)
            .map(|i| (format!("c{i}"), member(&format!("u{i:02}"), 100 - i)))
            .collect();
        rooms.join(3, &entries);
        let first = rooms.roster(3, 0, 10);
        assert_eq!(first.count, 25);
        assert_eq!(
            first.members[0].user, "u24",
            "the earliest arrival comes first"
        );
        let last = rooms.roster(3, 20, 10);
        assert_eq!(last.members.len(), 5);
        assert_eq!(last.members[4].user, "u00");
    }
}
