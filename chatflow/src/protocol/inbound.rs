//! What a client sends: parsing a frame and the validation rules, each with its own reason.

use std::borrow::Cow;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;

/// userId as clients send it: a JSON string or number.
enum RawUserId<'a> {
    Number(serde_json::Number),
    Text(Text<'a>),
}

// By hand rather than `#[serde(untagged)]`: that buffers the value and tries each variant in
// turn, building an error message for every string id before it takes it, on every frame.
impl<'de: 'a, 'a> Deserialize<'de> for RawUserId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Either<'a> {
            type Value = RawUserId<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(RawUserId::Number(n.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(RawUserId::Number(n.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(n)
                    .map(RawUserId::Number)
                    .ok_or_else(|| E::custom("userId is not a finite number"))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(RawUserId::Text(Text(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(RawUserId::Text(Text(Cow::Owned(s.to_owned()))))
            }
        }
        d.deserialize_any(Either(std::marker::PhantomData))
    }
}

/// A JSON string, borrowed from the frame unless it holds escapes. serde's own `Cow<str>`
/// borrows only as a field of its own, not inside an `Option`, where it always copies.
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Str<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Str(std::marker::PhantomData))
    }
}

/// The client frame as parsed, before the rules run; borrowed to keep the hot path copy-free.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage<'a> {
    #[serde(borrow)]
    user_id: Option<RawUserId<'a>>,
    #[serde(borrow)]
    username: Option<Text<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow)]
    timestamp: Option<Text<'a>>,
    #[serde(borrow)]
    message_type: Option<Text<'a>>,
    #[serde(borrow)]
    client_message_id: Option<Text<'a>>,
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

/// Longest `messageId`, `serverId`, `clientIp` and `receivedAt` a queue body may carry: the
/// producer writes a UUID, a configured id, an address and a timestamp.
const STAMP_MAX: usize = 256;

impl TaskMessage {
    /// Checks a queue body against the rules its producer applied, and that it belongs to
    /// `room`'s queue: whoever else can write to the queues must not reach subscribers with what
    /// a producer would have refused.
    pub fn recheck(&self, room: u32) -> Result<(), String> {
        if self.room_id != room {
            return Err(format!("roomId {} on room {room}'s queue", self.room_id));
        }
        let user: u32 = self
            .user_id
            .trim()
            .parse()
            .map_err(|_| "userId is not an integer".to_owned())?;
        if !(USER_ID_MIN..=USER_ID_MAX).contains(&user) {
            return Err(format!("userId {user} out of range"));
        }
        let reason = |r: Rejection| r.reason;
        validate_username(&self.username, None).map_err(reason)?;
        validate_message(&self.message, None).map_err(reason)?;
        validate_timestamp(&self.timestamp, None).map_err(reason)?;
        if let Some(id) = &self.client_message_id {
            validate_client_message_id(id).map_err(reason)?;
        }
        let stamps = [
            ("messageId", &self.message_id),
            ("serverId", &self.server_id),
            ("clientIp", &self.client_ip),
            ("receivedAt", &self.received_at),
        ];
        match stamps.iter().find(|(_, v)| v.len() > STAMP_MAX) {
            Some((name, _)) => Err(format!("{name} longer than {STAMP_MAX} bytes")),
            None => Ok(()),
        }
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

/// Whitespace as the seed's `String.isBlank` saw it (Java's `Character.isWhitespace`): Unicode
/// space, line and paragraph separators except the non-breaking ones, tab to carriage return,
/// and the four ASCII separators U+001C to U+001F. Rust's `char::is_whitespace` differs on
/// both ends (it counts U+00A0 and U+0085, and not U+001C to U+001F).
pub fn java_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{0009}'..='\u{000D}'
            | '\u{001C}'..='\u{001F}'
            | ' '
            | '\u{1680}'
            | '\u{2000}'..='\u{2006}'
            | '\u{2008}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

fn validate_message(message: &str, cmid: Option<&str>) -> Result<(), Rejection> {
    if message.chars().all(java_whitespace) {
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

/// The original clients were checked with Java's `OffsetDateTime.parse`, which differs from RFC
/// 3339 twice: date and time must be joined by `T` (RFC 3339 also allows a space), and seconds
/// may be left out (`10:00Z`).
fn validate_timestamp(timestamp: &str, cmid: Option<&str>) -> Result<(), Rejection> {
    let joined_by_t = matches!(timestamp.as_bytes().get(10), Some(b'T' | b't'));
    let with_seconds = match (timestamp.get(..16), timestamp.get(16..)) {
        (Some(date_hh_mm), Some(rest)) if !rest.starts_with(':') => {
            std::borrow::Cow::Owned(format!("{date_hh_mm}:00{rest}"))
        }
        _ => std::borrow::Cow::Borrowed(timestamp),
    };
    // Java reads at most nanoseconds; RFC 3339 sets no bound, and a timestamp is echoed in the
    // ack and stored with the message, so its length is part of a message's memory cost.
    let fraction_digits = with_seconds
        .get(19..)
        .and_then(|rest| rest.strip_prefix('.'))
        .map_or(0, |f| f.bytes().take_while(u8::is_ascii_digit).count());
    if fraction_digits > 9 {
        return Err(Rejection::validation(
            "timestamp may have at most 9 digits of fractional seconds",
            cmid,
        ));
    }
    if joined_by_t && OffsetDateTime::parse(&with_seconds, &Rfc3339).is_ok() {
        return Ok(());
    }
    Err(Rejection::validation(
        "timestamp must be an ISO-8601 date-time with an offset, like 2026-11-27T10:00:00Z",
        cmid,
    ))
}
