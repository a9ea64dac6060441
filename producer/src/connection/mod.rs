//! One client WebSocket, served one of two ways. On a queue in memory a publish never waits, so
//! one task reads, publishes and answers, as an echo server would ([`in_place`]). On SQS a
//! publish is a round trip shared by the room, so a reader hands messages to the room's batcher
//! and a writer answers them as their batches come back ([`relayed`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use chatflow::auth::Pass;
use chatflow::protocol::{ConversationMessage, ErrorCode};
use chatflow::rooms::RoomId;
use chatflow::ws::{self, FrameSink};
use tokio::io::AsyncWrite;

use crate::batcher::Outcome;
use crate::ingest;
use crate::server::Shared;

mod in_place;
mod relayed;

/// The room a socket was opened for: served here, or the reason it is not.
#[derive(Clone)]
pub enum Target {
    /// A room of the configured range.
    Room(RoomId),
    /// Every message on this socket is answered INVALID_ROOM with this reason.
    Invalid(String),
}

/// Who is on the other end of a connection.
pub struct Peer {
    /// The client's address, behind trusted proxies.
    pub ip: IpAddr,
    /// The same, as stamped on its messages.
    pub ip_text: String,
    /// What the gate let through: the token's grant, the address's place, the deadline.
    pub pass: Pass,
    /// Nanoseconds the connection's reading waits before its next frame (0: none): a sender over
    /// its rate is answered RATE_LIMITED, then not read until its limit takes a message again,
    /// so a flood costs the server its TCP buffers rather than its CPU.
    pause_ns: AtomicU64,
    /// Set when a disconnect through the server API stopped the connection.
    disconnected: Option<Arc<AtomicBool>>,
}

impl Peer {
    /// The peer at `ip` with `pass`.
    pub fn new(ip: IpAddr, pass: Pass) -> Self {
        Peer {
            ip,
            ip_text: ip.to_string(),
            pass,
            pause_ns: AtomicU64::new(0),
            disconnected: None,
        }
    }

    /// The peer, closable by a disconnect that sets `flag` (see `Presence::session`).
    pub fn disconnectable(mut self, flag: Option<Arc<AtomicBool>>) -> Self {
        self.disconnected = flag;
        self
    }

    /// Whether a disconnect through the server API stopped the connection, rather than a
    /// shutdown.
    pub fn is_disconnected(&self) -> bool {
        self.disconnected
            .as_ref()
            .is_some_and(|d| d.load(Ordering::Acquire))
    }

    /// How long reading waits now, if a refusal asked it to; asking clears it.
    pub fn take_pause(&self) -> Option<Duration> {
        if self.pause_ns.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(Duration::from_nanos(
            self.pause_ns.swap(0, Ordering::Relaxed),
        ))
    }

    fn pause_for(&self, wait: Duration) {
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.pause_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// Bytes one place under MAX_UNANSWERED stands for: the operator sizes the bound from a pod's
/// memory limit at this much per place.
pub const PLACE_BYTES: usize = 4 * 1024;

/// What a message holds besides its frame until it is answered: the stamped entry and its reply.
const ANSWER_BYTES: usize = 1024;

/// Places a frame of `len` bytes holds until answered, so the bound is one of bytes, not of
/// messages: most messages take one, a 16 KiB frame five. Never more than the bound itself, or
/// the frame could never be taken.
pub(crate) fn places_for(shared: &Shared, len: usize) -> u32 {
    places(len, shared.config.max_unanswered)
}

fn places(len: usize, bound: u64) -> u32 {
    let places = (len + ANSWER_BYTES).div_ceil(PLACE_BYTES) as u64;
    places.min(bound).min(u64::from(u32::MAX)) as u32
}

/// Serves one upgraded connection until either side closes, its deadline comes, or the
/// producer shuts down.
pub async fn serve(
    ws: fastwebsockets::WebSocket<ws::Stream>,
    shared: Arc<Shared>,
    target: Target,
    peer: Peer,
    leave: CancellationToken,
) {
    if shared.in_place {
        in_place::serve(ws, shared, target, peer, leave).await
    } else {
        relayed::serve(ws, shared, target, peer, leave).await
    }
}

/// Why the connection's identity or rate refuses `msg`, if it does.
fn refusal(shared: &Shared, peer: &Peer, msg: &ConversationMessage) -> Option<(ErrorCode, String)> {
    if let Some(grant) = peer.pass.grant() {
        if grant.user_id != Some(msg.user_id) {
            let why = format!(
                "userId {} is not this connection's user ({})",
                msg.user_id, grant.subject
            );
            return Some((ErrorCode::Forbidden, why));
        }
        if let Some(name) = &grant.name
            && *name != msg.username
        {
            let why = format!(
                "username {} is not this connection's user's name",
                msg.username
            );
            return Some((ErrorCode::Forbidden, why));
        }
    }
    match shared.rates.take(msg.user_id, peer.ip) {
        Ok(()) => None,
        Err((over, wait)) => {
            peer.pause_for(wait);
            Some((ErrorCode::RateLimited, over.reason()))
        }
    }
}

/// A frame validated and stamped for its room, or the error reply to send at once.
fn validate(
    shared: &Shared,
    target: &Target,
    frame: &Bytes,
    peer: &Peer,
) -> Result<(RoomId, ingest::Stamped), Bytes> {
    let m = &shared.metrics;
    m.messages_received.inc();
    let parsed = ConversationMessage::parse(frame);
    let room = match target {
        Target::Room(room) => *room,
        Target::Invalid(reason) => {
            m.error(ErrorCode::InvalidRoom);
            let cmid = match &parsed {
                Ok(msg) => msg.client_message_id.clone(),
                Err(r) => r.client_message_id.clone(),
            };
            return Err(ingest::error_reply(
                ErrorCode::InvalidRoom,
                reason,
                cmid.as_deref(),
            ));
        }
    };
    let msg = match parsed {
        Ok(msg) => msg,
        Err(rejection) => {
            m.error(rejection.code);
            return Err(ingest::rejection_reply(&rejection));
        }
    };
    if let Some((code, why)) = refusal(shared, peer, &msg) {
        m.error(code);
        return Err(ingest::error_reply(
            code,
            &why,
            msg.client_message_id.as_deref(),
        ));
    }
    m.messages_validated.inc();
    Ok((
        room,
        ingest::stamp(
            msg,
            shared.destination(room),
            &shared.config.server_id,
            &peer.ip_text,
        ),
    ))
}

/// The answer to a binary frame, counted as the error it is.
fn binary_refused(shared: &Shared) -> Bytes {
    shared.metrics.error(ErrorCode::InvalidJson);
    ingest::error_reply(
        ErrorCode::InvalidJson,
        "binary frames are not accepted: send JSON as a text frame",
        None,
    )
}

/// Writes the answer to a published message: its OK reply, or QUEUE_ERROR with the reason.
fn answer<W: AsyncWrite + Unpin, E>(
    sink: &mut FrameSink<W>,
    ok: &Bytes,
    client_message_id: Option<&str>,
    outcome: Result<Outcome, E>,
) {
    match ingest::unpublished_reply(outcome, client_message_id) {
        None => sink.text(ok),
        Some(error) => sink.text(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_holds_places_by_its_size_within_the_bound() {
        assert_eq!(places(300, 100_000), 1, "a chat message takes one place");
        assert_eq!(places(3 * 1024, 100_000), 1);
        assert_eq!(places(3 * 1024 + 1, 100_000), 2);
        assert_eq!(places(16 * 1024, 100_000), 5);
        assert_eq!(places(16 << 20, 3), 3, "never more than the whole bound");
    }
}
