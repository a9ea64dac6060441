//! Wire protocol: what clients send, what the producer answers, what travels through the queue,
//! and what subscribers receive. Field names match the original Java ChatFlow clients.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Lowest accepted userId.
pub const USER_ID_MIN: u32 = 1;
/// Highest accepted userId.
pub const USER_ID_MAX: u32 = 100_000;
/// Shortest accepted username, in characters.
pub const USERNAME_MIN: usize = 3;
/// Longest accepted username, in characters.
pub const USERNAME_MAX: usize = 20;
/// Longest accepted message text, in characters (not bytes).
pub const MESSAGE_MAX: usize = 500;
/// Longest accepted clientMessageId; it becomes the SQS deduplication id, which allows 128.
pub const CLIENT_MESSAGE_ID_MAX: usize = 128;

/// The kind of chat event a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MessageType {
    /// A chat line.
    Text,
    /// A user entered the room.
    Join,
    /// A user left the room.
    Leave,
}

impl MessageType {
    /// All message types, in wire order.
    pub const ALL: [MessageType; 3] = [MessageType::Text, MessageType::Join, MessageType::Leave];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "TEXT",
            MessageType::Join => "JOIN",
            MessageType::Leave => "LEAVE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "TEXT" => Some(MessageType::Text),
            "JOIN" => Some(MessageType::Join),
            "LEAVE" => Some(MessageType::Leave),
            _ => None,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error codes the producer answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    InvalidJson,
    /// A field breaks a validation rule.
    ValidationError,
    /// The room in the path is not an integer inside the configured range.
    InvalidRoom,
    /// The queue service did not accept the message.
    QueueError,
    /// The connection's token does not let it send this message (another user's userId or
    /// username).
    Forbidden,
    /// The sender is over its message rate; the message was not taken, retry later.
    RateLimited,
}

impl ErrorCode {
    /// Every error code, for metrics labels and reports.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::InvalidJson,
        ErrorCode::ValidationError,
        ErrorCode::InvalidRoom,
        ErrorCode::QueueError,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::InvalidRoom => "INVALID_ROOM",
            ErrorCode::QueueError => "QUEUE_ERROR",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an incoming frame was refused: the code plus a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Rejection {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable reason naming the rule that failed.
    pub reason: String,
    /// The client's id for the message, when it could be read, so the client can match the error.
    pub client_message_id: Option<String>,
}

impl Rejection {
    fn validation(reason: impl Into<String>, client_message_id: Option<&str>) -> Self {
        Rejection {
            code: ErrorCode::ValidationError,
            reason: reason.into(),
            client_message_id: client_message_id.map(str::to_owned),
        }
    }
}

/// Current time as RFC 3339 (UTC), the format of every server timestamp.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Formats a time as RFC 3339.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

mod inbound;
mod outbound;
mod position;

pub use inbound::{ConversationMessage, java_whitespace};
pub use outbound::{
    BroadcastEvent, ErrorFields, ErrorReply, OkFields, OkReply, PresenceDiff, PresentUser,
    RecoveryNotice, Reply, SubscriberFrame, TaskMessage,
};
pub use position::{BadPosition, Position};

#[cfg(test)]
mod tests;
