//! The server API: `POST /api/rooms/{roomId}/messages`, for backends (bots, system notices,
//! moderation) that publish into a room over HTTP with the server's API key. A message goes
//! through the same validation, stamping, room order and deduplication as one sent on a
//! WebSocket, and the response body is the reply a WebSocket sender would get.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chatflow::auth::Access;
use chatflow::client_ip;
use chatflow::http::{self, Body};
use chatflow::protocol::{ConversationMessage, ErrorCode};
use chatflow::router::{Endpoint, Opening};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;

use crate::batcher::{self, Pending};
use crate::connection::places_for;
use crate::ingest;
use crate::server::Shared;

/// The route's prefix; the rest of the path is `{roomId}/messages`.
const PREFIX: &str = "/api/rooms/";

/// Shortest API key taken: a short one could be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// Longest wait for a request's body, and for room under MAX_UNANSWERED.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The server API over a producer's rooms.
#[derive(Clone)]
pub struct Api {
    shared: Arc<Shared>,
}

impl Api {
    /// The API of the producer sharing `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Api { shared }
    }

    async fn publish(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
        rest: String,
    ) -> Response<Body> {
        let shared = &self.shared;
        if req.method() != Method::POST {
            return http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("POST a message to {PREFIX}{{roomId}}/messages\n"),
            );
        }
        let Some(key) = &shared.config.api_key else {
            return http::text(
                StatusCode::NOT_FOUND,
                "the server API is off: start the producer with API_KEY\n",
            );
        };
        if !authorized(&req, &key.0) {
            return http::text(
                StatusCode::UNAUTHORIZED,
                "send the API key as `Authorization: apikey KEY`\n",
            );
        }
        let Some(room) = rest.strip_suffix("/messages") else {
            return http::text(
                StatusCode::NOT_FOUND,
                format!("not found: POST to {PREFIX}{{roomId}}/messages\n"),
            );
        };
        let room = match shared.rooms.parse_room(room) {
            Ok(room) => room,
            Err(e) => return http::text(StatusCode::NOT_FOUND, format!("{e}\n")),
        };
        if shared.life.is_stopping() {
            return http::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        let ip = client_ip::resolve(peer, req.headers(), &shared.config.trusted_proxies);
        let limit = shared.config.max_frame_bytes as usize;
        let too_large = || {
            http::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a message is at most {limit} bytes (MAX_FRAME_BYTES)\n"),
            )
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large();
        }
        let body = Limited::new(req.into_body(), limit).collect();
        let body = match tokio::time::timeout(WAIT, body).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => return too_large(),
            Err(_) => {
                return http::text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the body did not arrive within {WAIT:?}\n"),
                );
            }
        };
        // Held until answered, like a WebSocket message, so memory stays bounded.
        let places = shared
            .unanswered
            .clone()
            .acquire_many_owned(places_for(shared, body.len()));
        let Ok(Ok(_place)) = tokio::time::timeout(WAIT, places).await else {
            return http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many messages waiting to be published, retry later\n",
            );
        };
        let (status, reply) = self.accept(room, &body, &ip.to_string()).await;
        http::json(status, reply)
    }

    /// Validates, stamps and publishes one message; the HTTP status and the reply.
    async fn accept(&self, room: u32, body: &Bytes, ip: &str) -> (StatusCode, Bytes) {
        let shared = &self.shared;
        let m = &shared.metrics;
        m.messages_received.inc();
        let msg = match ConversationMessage::parse(body) {
            Ok(msg) => msg,
            Err(rejection) => {
                m.error(rejection.code);
                return (StatusCode::BAD_REQUEST, ingest::rejection_reply(&rejection));
            }
        };
        m.messages_validated.inc();
        let stamped = ingest::stamp(msg, shared.destination(room), &shared.config.server_id, ip);
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            entry: stamped.entry,
            reply,
        };
        if shared.in_place {
            batcher::publish_in_place(room, &shared.batch, [pending]).await;
        } else if shared.batcher(room).send(pending).await.is_err() {
            m.error(ErrorCode::QueueError);
            let why = "the producer is shutting down";
            let cmid = stamped.client_message_id.as_deref();
            let reply = ingest::error_reply(ErrorCode::QueueError, why, cmid);
            return (StatusCode::SERVICE_UNAVAILABLE, reply);
        }
        let cmid = stamped.client_message_id.as_deref();
        match ingest::unpublished_reply(outcome.await, cmid) {
            None => (StatusCode::OK, stamped.ok),
            Some(error) => (StatusCode::SERVICE_UNAVAILABLE, error),
        }
    }
}

/// Whether the request carries `Authorization: apikey KEY`, compared in constant time.
fn authorized<B>(req: &Request<B>, key: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), key.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Endpoint for Api {
    fn prefix(&self) -> &'static str {
        PREFIX
    }

    fn open(&self, req: Request<Incoming>, peer: SocketAddr, rest: &str) -> Opening {
        Box::pin(self.clone().publish(req, peer, rest.to_owned()))
    }

    fn access(&self) -> Access {
        Access::Publish
    }

    fn ready(&self) -> Result<(), String> {
        self.shared.life.ready("producer")
    }

    fn accepts_post(&self) -> bool {
        true
    }

    fn route(&self) -> String {
        format!("{PREFIX}{{roomId}}/messages")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_is_taken() {
        let req = |auth: Option<&str>| {
            let mut r = Request::post("/api/rooms/1/messages");
            if let Some(a) = auth {
                r = r.header(hyper::header::AUTHORIZATION, a);
            }
            r.body(()).unwrap()
        };
        let key = "0123456789abcdef";
        assert!(authorized(&req(Some("apikey 0123456789abcdef")), key));
        for wrong in [
            None,
            Some("apikey 0123456789abcdeF"),
            Some("apikey 0123456789abcde"),
            Some("Bearer 0123456789abcdef"),
            Some("0123456789abcdef"),
        ] {
            assert!(!authorized(&req(wrong), key), "{wrong:?}");
        }
    }
}
