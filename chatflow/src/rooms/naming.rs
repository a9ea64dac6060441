//! Which FIFO queue holds a room's messages, and its name: a queue per room, or buckets of
//! consecutive rooms sharing a queue and its message group.

use super::{DEFAULT_PREFIX, QUEUE_NAME_MAX, RoomError, RoomId, RoomRange};

/// How room queues are named and, optionally, where they live.
///
/// Configured as a bare name prefix (`chatflow-`) or as a full queue-URL prefix
/// (`https://sqs.us-west-2.amazonaws.com/123456789012/chatflow-`), as the original's
/// `sqs.queue.url.prefix`. With a URL the queue URL is known without a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNaming {
    name_prefix: String,
    url_base: Option<String>,
    layout: Layout,
    /// The room buckets are counted from: the first of the range served.
    origin: RoomId,
}

/// How rooms are laid onto FIFO queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// A queue per room, named `{prefix}room-{id}.fifo`.
    #[default]
    PerRoom,
    /// Blocks of `rooms` consecutive rooms, counted from the first room served, share a queue
    /// named `{prefix}rooms-{first}-{last}.fifo` and one message group (named by its key): the
    /// rooms' messages share envelopes, so sends, receives and deletes carry several rooms at
    /// once, and each room's order is the bucket's.
    Buckets {
        /// Rooms per queue, at least 2.
        rooms: u32,
    },
}

impl Layout {
    /// The layout for `rooms` rooms per queue: a queue per room for 0 or 1.
    pub fn with_bucket_rooms(rooms: u32) -> Self {
        if rooms <= 1 {
            Layout::PerRoom
        } else {
            Layout::Buckets { rooms }
        }
    }

    /// Rooms per queue.
    pub fn rooms_per_queue(self) -> u32 {
        match self {
            Layout::PerRoom => 1,
            Layout::Buckets { rooms } => rooms,
        }
    }
}

impl Default for QueueNaming {
    fn default() -> Self {
        QueueNaming {
            name_prefix: DEFAULT_PREFIX.to_owned(),
            url_base: None,
            layout: Layout::PerRoom,
            origin: 1,
        }
    }
}

impl QueueNaming {
    /// Parses a name prefix or a queue-URL prefix.
    pub fn parse(prefix: &str) -> Result<Self, RoomError> {
        let (url_base, name_prefix) =
            if prefix.starts_with("http://") || prefix.starts_with("https://") {
                let cut = prefix.rfind('/').map(|i| i + 1).unwrap_or(prefix.len());
                (Some(prefix[..cut].to_owned()), &prefix[cut..])
            } else {
                (None, prefix)
            };
        if !name_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(RoomError::BadPrefix(name_prefix.to_owned()));
        }
        Ok(QueueNaming {
            name_prefix: name_prefix.to_owned(),
            url_base,
            layout: Layout::PerRoom,
            origin: 1,
        })
    }

    /// The same prefix with rooms laid out by `layout`, buckets counted from `origin`. Every
    /// process of a set counts from a bucket boundary (the operator starts shards on one), so
    /// they all agree on which queue holds a room.
    pub fn with_layout(mut self, layout: Layout, origin: RoomId) -> Self {
        self.layout = layout;
        self.origin = origin;
        self
    }

    /// How rooms are laid onto queues.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The queue a room's messages use, named by its first room: the room itself with a queue
    /// per room, the first room of its bucket otherwise. Rooms with the same key share a queue.
    pub fn queue_key(&self, room: RoomId) -> RoomId {
        match self.layout {
            Layout::PerRoom => room,
            Layout::Buckets { rooms } => match room.checked_sub(self.origin) {
                Some(offset) => self.origin + offset / rooms * rooms,
                None => room,
            },
        }
    }

    /// The queue keys of a range, in order: one per queue its rooms use.
    pub fn queue_keys(&self, range: RoomRange) -> Vec<RoomId> {
        let step = self.layout.rooms_per_queue() as usize;
        (self.queue_key(range.start())..=range.end())
            .step_by(step)
            .collect()
    }

    /// The name part of the prefix.
    pub fn name_prefix(&self) -> &str {
        &self.name_prefix
    }

    /// The queue-URL base (up to the last '/'), when configured as a URL.
    pub fn url_base(&self) -> Option<&str> {
        self.url_base.as_deref()
    }

    /// The FIFO queue name of a room: `{prefix}room-{id}.fifo`, or `{prefix}rooms-{first}-{last}.fifo`
    /// for its bucket.
    pub fn queue_name(&self, room: RoomId) -> Result<String, RoomError> {
        let name = match self.layout {
            Layout::PerRoom => format!("{}room-{room}.fifo", self.name_prefix),
            Layout::Buckets { rooms } => {
                let first = self.queue_key(room);
                let last = first.saturating_add(rooms - 1);
                format!("{}rooms-{first}-{last}.fifo", self.name_prefix)
            }
        };
        if name.len() > QUEUE_NAME_MAX {
            return Err(RoomError::NameTooLong {
                len: name.len(),
                name,
            });
        }
        Ok(name)
    }

    /// The queue URL of a room when the prefix was a URL.
    pub fn queue_url(&self, room: RoomId) -> Result<Option<String>, RoomError> {
        let name = self.queue_name(room)?;
        Ok(self.url_base.as_ref().map(|base| format!("{base}{name}")))
    }

    /// Checks every room of a range gets a valid name; the last room's queue has the longest.
    pub fn check_range(&self, rooms: RoomRange) -> Result<(), RoomError> {
        self.queue_name(rooms.end()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_prefix_and_the_limit() {
        let n = QueueNaming::default();
        assert_eq!(n.queue_name(7).unwrap(), "chatflow-room-7.fifo");
        assert_eq!(n.queue_url(7).unwrap(), None);
        // 80 characters exactly is allowed; one more is not.
        let fits = QueueNaming::parse(&"p".repeat(80 - "room-1.fifo".len())).unwrap();
        assert_eq!(fits.queue_name(1).unwrap().len(), 80);
        assert!(matches!(
            fits.queue_name(10),
            Err(RoomError::NameTooLong { len: 81, .. })
        ));
        assert!(fits.check_range(RoomRange::new(1, 9).unwrap()).is_ok());
        assert!(fits.check_range(RoomRange::new(1, 10).unwrap()).is_err());
        assert!(matches!(
            QueueNaming::parse("bad prefix"),
            Err(RoomError::BadPrefix(_))
        ));
    }

    #[test]
    fn url_prefixes_give_urls_without_lookup() {
        let n =
            QueueNaming::parse("https://sqs.us-west-2.amazonaws.com/123456789012/chat-").unwrap();
        assert_eq!(n.name_prefix(), "chat-");
        assert_eq!(n.queue_name(3).unwrap(), "chat-room-3.fifo");
        assert_eq!(
            n.queue_url(3).unwrap().as_deref(),
            Some("https://sqs.us-west-2.amazonaws.com/123456789012/chat-room-3.fifo")
        );
    }

    #[test]
    fn buckets_share_a_queue_among_consecutive_rooms_counted_from_the_origin() {
        let n = QueueNaming::default().with_layout(Layout::Buckets { rooms: 4 }, 11);
        assert_eq!(n.queue_name(11).unwrap(), "chatflow-rooms-11-14.fifo");
        assert_eq!(n.queue_name(14).unwrap(), "chatflow-rooms-11-14.fifo");
        assert_eq!(n.queue_name(15).unwrap(), "chatflow-rooms-15-18.fifo");
        assert_eq!(n.queue_key(17), 15);
        let range = RoomRange::new(11, 20).unwrap();
        assert_eq!(n.queue_keys(range), [11, 15, 19]);
        // A shard starting on a bucket boundary agrees with the producer that counts from 11.
        let shard = QueueNaming::default().with_layout(Layout::Buckets { rooms: 4 }, 15);
        assert_eq!(shard.queue_name(18).unwrap(), n.queue_name(18).unwrap());
        assert_eq!(
            QueueNaming::default().queue_keys(RoomRange::new(3, 5).unwrap()),
            [3, 4, 5]
        );
        assert_eq!(Layout::with_bucket_rooms(1), Layout::PerRoom);
    }
}
