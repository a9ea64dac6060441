//! Values that cross the queue interface.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::rooms::{RoomError, RoomId};

/// Attributes of a room queue, as DESIGN's queue rules set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAttributes {
    /// How long a received message stays hidden before it is redelivered.
    pub visibility_timeout: Duration,
    /// How long an unconsumed message is kept.
    pub retention: Duration,
    /// Default long-poll wait of the queue.
    pub receive_wait: Duration,
    /// Per-group deduplication and throughput limits (SQS high-throughput FIFO).
    pub high_throughput: bool,
}

impl Default for QueueAttributes {
    fn default() -> Self {
        QueueAttributes {
            visibility_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            receive_wait: Duration::from_secs(20),
            high_throughput: false,
        }
    }
}

impl QueueAttributes {
    /// The attributes as SQS names and values.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let (scope, limit) = if self.high_throughput {
            ("messageGroup", "perMessageGroupId")
        } else {
            ("queue", "perQueue")
        };
        [
            ("FifoQueue", "true".to_owned()),
            ("ContentBasedDeduplication", "false".to_owned()),
            (
                "VisibilityTimeout",
                self.visibility_timeout.as_secs().to_string(),
            ),
            (
                "MessageRetentionPeriod",
                self.retention.as_secs().to_string(),
            ),
            (
                "ReceiveMessageWaitTimeSeconds",
                self.receive_wait.as_secs().to_string(),
            ),
            ("DeduplicationScope", scope.to_owned()),
            ("FifoThroughputLimit", limit.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Mutable attributes whose current value differs from this one, with the wanted value.
    pub fn drift(&self, current: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.to_map()
            .into_iter()
            // FifoQueue cannot change after creation; a queue named .fifo always is one.
            .filter(|(k, v)| k != "FifoQueue" && current.get(k) != Some(v))
            .collect()
    }

    /// Reads attributes back from SQS names and values; unknown or missing ones keep defaults.
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        let secs = |key: &str, default: Duration| {
            map.get(key)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(default)
        };
        let d = QueueAttributes::default();
        QueueAttributes {
            visibility_timeout: secs("VisibilityTimeout", d.visibility_timeout),
            retention: secs("MessageRetentionPeriod", d.retention),
            receive_wait: secs("ReceiveMessageWaitTimeSeconds", d.receive_wait),
            high_throughput: map.get("DeduplicationScope").map(String::as_str)
                == Some("messageGroup"),
        }
    }
}

/// What ensuring a queue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The queue exists with the wanted attributes.
    Ready,
    /// The queue existed with drifted attributes, now set back; the names of those attributes.
    Repaired(Vec<String>),
}

/// Name of the message attribute that tells body formats apart.
pub const FORMAT_ATTRIBUTE: &str = "chatflow-format";

/// How a queue message's body is laid out; it travels in the [`FORMAT_ATTRIBUTE`] attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// One TaskMessage: the original format, sent without the attribute.
    #[default]
    Task,
    /// An envelope of consecutive TaskMessages of one room.
    Envelope,
    /// An attribute value this version does not know.
    Unknown(String),
}

impl BodyFormat {
    /// The attribute value to send, if any.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            BodyFormat::Task => None,
            BodyFormat::Envelope => Some("envelope"),
            BodyFormat::Unknown(v) => Some(v),
        }
    }

    /// The format a received attribute value names.
    pub fn from_attribute(value: Option<&str>) -> Self {
        match value {
            None | Some("task") => BodyFormat::Task,
            Some("envelope") => BodyFormat::Envelope,
            Some(other) => BodyFormat::Unknown(other.to_owned()),
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEntry {
    /// Queue body.
    pub body: String,
    /// FIFO message group; order holds within a group.
    pub group_id: String,
    /// Deduplication id; a second message with it inside the window is dropped.
    pub dedup_id: String,
    /// How the body is laid out.
    pub format: BodyFormat,
}

/// The queue's answer for one published entry.
pub type PublishResult = Result<String, EntryError>;

/// Why one entry of a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryError {
    /// Service error code.
    pub code: String,
    /// Service message.
    pub message: String,
    /// True when the request itself was wrong and retrying will not help.
    pub sender_fault: bool,
}

/// A message handed out by a receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The queue's message id.
    pub message_id: String,
    /// Body as published.
    pub body: String,
    /// Handle to delete this delivery with.
    pub receipt: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// Its FIFO group.
    pub group_id: String,
    /// How the body is laid out.
    pub format: BodyFormat,
    /// The queue's position for it within its group: grows with every send to the group and
    /// stays the same when the message is redelivered (SQS FIFO's SequenceNumber).
    pub sequence: Option<u128>,
}

/// Approximate message counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted or timed out.
    pub in_flight: u64,
}

/// Why a queue call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist.
    #[error("queue {queue} does not exist")]
    NotFound {
        /// Queue name.
        queue: String,
    },
    /// A create met an existing queue with other attributes.
    #[error("queue {queue} already exists with different attributes: {message}")]
    AlreadyExists {
        /// Queue name.
        queue: String,
        /// Service message.
        message: String,
    },
    /// The service could not be reached or the connection broke.
    #[error("queue service unreachable: {0}")]
    Transport(String),
    /// The call took longer than allowed.
    #[error("queue call timed out after {0:?}")]
    Timeout(Duration),
    /// The service refused the call.
    #[error("queue service error {code}: {message}")]
    Service {
        /// Service error code.
        code: String,
        /// Service message.
        message: String,
        /// True for 5xx and throttling: worth retrying.
        retryable: bool,
    },
    /// The room has no valid queue name.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The queue is tagged as another owner's: it is neither adopted, changed nor deleted.
    #[error("the queue of room {room} belongs to {owner}")]
    OwnedByOther {
        /// The room whose queue it is.
        room: RoomId,
        /// The owner its tag names.
        owner: String,
    },
    /// The queue has no owner tag and adopting such queues was not asked for: it is neither
    /// tagged, changed nor deleted.
    #[error("the queue of room {room} exists without an owner tag")]
    Untagged {
        /// The room whose queue it is.
        room: RoomId,
    },
    /// The call's arguments are wrong (empty or oversize batch, unknown attribute...).
    #[error("invalid queue request: {0}")]
    Invalid(String),
}

impl QueueError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Transport(_) | QueueError::Timeout(_) => true,
            QueueError::Service { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_lists_only_changed_mutable_attributes() {
        let want = QueueAttributes::default();
        let mut current = want.to_map();
        assert!(want.drift(&current).is_empty());
        current.insert("VisibilityTimeout".into(), "45".into());
        current.insert("FifoQueue".into(), "false".into());
        current.remove("DeduplicationScope");
        let drift = want.drift(&current);
        assert_eq!(
            drift.keys().collect::<Vec<_>>(),
            ["DeduplicationScope", "VisibilityTimeout"]
        );
        assert_eq!(drift["VisibilityTimeout"], "30");
    }

    #[test]
    fn attributes_round_trip_through_sqs_names() {
        let a = QueueAttributes {
            visibility_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(60),
            receive_wait: Duration::from_secs(0),
            high_throughput: true,
        };
        assert_eq!(QueueAttributes::from_map(&a.to_map()), a);
    }
}
