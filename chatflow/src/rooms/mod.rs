//! Room ranges, their partition into consumer shards, and the queue each room's messages use.

mod naming;

pub use naming::{Layout, QueueNaming};

use std::fmt;
use std::str::FromStr;

/// Longest queue name SQS accepts, `.fifo` included.
pub const QUEUE_NAME_MAX: usize = 80;
/// Queue-name prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "chatflow-";

/// A room id.
pub type RoomId = u32;

/// Why a room range, a room or a queue prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// Room ids start at 1.
    #[error("room ids start at 1, got start {0}")]
    StartBelowOne(RoomId),
    /// The range is empty.
    #[error("rooms end {end} is below start {start}")]
    EndBelowStart {
        /// First room.
        start: RoomId,
        /// Last room.
        end: RoomId,
    },
    /// A "a-b" range could not be read.
    #[error("room range {0:?} is not of the form START-END")]
    Malformed(String),
    /// Shards must hold at least one room.
    #[error("rooms per shard must be at least 1")]
    EmptyShard,
    /// The room id in a path or request is not an integer in range.
    #[error("room {room:?} is not an integer between {start} and {end}")]
    OutOfRange {
        /// What was asked for.
        room: String,
        /// First room served.
        start: RoomId,
        /// Last room served.
        end: RoomId,
    },
    /// The queue name would exceed SQS's limit.
    #[error("queue name {name:?} is {len} characters, SQS allows {QUEUE_NAME_MAX}")]
    NameTooLong {
        /// The name that would be used.
        name: String,
        /// Its length.
        len: usize,
    },
    /// The prefix has characters SQS refuses in a queue name.
    #[error("queue prefix {0:?} may only hold letters, digits, '-' and '_'")]
    BadPrefix(String),
}

/// An inclusive, non-empty range of room ids starting at 1 or above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomRange {
    start: RoomId,
    end: RoomId,
}

impl RoomRange {
    /// Validates and builds a range.
    pub fn new(start: RoomId, end: RoomId) -> Result<Self, RoomError> {
        if start < 1 {
            return Err(RoomError::StartBelowOne(start));
        }
        if end < start {
            return Err(RoomError::EndBelowStart { start, end });
        }
        Ok(RoomRange { start, end })
    }

    /// First room.
    pub fn start(&self) -> RoomId {
        self.start
    }

    /// Last room.
    pub fn end(&self) -> RoomId {
        self.end
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize + 1
    }

    /// Always false: a range holds at least one room.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the range holds this room.
    pub fn contains(&self, room: RoomId) -> bool {
        (self.start..=self.end).contains(&room)
    }

    /// Every room, in order.
    pub fn iter(&self) -> impl Iterator<Item = RoomId> + use<> {
        self.start..=self.end
    }

    /// Reads a room id from a request path segment, checking it is served here.
    pub fn parse_room(&self, raw: &str) -> Result<RoomId, RoomError> {
        match raw.parse::<RoomId>() {
            Ok(room) if self.contains(room) => Ok(room),
            _ => Err(RoomError::OutOfRange {
                room: raw.to_owned(),
                start: self.start,
                end: self.end,
            }),
        }
    }

    /// Splits the range into consecutive shards of `per_shard` rooms; the last may be shorter.
    pub fn shards(&self, per_shard: u32) -> Result<Vec<RoomRange>, RoomError> {
        if per_shard == 0 {
            return Err(RoomError::EmptyShard);
        }
        let mut shards = Vec::with_capacity(self.len().div_ceil(per_shard as usize));
        let mut start = self.start;
        loop {
            let end = start.saturating_add(per_shard - 1).min(self.end);
            shards.push(RoomRange { start, end });
            if end == self.end {
                return Ok(shards);
            }
            start = end + 1;
        }
    }
}

impl fmt::Display for RoomRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for RoomRange {
    type Err = RoomError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || RoomError::Malformed(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(malformed)?;
        let start = a.trim().parse().map_err(|_| malformed())?;
        let end = b.trim().parse().map_err(|_| malformed())?;
        RoomRange::new(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_validated() {
        assert_eq!(RoomRange::new(0, 5), Err(RoomError::StartBelowOne(0)));
        assert_eq!(
            RoomRange::new(5, 4),
            Err(RoomError::EndBelowStart { start: 5, end: 4 })
        );
        assert_eq!(RoomRange::new(5, 5).unwrap().len(), 1);
        assert_eq!(
            "1-20".parse::<RoomRange>().unwrap(),
            RoomRange::new(1, 20).unwrap()
        );
        assert!(matches!(
            "20".parse::<RoomRange>(),
            Err(RoomError::Malformed(_))
        ));
        assert!(matches!(
            "a-b".parse::<RoomRange>(),
            Err(RoomError::Malformed(_))
        ));
    }

    #[test]
    fn shards_cover_the_range_and_the_last_may_be_shorter() {
        let r = RoomRange::new(1, 20).unwrap();
        let s: Vec<String> = r
            .shards(5)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(s, ["1-5", "6-10", "11-15", "16-20"]);
        let s: Vec<String> = RoomRange::new(1, 23)
            .unwrap()
            .shards(10)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(s, ["1-10", "11-20", "21-23"]);
        assert_eq!(r.shards(100).unwrap(), vec![r]);
        assert_eq!(r.shards(0), Err(RoomError::EmptyShard));
        let top = RoomRange::new(u32::MAX - 2, u32::MAX).unwrap();
        assert_eq!(top.shards(2).unwrap().len(), 2);
    }

    #[test]
    fn room_path_segments_are_checked() {
        let r = RoomRange::new(1, 20).unwrap();
        assert_eq!(r.parse_room("20"), Ok(20));
        for bad in ["0", "21", "abc", "1.5", "", "-1"] {
            assert!(
                matches!(r.parse_room(bad), Err(RoomError::OutOfRange { .. })),
                "{bad}"
            );
        }
    }
}
