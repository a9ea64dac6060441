//! What a token says: its subject, and the rooms it may publish to and subscribe to.

use serde::{Deserialize, Serialize};

use crate::rooms::RoomId;

/// The claims ChatFlow reads from a token; `exp`, `nbf`, `iss` and `aud` are checked by the
/// decoder before these are looked at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user: the `userId` every message on the connection must carry.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// The user's display name; when present, messages must carry it as `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The rooms the token opens.
    #[serde(default)]
    pub chatflow: RoomClaims,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer (checked by the decoder when one is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: a string or a list (checked by the decoder when one is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

impl Claims {
    /// Claims for user `sub` valid for `ttl_secs` from now, opening `publish` and `subscribe`.
    pub fn new(
        sub: impl Into<String>,
        ttl_secs: u64,
        publish: &[&str],
        subscribe: &[&str],
    ) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Claims {
            sub: sub.into(),
            exp: now + ttl_secs,
            name: None,
            chatflow: RoomClaims {
                publish: owned(publish),
                subscribe: owned(subscribe),
            },
            nbf: None,
            iss: None,
            aud: None,
        }
    }
}

/// Rooms a token may publish to and subscribe to, each a list of `"7"`, `"1-5"` or `"*"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomClaims {
    /// Rooms the holder may send into (`/chat/{roomId}`).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Rooms the holder may read (`/subscribe/{roomId}`).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// A set of rooms as inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSet(Vec<(RoomId, RoomId)>);

/// Most entries a room list may have: a token is read on every connection.
pub const MAX_ROOM_ENTRIES: usize = 64;

impl RoomSet {
    /// Parses entries `"7"`, `"1-5"` or `"*"`; a malformed entry makes the whole list invalid,
    /// so a typo never widens or silently narrows what a token grants.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.len() > MAX_ROOM_ENTRIES {
            return Err(format!("more than {MAX_ROOM_ENTRIES} room entries"));
        }
        entries
            .iter()
            .map(|e| {
                let e = e.trim();
                let bad = || format!("room entry {e:?} is not N, A-B or *");
                if e == "*" {
                    return Ok((RoomId::MIN, RoomId::MAX));
                }
                let (a, b) = e.split_once('-').unwrap_or((e, e));
                let a: RoomId = a.trim().parse().map_err(|_| bad())?;
                let b: RoomId = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                Ok((a, b))
            })
            .collect::<Result<_, _>>()
            .map(RoomSet)
    }

    /// Whether `room` is in the set.
    pub fn contains(&self, room: RoomId) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> Result<RoomSet, String> {
        RoomSet::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ranges_single_rooms_and_everything() {
        let s = set(&["1-5", "9"]).unwrap();
        assert!(s.contains(1) && s.contains(5) && s.contains(9));
        assert!(!s.contains(6) && !s.contains(0) && !s.contains(10));
        assert!(set(&["*"]).unwrap().contains(123_456));
        assert!(!set(&[]).unwrap().contains(1), "no entries open nothing");
    }

    #[test]
    fn a_malformed_entry_refuses_the_whole_list() {
        for bad in ["5-1", "a", "1-", "-3", "1-2-3", ""] {
            assert!(set(&["1-5", bad]).is_err(), "{bad:?} accepted");
        }
        let many: Vec<String> = (0..=MAX_ROOM_ENTRIES).map(|i| i.to_string()).collect();
        assert!(RoomSet::parse(&many).is_err());
    }
}
