//! Turning one client frame into a queued message and its reply.

use std::borrow::Cow;

use bytes::Bytes;
use chatflow::protocol::{
    ConversationMessage, ErrorCode, ErrorReply, OkReply, Rejection, TaskMessage, now_rfc3339,
};
use chatflow::queue::{BodyFormat, PublishEntry};
use chatflow::rooms::RoomId;
use tokio::sync::oneshot;

use crate::batcher::Outcome;

/// What a frame leads to: an answer now, or one once its batch is published.
pub enum Reply {
    /// Answer ready (validation errors, invalid room).
    Now(Bytes),
    /// Answer after publishing: the OK reply to send on success, the pending outcome.
    Later {
        /// The OK reply, serialized ahead so the writer only copies bytes.
        ok: Bytes,
        /// Client's id, for the error reply on failure.
        client_message_id: Option<String>,
        /// Outcome from the room's batcher.
        outcome: oneshot::Receiver<Outcome>,
    },
}

/// Serializes an ERROR reply.
pub fn error_reply(code: ErrorCode, reason: &str, client_message_id: Option<&str>) -> Bytes {
    let reply = ErrorReply {
        status: Cow::Borrowed("ERROR"),
        error_code: code,
        error_message: Cow::Borrowed(reason),
        server_timestamp: Cow::Owned(now_rfc3339()),
        client_message_id: client_message_id.map(Cow::Borrowed),
    };
    serde_json::to_vec(&reply)
        .expect("replies serialize")
        .into()
}

/// The QUEUE_ERROR reply to a message its batch did not publish (`outcome` failed, or was
/// dropped); None when it was published and its OK reply is due.
pub fn unpublished_reply<E>(
    outcome: Result<Outcome, E>,
    client_message_id: Option<&str>,
) -> Option<Bytes> {
    let reason = match outcome {
        Ok(Ok(())) => return None,
        Ok(Err(reason)) => reason,
        Err(_) => "the message was dropped before it was published".to_owned(),
    };
    Some(error_reply(
        ErrorCode::QueueError,
        &reason,
        client_message_id,
    ))
}

/// Serializes the ERROR reply for a rejected frame.
pub fn rejection_reply(r: &Rejection) -> Bytes {
    error_reply(r.code, &r.reason, r.client_message_id.as_deref())
}

/// A validated message stamped and ready for its room's batcher.
pub struct Stamped {
    /// The queue entry.
    pub entry: PublishEntry,
    /// The OK reply.
    pub ok: Bytes,
    /// Client's id.
    pub client_message_id: Option<String>,
}

/// Namespace of message ids derived from a client's id.
const CLIENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6368_6174_666c_6f77_2d6d_7367_2d69_6401);

/// The message id: random, or derived from (room, user, clientMessageId) when the client sent
/// one, so a resend gets the same id (acked and broadcast alike) and is stored once, while two
/// users who happen to pick the same clientMessageId stay distinct.
pub fn message_id(room: RoomId, user_id: u32, client_message_id: Option<&str>) -> String {
    match client_message_id {
        Some(cmid) => uuid::Uuid::new_v5(
            &CLIENT_ID_NAMESPACE,
            format!("{room}\n{user_id}\n{cmid}").as_bytes(),
        )
        .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// Serializes into a buffer sized for the usual result, so it is not grown step by step on
/// the ingest hot path.
fn to_json<T: serde::Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, value).expect("stamped messages serialize");
    buf
}

/// Where a stamped message goes: its room, and the FIFO message group that orders it (the
/// room's queue key: the room itself, or the first room of its bucket).
#[derive(Debug, Clone, Copy)]
pub struct Destination {
    /// The room.
    pub room: RoomId,
    /// The message group.
    pub group: RoomId,
}

/// Stamps a validated message with its ids and the producer's metadata.
pub fn stamp(
    msg: ConversationMessage,
    to: Destination,
    server_id: &str,
    client_ip: &str,
) -> Stamped {
    let room = to.room;
    let message_id = message_id(room, msg.user_id, msg.client_message_id.as_deref());
    let now = now_rfc3339();
    let user_id = msg.user_id.to_string();
    let ok = OkReply {
        status: Cow::Borrowed("OK"),
        message_id: Cow::Borrowed(&message_id),
        server_timestamp: Cow::Borrowed(&now),
        user_id: Cow::Borrowed(&user_id),
        username: Cow::Borrowed(&msg.username),
        message: Cow::Borrowed(&msg.message),
        timestamp: Cow::Borrowed(&msg.timestamp),
        message_type: msg.message_type,
        client_message_id: msg.client_message_id.as_deref().map(Cow::Borrowed),
    };
    let ok: Bytes = to_json(&ok, 256 + msg.message.len()).into();
    // A client's resend maps to the same id, hence to the same queue entry.
    let dedup_id = message_id.clone();
    let task = TaskMessage {
        message_id,
        room_id: room,
        user_id,
        username: msg.username,
        message: msg.message,
        timestamp: msg.timestamp,
        message_type: msg.message_type,
        server_id: server_id.to_owned(),
        client_ip: client_ip.to_owned(),
        received_at: now,
        client_message_id: msg.client_message_id.clone(),
    };
    Stamped {
        entry: PublishEntry {
            body: String::from_utf8(to_json(&task, 320 + task.message.len()))
                .expect("JSON is UTF-8"),
            group_id: to.group.to_string(),
            dedup_id,
            format: BodyFormat::Task,
        },
        ok,
        client_message_id: msg.client_message_id,
    }
}
