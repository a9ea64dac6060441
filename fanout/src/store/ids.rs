//! A room position as a Redis stream entry id, so the stream's own order is the room's order and
//! `XRANGE (id` reads exactly what followed a position.
//!
//! An entry id is two 64-bit numbers; a position is a 128-bit sequence number and a 32-bit
//! envelope index. Shifted together into 128 bits (sequence above index) they keep their order,
//! as long as the sequence fits in 96 bits: SQS sequence numbers have 20 digits, under 2^65.

use chatflow::protocol::Position;

/// A position the store cannot hold: its sequence needs more than 96 bits, or it is `0-0`,
/// which Redis reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("position {0} is outside what a stream entry id can hold")]
pub struct Unstorable(pub Position);

/// The stream entry id of `position`.
pub fn entry_id(position: Position) -> Result<String, Unstorable> {
    if position.sequence >> 96 != 0 {
        return Err(Unstorable(position));
    }
    let joined = (position.sequence << 32) | u128::from(position.index);
    if joined == 0 {
        return Err(Unstorable(position));
    }
    Ok(format!("{}-{}", (joined >> 64) as u64, joined as u64))
}

/// The position a stream entry id stands for; None for an id this module did not write.
pub fn position(id: &str) -> Option<Position> {
    let (high, low) = id.split_once('-')?;
    let joined =
        (u128::from(high.parse::<u64>().ok()?) << 64) | u128::from(low.parse::<u64>().ok()?);
    Some(Position {
        sequence: joined >> 32,
        index: joined as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: u128, index: u32) -> Position {
        Position { sequence, index }
    }

    #[test]
    fn ids_keep_the_room_order_and_read_back_as_the_same_position() {
        let positions = [
            at(1, 0),
            at(1, 7),
            at(2, 0),
            at(18_849_496_460_467_696_128, 0),
            at(18_849_496_460_467_696_128, u32::MAX),
            at(18_849_496_460_467_696_129, 0),
            at((1 << 96) - 1, u32::MAX),
        ];
        let ids: Vec<(u64, u64)> = positions
            .iter()
            .map(|p| {
                let id = entry_id(*p).unwrap();
                assert_eq!(position(&id), Some(*p), "{id}");
                let (a, b) = id.split_once('-').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn positions_outside_the_id_space_are_refused() {
        assert!(entry_id(at(1 << 96, 0)).is_err());
        assert!(entry_id(at(0, 0)).is_err(), "0-0 is reserved by Redis");
        assert!(entry_id(at(0, 1)).is_ok());
        assert_eq!(position("x-1"), None);
        assert_eq!(position("1"), None);
    }
}
