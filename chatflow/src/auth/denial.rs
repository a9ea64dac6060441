//! Why an upgrade was refused, and the HTTP answer that says so.

use hyper::header::WWW_AUTHENTICATE;
use hyper::{Response, StatusCode};

use super::Access;
use crate::http::{self, Body};

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A browser page from an origin not allowed.
    Origin(String),
    /// No token where one is required.
    NoToken,
    /// A token that does not verify, has expired, or says something malformed.
    BadToken(String),
    /// A valid token that does not open this room for this use.
    Room {
        /// Publish or subscribe.
        access: Access,
        /// The room asked for, as in the path.
        room: String,
    },
    /// The client address holds its share of connections already.
    PerIp(usize),
}

impl Denial {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Origin(_) => "origin",
            Denial::NoToken => "no_token",
            Denial::BadToken(_) => "bad_token",
            Denial::Room { .. } => "room",
            Denial::PerIp(_) => "connections_per_ip",
        }
    }

    /// The HTTP answer.
    pub fn response(&self) -> Response<Body> {
        let (status, text) = match self {
            Denial::Origin(o) => (
                StatusCode::FORBIDDEN,
                format!("origin {o} may not open WebSockets here\n"),
            ),
            Denial::NoToken => (
                StatusCode::UNAUTHORIZED,
                "a token is required: send Authorization: Bearer <jwt>, or offer the WebSocket \
                 subprotocols chatflow and chatflow.token.<jwt>\n"
                    .to_owned(),
            ),
            Denial::BadToken(why) => (StatusCode::UNAUTHORIZED, format!("bad token: {why}\n")),
            Denial::Room { access, room } => (
                StatusCode::FORBIDDEN,
                format!("the token does not allow {} room {room}\n", access.verb()),
            ),
            Denial::PerIp(cap) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("at most {cap} connections per client address, retry later\n"),
            ),
        };
        let mut resp = http::text(status, text);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"chatflow\""),
            );
        }
        resp
    }
}
