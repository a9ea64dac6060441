//! The server API, for backends (bots, system notices, moderation) holding the server's API key:
//! `POST /api/rooms/{roomId}/messages` publishes into a room through the same validation,
//! stamping, room order and deduplication as a WebSocket message, answering with the reply a
//! WebSocket sender would get; `GET /api/rooms/{roomId}/presence` reads who is in a room; and
//! `POST /api/users/{userId}/disconnect` closes a user's connections on every pod.

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

use chatflow_fanout::presence::{Presence, roster_page};

use crate::batcher::{self, Pending};
use crate::connection::places_for;
use crate::ingest;
use crate::server::Shared;

/// The room routes' prefix; the rest of the path is `{roomId}/messages` or `{roomId}/presence`.
const PREFIX: &str = "/api/rooms/";

/// The user routes' prefix; the rest of the path is `{userId}/disconnect`.
const USERS: &str = "/api/users/";

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

    /// The refusal of a request without the API key, or None when it carries it.
    fn refused(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let Some(key) = &self.shared.config.api_key else {
            return Some(http::text(
                StatusCode::NOT_FOUND,
                "the server API is off: start the producer with API_KEY\n",
            ));
        };
        if !authorized(req, &key.0) {
            return Some(http::text(
                StatusCode::UNAUTHORIZED,
                "send the API key as `Authorization: apikey KEY`\n",
            ));
        }
        None
    }

    /// Presence, when it is on.
    fn presence(&self) -> Option<&Presence> {
        self.shared.presence.as_ref()
    }

    async fn room_route(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
        rest: String,
    ) -> Response<Body> {
        if let Some(refusal) = self.refused(&req) {
            return refusal;
        }
        let (room, method) = match (
            rest.strip_suffix("/messages"),
            rest.strip_suffix("/presence"),
        ) {
            (Some(room), _) => (room, Method::POST),
            (_, Some(room)) => (room, Method::GET),
            _ => {
                return http::text(
                    StatusCode::NOT_FOUND,
                    format!("not found: use {}\n", self.route()),
                );
            }
        };
        if req.method() != method {
            return http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} {PREFIX}{rest}\n"),
            );
        }
        let room = match self.shared.rooms.parse_room(room) {
            Ok(room) => room,
            Err(e) => return http::text(StatusCode::NOT_FOUND, format!("{e}\n")),
        };
        if method == Method::GET {
            return match self.presence() {
                Some(p) => roster_page(p, room, req.uri().query()).await,
                None => presence_off(),
            };
        }
        self.publish(req, peer, room).await
    }

    async fn publish(self, req: Request<Incoming>, peer: SocketAddr, room: u32) -> Response<Body> {
        let shared = &self.shared;
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

/// The answer of a presence route where presence is off.
fn presence_off() -> Response<Body> {
    http::text(
        StatusCode::NOT_FOUND,
        "presence is off on this server (PRESENCE=false)\n",
    )
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
        Box::pin(self.clone().room_route(req, peer, rest.to_owned()))
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
        format!("{PREFIX}{{roomId}}/messages, {PREFIX}{{roomId}}/presence")
    }
}

/// `POST /api/users/{userId}/disconnect`: closes every connection of a user (senders and
/// subscribers with its token's `sub`, or the `user` an anonymous subscriber gave) on this pod
/// at once (4403) and on the other pods through the presence store. The client may reconnect
/// while its token is valid: revoking it is the identity provider's part.
#[derive(Clone)]
pub struct UsersApi(pub(crate) Api);

impl UsersApi {
    async fn disconnect(self, req: Request<Incoming>, rest: String) -> Response<Body> {
        if let Some(refusal) = self.0.refused(&req) {
            return refusal;
        }
        let Some(user) = rest.strip_suffix("/disconnect") else {
            return http::text(
                StatusCode::NOT_FOUND,
                format!("not found: use {}\n", self.route()),
            );
        };
        if req.method() != Method::POST {
            return http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("POST {USERS}{{userId}}/disconnect\n"),
            );
        }
        let user = percent_encoding::percent_decode_str(user).decode_utf8_lossy();
        if user.is_empty() {
            return http::text(StatusCode::NOT_FOUND, "name a user\n");
        }
        let Some(presence) = self.0.presence() else {
            return presence_off();
        };
        match presence.disconnect(&user).await {
            Ok((here, others)) => {
                tracing::info!(user = %user, closed = here, others_told = others, "disconnected through the server API");
                let body = serde_json::json!({"userId": user, "closedHere": here, "otherPodsTold": others});
                http::json(StatusCode::OK, body.to_string())
            }
            Err(e) => http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("closed here, but the other pods could not be told: {e}; retry\n"),
            ),
        }
    }
}

impl Endpoint for UsersApi {
    fn prefix(&self) -> &'static str {
        USERS
    }

    fn open(&self, req: Request<Incoming>, _peer: SocketAddr, rest: &str) -> Opening {
        Box::pin(self.clone().disconnect(req, rest.to_owned()))
    }

    fn access(&self) -> Access {
        Access::Publish
    }

    fn ready(&self) -> Result<(), String> {
        self.0.ready()
    }

    fn accepts_post(&self) -> bool {
        true
    }

    fn route(&self) -> String {
        format!("{USERS}{{userId}}/disconnect")
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
