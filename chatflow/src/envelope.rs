//! Envelopes: consecutive chat messages of one message group (a room, or a bucket of rooms) in
//! one queue message, so that each send, receive and delete request carries many chat messages
//! instead of one.
//!
//! An envelope's body is `{"v":1,"messages":[TaskMessage, ...]}` and carries the message
//! attribute `chatflow-format: envelope`. A body without the attribute is one TaskMessage, the
//! original format, which consumers keep reading.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::protocol::TaskMessage;
use crate::queue::{BodyFormat, MAX_BATCH, PublishEntry};

/// How the producer lays chat messages into queue messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// One TaskMessage per queue message, the original format.
    Single,
    /// Up to [`ENVELOPE_MAX_MESSAGES`] consecutive TaskMessages per queue message.
    #[default]
    Envelope,
}

impl Packing {
    /// The spelling used in options and the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Packing::Single => "single",
            Packing::Envelope => "envelope",
        }
    }
}

impl fmt::Display for Packing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packing name that is neither `single` nor `envelope`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown packing {0:?}: expected single or envelope")]
pub struct UnknownPacking(String);

impl FromStr for Packing {
    type Err = UnknownPacking;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "single" => Ok(Packing::Single),
            "envelope" => Ok(Packing::Envelope),
            other => Err(UnknownPacking(other.to_owned())),
        }
    }
}

/// Most chat messages one envelope carries. A consumer's receive takes at most
/// [`RECEIVE_MAX_MESSAGES`] at once, and broadcasts them as one burst: subscriber buffers hold at
/// least that many.
pub const ENVELOPE_MAX_MESSAGES: usize = 400;

/// Most chat messages one receive brings: ten envelopes.
pub const RECEIVE_MAX_MESSAGES: usize = MAX_BATCH * ENVELOPE_MAX_MESSAGES;

/// Most body bytes of one batch, all its entries together: under the 256 KiB SQS allows for a
/// whole batch request, with room for attributes and ids. One envelope may take all of it, so
/// a backlog travels in few, full queue messages: a consumer's receive (at most ten queue
/// messages) then takes up to ten batches' worth, and a room's throughput is not capped at ten
/// small envelopes per receive and delete.
pub const BATCH_MAX_BYTES: usize = 240 * 1024;

const HEAD: &str = r#"{"v":1,"messages":["#;
const TAIL: &str = "]}";

/// Namespace of envelope deduplication ids.
const ENVELOPE_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6368_6174_666c_6f77_2d65_6e76_6c70_0001);

/// One queue entry being filled: its chat messages as single-message entries, each with its
/// tag.
struct Parcel<T> {
    members: Vec<PublishEntry>,
    tags: Vec<T>,
    bytes: usize,
}

/// Collects one batch of chat messages of a queue's rooms, in order, and lays them out in at
/// most [`MAX_BATCH`] queue entries of at most [`BATCH_MAX_BYTES`] together, filling each
/// envelope before it opens the next. Each message carries a tag (where its answer goes), handed
/// back with the entry that carries it.
pub struct TaggedPacker<T> {
    packing: Packing,
    parcels: Vec<Parcel<T>>,
    /// Body bytes of all parcels.
    bytes: usize,
}

/// A packer whose messages carry no tag.
pub type Packer = TaggedPacker<()>;

impl<T> TaggedPacker<T> {
    /// An empty batch.
    pub fn new(packing: Packing) -> Self {
        TaggedPacker {
            packing,
            parcels: Vec::with_capacity(MAX_BATCH),
            bytes: 0,
        }
    }

    /// Appends one chat message (an entry in the single format) with its tag; hands both back
    /// when the batch is full.
    pub fn push_tagged(&mut self, entry: PublishEntry, tag: T) -> Result<(), (PublishEntry, T)> {
        let added = 1 + entry.body.len();
        // A message joins the last envelope of its message group, which keeps the group's order:
        // a queue keeps the order of a batch's entries within each group.
        if self.packing == Packing::Envelope
            && self.bytes + added <= BATCH_MAX_BYTES
            && let Some(last) = self
                .parcels
                .iter_mut()
                .rev()
                .find(|p| p.members[0].group_id == entry.group_id)
            && last.members.len() < ENVELOPE_MAX_MESSAGES
        {
            last.bytes += added;
            self.bytes += added;
            last.members.push(entry);
            last.tags.push(tag);
            return Ok(());
        }
        let opened = HEAD.len() + TAIL.len() + entry.body.len();
        // A message larger than the budget still travels, alone in a batch of its own.
        let fits = self.parcels.is_empty() || self.bytes + opened <= BATCH_MAX_BYTES;
        if self.parcels.len() == MAX_BATCH || !fits {
            return Err((entry, tag));
        }
        self.bytes += opened;
        self.parcels.push(Parcel {
            bytes: opened,
            members: vec![entry],
            tags: vec![tag],
        });
        Ok(())
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.parcels.is_empty()
    }

    /// Chat messages held.
    pub fn messages(&self) -> usize {
        self.parcels.iter().map(|p| p.members.len()).sum()
    }

    /// The queue entries in order, each with the tags of the chat messages it carries; the
    /// packer is empty afterwards.
    pub fn take_tagged(&mut self) -> Vec<(PublishEntry, Vec<T>)> {
        let packing = self.packing;
        self.bytes = 0;
        self.parcels
            .drain(..)
            .map(|mut p| {
                let tags = std::mem::take(&mut p.tags);
                // A lone message travels in the single format: the same bytes without the
                // wrapping, deduplicated by its own id, and consumers read both formats.
                let entry = match packing {
                    Packing::Envelope if tags.len() > 1 => seal(p),
                    Packing::Single | Packing::Envelope => p
                        .members
                        .into_iter()
                        .next()
                        .expect("parcels are never empty"),
                };
                (entry, tags)
            })
            .collect()
    }
}

impl Packer {
    /// Appends one chat message (an entry in the single format); hands it back when the batch
    /// is full.
    pub fn push(&mut self, entry: PublishEntry) -> Result<(), PublishEntry> {
        self.push_tagged(entry, ()).map_err(|(entry, ())| entry)
    }

    /// The queue entries in order, each with how many chat messages it carries; the packer is
    /// empty afterwards.
    pub fn take(&mut self) -> Vec<(PublishEntry, usize)> {
        self.take_tagged()
            .into_iter()
            .map(|(entry, tags)| (entry, tags.len()))
            .collect()
    }
}

/// Joins a parcel's bodies into one envelope. Its deduplication id is derived from its members'
/// ids, so a retry of the same envelope is dropped by the queue like a retry of one message.
fn seal<T>(p: Parcel<T>) -> PublishEntry {
    let mut body = String::with_capacity(p.bytes);
    let mut ids = String::new();
    body.push_str(HEAD);
    for (i, m) in p.members.iter().enumerate() {
        if i > 0 {
            body.push(',');
            ids.push('\n');
        }
        body.push_str(&m.body);
        ids.push_str(&m.dedup_id);
    }
    body.push_str(TAIL);
    let group_id = p.members[0].group_id.clone();
    PublishEntry {
        body,
        group_id,
        dedup_id: uuid::Uuid::new_v5(&ENVELOPE_NAMESPACE, ids.as_bytes()).to_string(),
        format: BodyFormat::Envelope,
    }
}

/// Why a queue message could not be read as chat messages.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The format attribute names a format this version does not know.
    #[error("unknown body format {0:?}")]
    UnknownFormat(String),
    /// The body is not what its format says.
    #[error("malformed body: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An envelope of a later version.
    #[error("envelope version {0} is not supported")]
    Version(u32),
}

#[derive(Deserialize)]
struct Envelope {
    v: u32,
    messages: Vec<TaskMessage>,
}

/// The chat messages a queue message carries, in order.
pub fn unpack(format: &BodyFormat, body: &str) -> Result<Vec<TaskMessage>, UnpackError> {
    match format {
        BodyFormat::Task => Ok(vec![serde_json::from_str(body)?]),
        BodyFormat::Envelope => {
            let env: Envelope = serde_json::from_str(body)?;
            if env.v != 1 {
                return Err(UnpackError::Version(env.v));
            }
            Ok(env.messages)
        }
        BodyFormat::Unknown(name) => Err(UnpackError::UnknownFormat(name.clone())),
    }
}

#[cfg(test)]
mod tests;
