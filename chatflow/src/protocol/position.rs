//! Where a chat message sits in its room's stream: the resume point a subscriber hands back
//! when it reconnects.

use std::fmt;
use std::str::FromStr;

/// A message's place in its room: the queue's sequence number for the SQS message that carried
/// it, then its index within that message's envelope. Ordered as the room's messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The carrying queue message's sequence number in the room's group.
    pub sequence: u128,
    /// Index of the chat message within that queue message (0 when it carries one).
    pub index: u32,
}

/// A `position` that is not two decimal numbers joined by `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position must look like SEQUENCE-INDEX (two decimal numbers), got {0:?}")]
pub struct BadPosition(String);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.sequence, self.index)
    }
}

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.chars().take(80).collect());
        let (sequence, index) = s.split_once('-').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(sequence) || !digits(index) {
            return Err(bad());
        }
        Ok(Position {
            sequence: sequence.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

// Written as its string form, so any JSON client can hold and compare it without big-integer
// support: SQS sequence numbers need up to 128 bits.
impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_what_it_writes_and_orders_by_sequence_then_index() {
        let p = Position {
            sequence: 18_849_496_460_467_696_128,
            index: 3,
        };
        assert_eq!(p.to_string(), "18849496460467696128-3");
        assert_eq!("18849496460467696128-3".parse::<Position>(), Ok(p));
        let next_in_envelope = Position { index: 4, ..p };
        let next_message = Position {
            sequence: p.sequence + 1,
            index: 0,
        };
        assert!(p < next_in_envelope && next_in_envelope < next_message);
    }

    #[test]
    fn a_position_travels_in_json_as_a_string() {
        let p = Position {
            sequence: 7,
            index: 0,
        };
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"7-0\"");
        assert_eq!(serde_json::from_str::<Position>("\"7-0\"").unwrap(), p);
        assert!(serde_json::from_str::<Position>("7").is_err());
    }

    #[test]
    fn a_malformed_position_is_refused() {
        for bad in ["", "12", "12-", "-3", "a-1", "1-b", "1-2-3", "+1-2", "1 -2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} was accepted");
        }
    }
}
