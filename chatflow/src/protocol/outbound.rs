//! What the producer answers, what travels through the queue, and what subscribers receive.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;

/// The producer's positive answer to one message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OkReply<'a> {
    /// Always "OK".
    pub status: Cow<'a, str>,
    /// Server-assigned id, the same one subscribers see.
    pub message_id: Cow<'a, str>,
    /// When the producer accepted it.
    pub server_timestamp: Cow<'a, str>,
    /// Echo of the sender, normalised to a string.
    pub user_id: Cow<'a, str>,
    /// Echo of the username.
    pub username: Cow<'a, str>,
    /// Echo of the text.
    pub message: Cow<'a, str>,
    /// Echo of the client's timestamp.
    pub timestamp: Cow<'a, str>,
    /// Echo of the message type.
    pub message_type: MessageType,
    /// Echo of the client's id when it sent one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_message_id: Option<Cow<'a, str>>,
}

/// The producer's negative answer to one frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply<'a> {
    /// Always "ERROR".
    pub status: Cow<'a, str>,
    /// Machine-readable code.
    pub error_code: ErrorCode,
    /// Human-readable reason.
    pub error_message: Cow<'a, str>,
    /// When the producer answered.
    pub server_timestamp: Cow<'a, str>,
    /// The client's id for the message when it could be read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_message_id: Option<Cow<'a, str>>,
}

/// Any producer reply, for clients that read both kinds.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "status")]
pub enum Reply {
    /// The message is in the room's queue.
    #[serde(rename = "OK")]
    Ok(OkFields),
    /// The message was refused or could not be queued.
    #[serde(rename = "ERROR")]
    Error(ErrorFields),
}

/// The fields of an OK reply a client needs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OkFields {
    /// Server-assigned id.
    pub message_id: String,
    /// Echo of the client's id.
    #[serde(default)]
    pub client_message_id: Option<String>,
}

/// The fields of an ERROR reply a client needs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorFields {
    /// Machine-readable code.
    pub error_code: ErrorCode,
    /// Human-readable reason.
    pub error_message: String,
    /// The client's id when it could be read.
    #[serde(default)]
    pub client_message_id: Option<String>,
}

/// The queue body: a validated message with the producer's stamps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskMessage {
    /// Server-assigned id, unique per accepted message.
    pub message_id: String,
    /// Room the message belongs to.
    pub room_id: u32,
    /// Sender, as a decimal string.
    pub user_id: String,
    /// Sender's name.
    pub username: String,
    /// Text.
    pub message: String,
    /// Client's timestamp as sent.
    pub timestamp: String,
    /// TEXT, JOIN or LEAVE.
    pub message_type: MessageType,
    /// Producer instance that accepted it.
    pub server_id: String,
    /// Sender's address as the producer saw it.
    pub client_ip: String,
    /// When the producer accepted it (RFC 3339), for end-to-end latency.
    pub received_at: String,
    /// The client's idempotency key, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_message_id: Option<String>,
}

/// One frame a subscriber receives, told apart by its `status`: a room's message (`"OK"`), the
/// notice that opens a resumed subscription (`"RECOVERY"`), or who joined and left the room
/// (`"PRESENCE"`, only to subscribers that asked with `?presence=true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status")]
pub enum SubscriberFrame {
    /// A message of the room.
    #[serde(rename = "OK")]
    Event(BroadcastEvent),
    /// What a resume could replay; the replayed events follow it.
    #[serde(rename = "RECOVERY")]
    Recovery(RecoveryNotice),
    /// Who joined and left the room since the last such frame.
    #[serde(rename = "PRESENCE")]
    Presence(PresenceDiff),
}

/// Who joined and left a room over one interval: at most one such frame per interval, so a
/// reconnect storm in a large room costs its subscribers one frame a second, not one per user.
/// A subscription's first such frame may list no one: changes reach it from then on, so that is
/// when to read the roster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDiff {
    /// Room.
    pub room_id: u32,
    /// Users present after the changes.
    pub count: u64,
    /// Users who arrived, oldest first.
    pub joined: Vec<PresentUser>,
    /// Users who went (their last connection closed or expired).
    pub left: Vec<String>,
    /// Changes left out of `joined` and `left` to keep the frame small; above zero, read the
    /// roster again (`GET /presence/{roomId}`).
    pub omitted: u64,
}

/// A user in a room's roster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PresentUser {
    /// The token's `sub` (or the `user` an anonymous subscriber gave).
    pub user_id: String,
    /// The token's `name`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// When the user's first connection to the room arrived, milliseconds since the epoch.
    pub since: u64,
}

impl SubscriberFrame {
    /// The frame's JSON text, as subscribers receive it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("subscriber frames serialize")
    }
}

impl From<BroadcastEvent> for SubscriberFrame {
    fn from(event: BroadcastEvent) -> Self {
        SubscriberFrame::Event(event)
    }
}

impl From<RecoveryNotice> for SubscriberFrame {
    fn from(notice: RecoveryNotice) -> Self {
        SubscriberFrame::Recovery(notice)
    }
}

/// What subscribers of a room receive for each message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastEvent {
    /// Server-assigned id.
    pub message_id: String,
    /// Room.
    pub room_id: u32,
    /// Sender.
    pub user_id: String,
    /// Sender's name.
    pub username: String,
    /// Text.
    pub message: String,
    /// Client's timestamp.
    pub timestamp: String,
    /// TEXT, JOIN or LEAVE.
    pub message_type: MessageType,
    /// When the consumer broadcast it.
    pub server_timestamp: String,
    /// The client's idempotency key, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_message_id: Option<String>,
    /// Its place in the room: reconnect with `?after=` this to get what follows.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub position: Option<Position>,
}

/// The first event of a subscription that resumed with `?after=`: what the server could replay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryNotice {
    /// The position the subscriber resumed after.
    pub after: Position,
    /// True when the events that follow are every message after `after`; false when the
    /// server's history does not reach back that far (or began after it, on a new shard), so
    /// messages between `after` and the first replayed event may be missing.
    pub recovered: bool,
    /// How many past events follow before live ones.
    pub replayed: u64,
}

impl BroadcastEvent {
    /// Builds the subscriber event for a queued message.
    pub fn from_task(task: TaskMessage, server_timestamp: String) -> Self {
        BroadcastEvent {
            message_id: task.message_id,
            room_id: task.room_id,
            user_id: task.user_id,
            username: task.username,
            message: task.message,
            timestamp: task.timestamp,
            message_type: task.message_type,
            server_timestamp,
            client_message_id: task.client_message_id,
            position: None,
        }
    }
}
