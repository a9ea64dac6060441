//! Identity and connection limits: who may open which room's WebSocket, from which page, and
//! for how long. Tokens are JWTs whose `sub` is the user and whose `chatflow` claim lists the
//! rooms they may publish to and subscribe to; see `docs/security.md`.

mod claims;
mod denial;
mod gate;
mod keys;
mod options;

use std::sync::Arc;

pub use claims::{Claims, MAX_ROOM_ENTRIES, RoomClaims, RoomSet};
pub use denial::Denial;
pub use gate::{Gate, IpSlot, MAX_TOKEN_BYTES, bearer};
pub use keys::KeyError;
pub use options::AuthOptions;

/// The subprotocol a server answers with when a client offers it: browsers cannot set headers
/// on a WebSocket, so they offer `chatflow` and `chatflow.token.<jwt>` instead.
pub const PROTOCOL: &str = "chatflow";

/// The prefix of the subprotocol that carries a token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "chatflow.token.";

/// Close code for a connection whose token expired (after the grace): fetch a fresh token and
/// reconnect, resuming with `?after=`.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;

/// What a WebSocket route does with its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Sends messages into it (`/chat/{roomId}`).
    Publish,
    /// Reads its broadcasts (`/subscribe/{roomId}`).
    Subscribe,
}

impl Access {
    /// The verb in a refusal.
    pub fn verb(self) -> &'static str {
        match self {
            Access::Publish => "publishing to",
            Access::Subscribe => "subscribing to",
        }
    }
}

/// What a verified token grants its connection.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's `sub`.
    pub subject: String,
    /// `sub` as a userId, when it is one: the only userId the connection may send as.
    pub user_id: Option<u32>,
    /// The token's `name`, the only username the connection may send as when present.
    pub name: Option<String>,
    /// Rooms it may publish to.
    pub publish: RoomSet,
    /// Rooms it may subscribe to.
    pub subscribe: RoomSet,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// When and how a connection is closed whatever it is doing.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When.
    pub at: tokio::time::Instant,
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

impl Deadline {
    /// A timer for `deadline` that never fires without one; made once per connection.
    pub fn sleep(deadline: Option<Deadline>) -> tokio::time::Sleep {
        // Thirty years: tokio clamps far instants, and a connection lives less.
        const NEVER: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);
        tokio::time::sleep_until(
            deadline.map_or_else(|| tokio::time::Instant::now() + NEVER, |d| d.at),
        )
    }
}

/// What the gate let through with a request: the grant, the place under the per-address cap
/// and the deadline. An endpoint takes it from the request and keeps it for the connection.
#[derive(Clone, Default)]
pub struct Pass {
    grant: Option<Arc<Grant>>,
    /// Held, never read: dropping the last pass of a connection frees its address's place.
    _slot: Option<Arc<IpSlot>>,
    deadline: Option<Deadline>,
}

impl Pass {
    /// The pass the gate put on `req`; an anonymous one when no gate stood before the route.
    pub fn take<B>(req: &mut hyper::Request<B>) -> Pass {
        req.extensions_mut().remove::<Pass>().unwrap_or_default()
    }

    /// The token's grant, when tokens are checked.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_deref()
    }

    /// When the connection must close, if ever.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
}

/// Signs `claims` with an HS256 `secret`: for the load generator and tests, which act as the
/// identity provider a deployment would have.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("claims serialize")
}

#[cfg(test)]
mod tests;
