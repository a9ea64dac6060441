//! Wire protocol: what clients send, what the producer answers, what travels through the queue,
//! and what subscribers receive. Field names match the original Java ChatFlow clients.

use std::borrow::Cow;
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
}

impl ErrorCode {
    /// Every error code, for metrics labels and reports.
    pub const ALL: [ErrorCode; 4] = [
        ErrorCode::InvalidJson,
        ErrorCode::ValidationError,
        ErrorCode::InvalidRoom,
        ErrorCode::QueueError,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::InvalidRoom => "INVALID_ROOM",
            ErrorCode::QueueError => "QUEUE_ERROR",
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

/// userId as clients send it: a JSON string or number.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawUserId<'a> {
    Number(serde_json::Number),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

/// The client frame as parsed, before the rules run; borrowed to keep the hot path copy-free.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage<'a> {
    #[serde(borrow)]
    user_id: Option<RawUserId<'a>>,
    #[serde(borrow)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_message_id: Option<Cow<'a, str>>,
}

/// A chat message from a client that passed every validation rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMessage {
    /// Sender, 1..=100000.
    pub user_id: u32,
    /// Sender's name, 3-20 ASCII letters and digits.
    pub username: String,
    /// Text, 1-500 characters, not blank.
    pub message: String,
    /// Client's timestamp, RFC 3339 with offset, kept as sent.
    pub timestamp: String,
    /// TEXT, JOIN or LEAVE.
    pub message_type: MessageType,
    /// Client's idempotency key; a resend with the same id is delivered once.
    pub client_message_id: Option<String>,
}

impl ConversationMessage {
    /// Parses and validates one client text frame.
    pub fn parse(frame: &[u8]) -> Result<Self, Rejection> {
        let raw: RawMessage<'_> = match serde_json::from_slice(frame) {
            Ok(raw) => raw,
            Err(err) => return Err(classify_parse_error(frame, err)),
        };
        let cmid = raw.client_message_id.as_deref();
        if let Some(id) = cmid {
            validate_client_message_id(id)?;
        }
        let user_id = validate_user_id(raw.user_id.as_ref(), cmid)?;
        let username = required(raw.username.as_deref(), "username", cmid)?;
        validate_username(username, cmid)?;
        let message = required(raw.message.as_deref(), "message", cmid)?;
        validate_message(message, cmid)?;
        let timestamp = required(raw.timestamp.as_deref(), "timestamp", cmid)?;
        validate_timestamp(timestamp, cmid)?;
        let message_type = required(raw.message_type.as_deref(), "messageType", cmid)?;
        let message_type = MessageType::parse(message_type).ok_or_else(|| {
            Rejection::validation(
                format!("messageType must be exactly TEXT, JOIN or LEAVE, got {message_type:?}"),
                cmid,
            )
        })?;
        Ok(ConversationMessage {
            user_id,
            username: username.to_owned(),
            message: message.to_owned(),
            timestamp: timestamp.to_owned(),
            message_type,
            client_message_id: cmid.map(str::to_owned),
        })
    }
}

/// A syntactically valid JSON object with a field of the wrong type is a validation error,
/// anything else is not JSON we can read.
fn classify_parse_error(frame: &[u8], err: serde_json::Error) -> Rejection {
    match serde_json::from_slice::<serde_json::Value>(frame) {
        Ok(serde_json::Value::Object(map)) => {
            let cmid = map
                .get("clientMessageId")
                .and_then(|v| v.as_str())
                .filter(|id| validate_client_message_id(id).is_ok());
            let field = [
                "userId",
                "username",
                "message",
                "timestamp",
                "messageType",
                "clientMessageId",
            ]
            .into_iter()
            .find(|f| {
                !matches!(
                    (map.get(*f), *f),
                    (Some(serde_json::Value::String(_)), _)
                        | (Some(serde_json::Value::Number(_)), "userId")
                        | (Some(serde_json::Value::Null), _)
                        | (None, _)
                )
            });
            let reason = match field {
                Some("userId") => "userId must be a string or a number".to_owned(),
                Some(f) => format!("{f} must be a string"),
                None => format!("malformed field: {err}"),
            };
            Rejection::validation(reason, cmid)
        }
        Ok(_) => Rejection {
            code: ErrorCode::InvalidJson,
            reason: "message must be a JSON object".to_owned(),
            client_message_id: None,
        },
        Err(_) => Rejection {
            code: ErrorCode::InvalidJson,
            reason: format!("malformed JSON: {err}"),
            client_message_id: None,
        },
    }
}

fn required<'a>(
    value: Option<&'a str>,
    field: &str,
    cmid: Option<&str>,
) -> Result<&'a str, Rejection> {
    value.ok_or_else(|| Rejection::validation(format!("{field} is required"), cmid))
}

fn validate_client_message_id(id: &str) -> Result<(), Rejection> {
    // SQS accepts only printable ASCII without spaces in a deduplication id.
    let ok = !id.is_empty()
        && id.len() <= CLIENT_MESSAGE_ID_MAX
        && id.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Rejection::validation(
            format!(
                "clientMessageId must be 1-{CLIENT_MESSAGE_ID_MAX} printable ASCII characters without spaces"
            ),
            None,
        ))
    }
}

fn validate_user_id(raw: Option<&RawUserId<'_>>, cmid: Option<&str>) -> Result<u32, Rejection> {
    let range_error = || {
        Rejection::validation(
            format!("userId must be an integer between {USER_ID_MIN} and {USER_ID_MAX}"),
            cmid,
        )
    };
    let value = match raw {
        None => return Err(Rejection::validation("userId is required", cmid)),
        Some(RawUserId::Number(n)) => n.as_u64().ok_or_else(range_error)?,
        Some(RawUserId::Text(s)) => s.trim().parse::<u64>().map_err(|_| range_error())?,
    };
    if (u64::from(USER_ID_MIN)..=u64::from(USER_ID_MAX)).contains(&value) {
        Ok(value as u32)
    } else {
        Err(range_error())
    }
}

fn validate_username(username: &str, cmid: Option<&str>) -> Result<(), Rejection> {
    let ok = (USERNAME_MIN..=USERNAME_MAX).contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Rejection::validation(
            format!(
                "username must be {USERNAME_MIN}-{USERNAME_MAX} letters or digits (A-Z, a-z, 0-9)"
            ),
            cmid,
        ))
    }
}

fn validate_message(message: &str, cmid: Option<&str>) -> Result<(), Rejection> {
    if message.trim().is_empty() {
        return Err(Rejection::validation(
            "message must not be empty or blank",
            cmid,
        ));
    }
    // Cheap byte bound first: 500 characters are at most 2000 bytes of UTF-8.
    if message.len() > MESSAGE_MAX && message.chars().count() > MESSAGE_MAX {
        return Err(Rejection::validation(
            format!("message must be at most {MESSAGE_MAX} characters"),
            cmid,
        ));
    }
    Ok(())
}

fn validate_timestamp(timestamp: &str, cmid: Option<&str>) -> Result<(), Rejection> {
    OffsetDateTime::parse(timestamp, &Rfc3339)
        .map(|_| ())
        .map_err(|_| {
            Rejection::validation(
                "timestamp must be an ISO-8601 date-time with an offset, like 2026-11-27T10:00:00Z",
                cmid,
            )
        })
}

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
    /// Always "OK".
    pub status: String,
    /// The client's idempotency key, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_message_id: Option<String>,
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
            status: "OK".to_owned(),
            client_message_id: task.client_message_id,
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

#[cfg(test)]
mod tests;
