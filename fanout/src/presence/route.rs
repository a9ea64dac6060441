//! `GET /presence/{roomId}`: who is in a room, a page at a time.

use std::net::SocketAddr;

use chatflow::auth::Access;
use chatflow::http::{self, Body};
use chatflow::lifecycle::Lifecycle;
use chatflow::protocol::PresentUser;
use chatflow::rooms::{RoomId, RoomRange};
use chatflow::router::{Endpoint, Opening};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::Presence;

/// Users a page holds unless the request asks for fewer or more.
pub const DEFAULT_LIMIT: u64 = 100;
/// Most users one page holds.
pub const MAX_LIMIT: u64 = 1_000;

/// Highest offset taken: past any room's size, and within what the store reads as an index.
pub const MAX_OFFSET: u64 = 1_000_000_000;

/// The roster route over a process's rooms.
#[derive(Clone)]
pub struct PresenceRoute {
    presence: Presence,
    rooms: RoomRange,
    life: Lifecycle,
    /// Named in `/ready` when the service is not ready.
    service: &'static str,
}

impl PresenceRoute {
    /// The route for `rooms`, ready while `life` is.
    pub fn new(
        presence: Presence,
        rooms: RoomRange,
        life: Lifecycle,
        service: &'static str,
    ) -> Self {
        PresenceRoute {
            presence,
            rooms,
            life,
            service,
        }
    }

    async fn answer(&self, req: Request<Incoming>, room: &str) -> Response<Body> {
        let room_id = match self.rooms.parse_room(room) {
            Ok(id) => id,
            Err(e) => return http::text(StatusCode::NOT_FOUND, format!("no such room: {e}\n")),
        };
        roster_page(&self.presence, room_id, req.uri().query()).await
    }
}

/// The answer to a roster request for `room` with `query` (`offset`, `limit`): the route's,
/// and the server API's.
pub async fn roster_page(presence: &Presence, room: RoomId, query: Option<&str>) -> Response<Body> {
    let (offset, limit) = match page(query) {
        Ok(p) => p,
        Err(e) => return http::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    match presence.roster(room, offset, limit).await {
        Ok(roster) => http::json(StatusCode::OK, to_json(room, offset, roster)),
        Err(e) => http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}; retry later\n"),
        ),
    }
}

/// Reads `offset` (default 0) and `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
fn page(query: Option<&str>) -> Result<(u64, u64), String> {
    let mut offset = 0;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "offset" => {
                offset = value
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_OFFSET)
                    .ok_or_else(|| {
                        format!("offset must be a whole number up to {MAX_OFFSET}, got {value:?}")
                    })?;
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}, got {value:?}")
                    })?;
            }
            _ => {}
        }
    }
    Ok((offset, limit))
}

fn to_json(room: RoomId, offset: u64, roster: super::Roster) -> Vec<u8> {
    let shown = roster.members.len() as u64;
    let next = (offset + shown < roster.count && shown > 0).then_some(offset + shown);
    let members: Vec<PresentUser> = roster
        .members
        .into_iter()
        .map(|m| PresentUser {
            user_id: m.user,
            name: m.name,
            since: m.since,
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "roomId": room,
        "count": roster.count,
        "members": members,
        "next": next,
    }))
    .expect("a roster serializes")
}

impl Endpoint for PresenceRoute {
    fn prefix(&self) -> &'static str {
        "/presence/"
    }

    fn open(&self, req: Request<Incoming>, _peer: SocketAddr, room: &str) -> Opening {
        let route = self.clone();
        let room = room.to_owned();
        Box::pin(async move { route.answer(req, &room).await })
    }

    fn access(&self) -> Access {
        Access::Subscribe
    }

    fn ready(&self) -> Result<(), String> {
        self.life.ready(self.service)
    }

    fn gates_plain_requests(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_query_is_read_and_bounded() {
        assert_eq!(page(None), Ok((0, DEFAULT_LIMIT)));
        assert_eq!(page(Some("offset=200&limit=50")), Ok((200, 50)));
        assert!(page(Some("limit=0")).is_err());
        assert!(page(Some("limit=1001")).is_err());
        assert!(page(Some("offset=-1")).is_err());
        assert!(page(Some("offset=100000000000000000000")).is_err());
    }

    #[test]
    fn next_points_past_the_page_until_the_roster_ends() {
        let m = |u: &str| super::super::Member {
            user: u.into(),
            name: None,
            since: 1,
        };
        let roster = |n: u64, members| super::super::Roster { count: n, members };
        let v: serde_json::Value =
            serde_json::from_slice(&to_json(4, 0, roster(3, vec![m("a"), m("b")]))).unwrap();
        assert_eq!(v["next"], 2);
        assert_eq!(v["count"], 3);
        assert_eq!(v["members"][1]["userId"], "b");
        let v: serde_json::Value =
            serde_json::from_slice(&to_json(4, 2, roster(3, vec![m("c")]))).unwrap();
        assert!(v["next"].is_null());
    }
}
