//! `GET /history/{roomId}`: a room's recent messages over HTTP, from the history resumes use.
//! With `after=POS`, what a subscriber resuming after POS would be replayed, oldest first, at
//! most `limit`; without it, the room's newest `limit` messages.

use std::io::Write;

use bytes::Bytes;
use chatflow::protocol::{BadPosition, Position};
use chatflow::rooms::RoomId;

use crate::admission::resume_position;
use crate::resume::Backing;
use crate::room::Room;

/// Messages a page holds unless the request asks for fewer or more.
pub const DEFAULT_LIMIT: usize = 100;
/// Most messages one page holds.
pub const MAX_LIMIT: usize = 1_000;

/// What a history request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// The position to read after; None asks for the newest messages.
    pub after: Option<Position>,
    /// Most messages returned.
    pub limit: usize,
}

/// Why a history request's query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    /// `after` is not a position.
    #[error("after: {0}")]
    After(#[from] BadPosition),
    /// `limit` is not a count a page may hold.
    #[error("limit must be a whole number from 1 to {MAX_LIMIT}, got {0:?}")]
    Limit(String),
}

impl Query {
    /// Reads `after` and `limit` from a query string (the last of each, if repeated).
    pub fn parse(query: Option<&str>) -> Result<Self, BadQuery> {
        let after = resume_position(query)?;
        let limit = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(key, _)| key == "limit")
                .last()
                .map(|(_, value)| value.into_owned())
        });
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(BadQuery::Limit(v)),
            },
        };
        Ok(Query { after, limit })
    }
}

/// One page of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The position read after, when one was given.
    pub after: Option<Position>,
    /// With `after`: the events are every message that followed it, up to the limit (what a
    /// resume would answer `recovered: true`).
    pub recovered: bool,
    /// With `after`: more messages follow the last one returned; ask again after its position.
    pub more: bool,
    /// Subscriber frames (`"status":"OK"`), oldest first, exactly as subscribers get them.
    pub events: Vec<Bytes>,
}

/// Reads the page `query` asks for from `room`'s memory and, behind it, the history store.
pub async fn read(room: &Room, query: Query, backing: Option<&Backing>) -> Page {
    let Some(after) = query.after else {
        return Page {
            after: None,
            recovered: false,
            more: false,
            events: latest(room, query.limit, backing).await,
        };
    };
    let limit = query.limit;
    let replay = room.since(after);
    let (recovered, mut events) = match backing {
        // The memory does not reach back to the position: the store may.
        Some(b) if !replay.recovered => match b.store.page(b.room, after, limit as u64 + 1).await {
            Ok((stored, more_stored)) => {
                b.metrics.answered();
                let reached = stored.reached(after);
                // The memory continues where the store ends only if it let go of nothing after.
                let joined = replay.floor.is_none_or(|floor| floor <= reached);
                let mut events = stored.events;
                if !more_stored {
                    // A batch is broadcast before it is stored: the newest may be in memory only.
                    events.extend(replay.events.into_iter().filter(|(p, _)| *p > reached));
                }
                (stored.covered && (more_stored || joined), events)
            }
            Err(e) => {
                b.metrics.failed("read");
                tracing::warn!(room = b.room, error = %e, "history store read failed; history page answered from memory");
                (false, replay.events)
            }
        },
        _ => (replay.recovered, replay.events),
    };
    let more = events.len() > limit;
    events.truncate(limit);
    Page {
        after: Some(after),
        recovered,
        more,
        events: events.into_iter().map(|(_, e)| e).collect(),
    }
}

/// The newest `n` messages: the store's (which reach back before this shard) joined with the
/// memory's newer ones (a batch is broadcast before it is stored), or the memory's alone.
async fn latest(room: &Room, n: usize, backing: Option<&Backing>) -> Vec<Bytes> {
    let memory = room.latest(n);
    let mut events = match backing {
        None => memory,
        Some(b) => match b.store.latest(b.room, n as u64).await {
            Ok(mut stored) => {
                b.metrics.answered();
                let upto = stored.last().map(|(p, _)| *p);
                stored.extend(memory.into_iter().filter(|(p, _)| Some(*p) > upto));
                stored
            }
            Err(e) => {
                b.metrics.failed("read");
                tracing::warn!(room = b.room, error = %e, "history store read failed; history page answered from memory");
                memory
            }
        },
    };
    let start = events.len().saturating_sub(n);
    events.drain(start..).map(|(_, e)| e).collect()
}

impl Page {
    /// The response body: `{"roomId", "after", "recovered", "more", "events"}`, the last two
    /// and `recovered` only with `after`.
    pub fn to_json(&self, room: RoomId) -> Vec<u8> {
        let size: usize = self.events.iter().map(|e| e.len() + 1).sum();
        let mut out = Vec::with_capacity(96 + size);
        let head = match self.after {
            Some(after) => write!(
                out,
                r#"{{"roomId":{room},"after":"{after}","recovered":{},"more":{},"events":["#,
                self.recovered, self.more
            ),
            None => write!(out, r#"{{"roomId":{room},"after":null,"events":["#),
        };
        head.expect("writing to a Vec cannot fail");
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(event);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_and_limit_are_read_and_bad_ones_refused() {
        let q = |s| Query::parse(Some(s));
        assert_eq!(
            Query::parse(None),
            Ok(Query {
                after: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            q("after=12-3&limit=5"),
            Ok(Query {
                after: Some(Position {
                    sequence: 12,
                    index: 3
                }),
                limit: 5
            })
        );
        assert_eq!(q("limit=1000").unwrap().limit, MAX_LIMIT);
        for bad in ["limit=0", "limit=1001", "limit=ten", "limit="] {
            assert!(matches!(q(bad), Err(BadQuery::Limit(_))), "{bad}");
        }
        assert!(matches!(q("after=x"), Err(BadQuery::After(_))));
    }

    #[test]
    fn a_page_splices_the_frames_as_subscribers_get_them() {
        let frames = vec![
            Bytes::from_static(br#"{"status":"OK","n":1}"#),
            Bytes::from_static(br#"{"status":"OK","n":2}"#),
        ];
        let page = Page {
            after: Some(Position {
                sequence: 7,
                index: 0,
            }),
            recovered: true,
            more: false,
            events: frames.clone(),
        };
        let v: serde_json::Value = serde_json::from_slice(&page.to_json(3)).unwrap();
        assert_eq!(v["roomId"], 3);
        assert_eq!(v["after"], "7-0");
        assert_eq!(v["recovered"], true);
        assert_eq!(v["more"], false);
        assert_eq!(v["events"][1]["n"], 2);
        let newest = Page {
            after: None,
            events: frames,
            recovered: false,
            more: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&newest.to_json(3)).unwrap();
        assert!(v["after"].is_null() && v.get("recovered").is_none());
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
    }
}
