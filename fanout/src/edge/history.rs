//! `GET /history/{roomId}` on an edge: passed on to the room's shard, which holds the room's
//! memory and reads its history store; the edge has checked the token, the shard checks none.

use std::net::SocketAddr;
use std::time::Duration;

use chatflow::auth::Access;
use chatflow::http::{self, Body};
use chatflow::router::{Endpoint, Opening};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::Edge;

/// Longest wait for the shard's whole answer: within the grace of a stopping edge.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer passed on: a page of a thousand events of the largest size.
const MAX_ANSWER_BYTES: usize = 32 << 20;

/// The edge's history route.
#[derive(Clone)]
pub(super) struct HistoryRoute(pub(super) Edge);

impl HistoryRoute {
    async fn forward(self: &HistoryRoute, req: Request<Incoming>, room: &str) -> Response<Body> {
        let shared = &self.0.shared;
        let room_id = match shared.rooms.parse_room(room) {
            Ok(id) => id,
            Err(e) => return http::text(StatusCode::NOT_FOUND, format!("no such room: {e}\n")),
        };
        let unreachable = |why: String| {
            tracing::debug!(room = room_id, error = %why, "history not passed on");
            http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("room {room_id}'s shard is not reachable from this edge, retry later\n"),
            )
        };
        // The shard's subscribe URL names its host and port; its history route sits beside it.
        let shard = match shared.routes.resolve(room_id).await {
            Ok(url) => url,
            Err(e) => return unreachable(e.to_string()),
        };
        let Some(authority) = shard
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.authority().cloned())
        else {
            return unreachable(format!("route {shard:?} names no host"));
        };
        let path = match req.uri().query() {
            Some(q) => format!("/history/{room_id}?{q}"),
            None => format!("/history/{room_id}"),
        };
        match http::get(authority.as_str(), &path, FORWARD_TIMEOUT, MAX_ANSWER_BYTES).await {
            // The room is this edge's: a shard that says otherwise is one a stale route names
            // (a reshard in progress).
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                unreachable("the shard does not serve the room".into())
            }
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut answer = Response::new(Body::new(body));
                *answer.status_mut() = parts.status;
                if let Some(kind) = parts.headers.get(hyper::header::CONTENT_TYPE) {
                    answer
                        .headers_mut()
                        .insert(hyper::header::CONTENT_TYPE, kind.clone());
                }
                answer
            }
            Err(e) => unreachable(e),
        }
    }
}

impl Endpoint for HistoryRoute {
    fn prefix(&self) -> &'static str {
        "/history/"
    }

    fn open(&self, req: Request<Incoming>, _peer: SocketAddr, room: &str) -> Opening {
        let route = self.clone();
        let room = room.to_owned();
        Box::pin(async move { route.forward(req, &room).await })
    }

    fn access(&self) -> Access {
        Access::Subscribe
    }

    fn ready(&self) -> Result<(), String> {
        self.0.shared.life.ready("edge")
    }

    fn gates_plain_requests(&self) -> bool {
        true
    }
}
