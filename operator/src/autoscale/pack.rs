//! Where rooms go: the set's queues, in room order, cut into contiguous shards by load. Ranges
//! keep the routing table one line per shard and each shard's name its rooms; cutting on both
//! sides of a hot room costs at most one shard more than any other packing would.

use chatflow::rooms::RoomRange;

/// The share of a shard each shard may be packed to: the rest absorbs growth, so a set just
/// placed does not pass its target again at once.
pub const HEADROOM: f64 = 0.8;

/// One queue's rooms and its share of a shard (1.0 is one shard's target).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    /// The queue's rooms: one room, or a bucket's.
    pub rooms: RoomRange,
    /// Its load as a share of one shard.
    pub share: f64,
}

/// The shards `units` need: packed to the headroom, loosened until they fit `max`, and the
/// roomiest split until there are `min`. A unit over the headroom gets a shard of its own.
pub fn pack(units: &[Unit], min: u32, max: u32) -> Vec<RoomRange> {
    let shares: Vec<f64> = units.iter().map(|u| u.share.max(0.0)).collect();
    let mut cuts = greedy(&shares, HEADROOM);
    if cuts.len() > max as usize {
        // Fewer cuts the looser the packing: the least loose packing that fits the maximum.
        let (mut lo, mut hi) = (HEADROOM, shares.iter().sum::<f64>().max(HEADROOM) + 1.0);
        for _ in 0..48 {
            let mid = f64::midpoint(lo, hi);
            if greedy(&shares, mid).len() > max as usize {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        cuts = greedy(&shares, hi);
    }
    let cuts = split_to(cuts, min as usize);
    cuts.into_iter()
        .map(|(from, to)| span(&units[from..to]))
        .collect()
}

/// `units` split into `n` shards of as equal a count of queues as can be (fewer when there are
/// fewer queues): how rooms are placed before any load is known.
pub fn even(units: &[Unit], n: u32) -> Vec<RoomRange> {
    split_to(vec![(0, units.len())], n as usize)
        .into_iter()
        .map(|(from, to)| span(&units[from..to]))
        .collect()
}

/// Each shard's share: the sum of its queues'.
pub fn loads(units: &[Unit], shards: &[RoomRange]) -> Vec<f64> {
    shards
        .iter()
        .map(|s| {
            units
                .iter()
                .filter(|u| s.contains(u.rooms.start()))
                .map(|u| u.share)
                .sum()
        })
        .collect()
}

/// Next fit: a shard takes queues in order until the next would take it past `cap`.
fn greedy(shares: &[f64], cap: f64) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    let (mut start, mut load) = (0, 0.0);
    for (i, share) in shares.iter().enumerate() {
        if i > start && load + share > cap {
            cuts.push((start, i));
            (start, load) = (i, 0.0);
        }
        load += share;
    }
    if start < shares.len() {
        cuts.push((start, shares.len()));
    }
    cuts
}

/// Splits the shards with the most queues each until there are `n` (or every one holds one).
fn split_to(cuts: Vec<(usize, usize)>, n: usize) -> Vec<(usize, usize)> {
    let mut pieces = vec![1usize; cuts.len()];
    for _ in cuts.len()..n {
        let roomiest = (0..cuts.len())
            .filter(|&i| cuts[i].1 - cuts[i].0 > pieces[i])
            .max_by(|&a, &b| {
                let per = |i: usize| (cuts[i].1 - cuts[i].0) as f64 / pieces[i] as f64;
                per(a).total_cmp(&per(b)).then(b.cmp(&a))
            });
        let Some(i) = roomiest else { break };
        pieces[i] += 1;
    }
    let mut out = Vec::with_capacity(n.max(cuts.len()));
    for ((from, to), parts) in cuts.into_iter().zip(pieces) {
        let (each, extra) = ((to - from) / parts, (to - from) % parts);
        let mut at = from;
        for p in 0..parts {
            let next = at + each + usize::from(p < extra);
            out.push((at, next));
            at = next;
        }
    }
    out
}

/// The rooms from the first unit's first to the last unit's last.
fn span(units: &[Unit]) -> RoomRange {
    let (first, last) = (units[0].rooms, units[units.len() - 1].rooms);
    RoomRange::new(first.start(), last.end()).expect("units are in room order")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(shares: &[f64]) -> Vec<Unit> {
        shares
            .iter()
            .zip(1..)
            .map(|(&share, room)| Unit {
                rooms: RoomRange::new(room, room).unwrap(),
                share,
            })
            .collect()
    }

    fn names(ranges: &[RoomRange]) -> Vec<String> {
        ranges.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_hot_room_gets_a_shard_of_its_own_and_quiet_rooms_share() {
        let mut shares = vec![0.01; 20];
        shares[6] = 1.5;
        assert_eq!(names(&pack(&rooms(&shares), 1, 8)), ["1-6", "7-7", "8-20"]);
        // At the edge of the range it costs no extra shard.
        let mut shares = vec![0.0; 20];
        shares[0] = 0.9;
        assert_eq!(names(&pack(&rooms(&shares), 1, 8)), ["1-1", "2-20"]);
    }

    #[test]
    fn even_load_is_cut_where_the_headroom_ends() {
        // 20 rooms at 0.1 each: 8 to a shard at 0.8.
        assert_eq!(
            names(&pack(&rooms(&[0.1; 20]), 1, 8)),
            ["1-8", "9-16", "17-20"]
        );
    }

    #[test]
    fn past_the_maximum_the_packing_loosens_rather_than_exceed_it() {
        let packed = pack(&rooms(&[0.5; 8]), 1, 4);
        assert_eq!(names(&packed), ["1-2", "3-4", "5-6", "7-8"]);
        assert_eq!(pack(&rooms(&[5.0; 8]), 1, 3).len(), 3);
    }

    #[test]
    fn below_the_minimum_the_roomiest_shards_split_and_a_quiet_set_spreads_evenly() {
        assert_eq!(names(&pack(&rooms(&[0.0; 20]), 2, 4)), ["1-10", "11-20"]);
        assert_eq!(
            names(&pack(&rooms(&[0.0; 20]), 3, 4)),
            ["1-7", "8-14", "15-20"]
        );
        let mut shares = vec![0.0; 20];
        shares[6] = 2.0;
        assert_eq!(
            names(&pack(&rooms(&shares), 4, 4)),
            ["1-6", "7-7", "8-14", "15-20"],
            "the hot room stays alone"
        );
        assert_eq!(
            pack(&rooms(&[0.0; 2]), 3, 4).len(),
            2,
            "one room per shard at most"
        );
    }

    #[test]
    fn buckets_move_whole() {
        let units: Vec<Unit> = (0..5)
            .map(|b| Unit {
                rooms: RoomRange::new(b * 4 + 1, b * 4 + 4).unwrap(),
                share: if b == 2 { 1.0 } else { 0.0 },
            })
            .collect();
        assert_eq!(names(&pack(&units, 1, 8)), ["1-8", "9-12", "13-20"]);
        assert_eq!(names(&even(&units, 2)), ["1-12", "13-20"]);
        assert_eq!(loads(&units, &pack(&units, 1, 8)), [0.0, 1.0, 0.0]);
    }
}
