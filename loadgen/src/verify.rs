//! The delivery checker: every acknowledged message delivered exactly once to every subscriber
//! of its room, in per-room order.

use std::collections::HashMap;

use chatflow::rooms::RoomId;

/// What one subscriber saw: its room and the sequence numbers in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// Room subscribed to.
    pub room: RoomId,
    /// Sequence numbers received, in order.
    pub seqs: Vec<u64>,
}

/// An acknowledged message: which room, which sender connection, its place in that sender's order.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    /// Sequence number.
    pub seq: u64,
    /// Room.
    pub room: RoomId,
    /// Sender connection id.
    pub sender: u32,
    /// Position in the sender's send order of the attempt that was answered OK.
    pub order: u64,
    /// Position of its first attempt (`order` when it was not retried).
    pub first_order: u64,
}

/// Counts across all subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// (message, subscriber) pairs expected.
    pub expected: u64,
    /// Pairs delivered exactly once.
    pub delivered: u64,
    /// Pairs never delivered.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Deliveries that came before an earlier message of the same sender.
    pub out_of_order: u64,
    /// Deliveries of messages that were never acknowledged (sent, failed, but queued anyway).
    pub unacked_deliveries: u64,
    /// Subscribers of one room that saw different orders.
    pub divergent_subscribers: u64,
}

impl Verdict {
    /// Nothing lost, duplicated or reordered.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.divergent_subscribers == 0
    }
}

/// Checks subscriber streams against the acknowledged messages.
pub fn check(acked: &[Acked], streams: &[Stream]) -> Verdict {
    let by_seq: HashMap<u64, Acked> = acked.iter().map(|a| (a.seq, *a)).collect();
    let mut per_room: HashMap<RoomId, u64> = HashMap::new();
    for a in acked {
        *per_room.entry(a.room).or_default() += 1;
    }
    let mut v = Verdict::default();
    let mut room_order: HashMap<RoomId, Vec<u64>> = HashMap::new();
    for s in streams {
        let expected = per_room.get(&s.room).copied().unwrap_or(0);
        v.expected += expected;
        let mut seen: HashMap<u64, u32> = HashMap::with_capacity(s.seqs.len());
        let mut last_by_sender: HashMap<u32, u64> = HashMap::new();
        let mut clean_order = Vec::with_capacity(s.seqs.len());
        for &seq in &s.seqs {
            let Some(a) = by_seq.get(&seq).filter(|a| a.room == s.room) else {
                v.unacked_deliveries += 1;
                continue;
            };
            let n = seen.entry(seq).or_default();
            *n += 1;
            if *n > 1 {
                v.duplicated += 1;
                continue;
            }
            clean_order.push(seq);
            // An attempt answered QUEUE_ERROR may still have been stored: the failure can come
            // after SQS took the batch. Its resend is then dropped as a duplicate, and the message
            // is delivered where that attempt put it. So a retried message may sit anywhere from
            // its first attempt's place to its answered attempt's; nothing sent after it was
            // answered may come before it.
            let last = last_by_sender.entry(a.sender).or_insert(a.first_order);
            if a.order < *last {
                v.out_of_order += 1;
            } else {
                *last = (*last).max(a.first_order);
            }
        }
        let delivered = seen.len() as u64;
        v.delivered += delivered;
        v.lost += expected - delivered.min(expected);
        match room_order.get(&s.room) {
            Some(order) if *order != clean_order => v.divergent_subscribers += 1,
            Some(_) => {}
            None => {
                room_order.insert(s.room, clean_order);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(list: &[(u64, RoomId, u32, u64)]) -> Vec<Acked> {
        list.iter()
            .map(|&(seq, room, sender, order)| Acked {
                seq,
                room,
                sender,
                order,
                first_order: order,
            })
            .collect()
    }

    #[test]
    fn a_retried_message_may_arrive_where_any_of_its_attempts_was_sent() {
        // Message 1 was sent first (order 0), answered QUEUE_ERROR, and resent as order 3 after
        // messages 2 and 3 (orders 1, 2). Its first attempt had been stored after all.
        let mut a = acked(&[(1, 1, 0, 3), (2, 1, 0, 1), (3, 1, 0, 2), (4, 1, 0, 4)]);
        a[0].first_order = 0;
        let stream = |seqs: Vec<u64>| vec![Stream { room: 1, seqs }];
        let first_place = check(&a, &stream(vec![1, 2, 3, 4]));
        assert_eq!(first_place.out_of_order, 0, "stored by its first attempt");
        let answered_place = check(&a, &stream(vec![2, 3, 1, 4]));
        assert_eq!(answered_place.out_of_order, 0, "stored by its resend");
        let after_its_answer = check(&a, &stream(vec![2, 3, 4, 1]));
        assert_eq!(
            after_its_answer.out_of_order, 1,
            "4 was sent after 1 was answered"
        );
    }

    #[test]
    fn a_perfect_stream_is_clean() {
        let a = acked(&[(1, 1, 0, 0), (2, 1, 0, 1), (3, 2, 1, 0)]);
        let s = vec![
            Stream {
                room: 1,
                seqs: vec![1, 2],
            },
            Stream {
                room: 1,
                seqs: vec![1, 2],
            },
            Stream {
                room: 2,
                seqs: vec![3],
            },
        ];
        let v = check(&a, &s);
        assert!(v.clean(), "{v:?}");
        assert_eq!((v.expected, v.delivered), (5, 5));
    }

    #[test]
    fn losses_duplicates_reorders_and_strays_are_counted() {
        let a = acked(&[(1, 1, 0, 0), (2, 1, 0, 1), (3, 1, 0, 2), (4, 1, 1, 0)]);
        let s = vec![
            // 3 before 2 from the same sender; 1 twice; 4 lost... no: 4 present, 9 stray.
            Stream {
                room: 1,
                seqs: vec![1, 3, 2, 1, 4, 9],
            },
            // lost 2 and 4.
            Stream {
                room: 1,
                seqs: vec![1, 3],
            },
        ];
        let v = check(&a, &s);
        assert_eq!(v.duplicated, 1);
        assert_eq!(v.out_of_order, 1);
        assert_eq!(v.unacked_deliveries, 1);
        assert_eq!(v.lost, 2);
        assert_eq!(v.divergent_subscribers, 1);
        assert!(!v.clean());
    }

    #[test]
    fn interleaving_of_different_senders_is_not_a_reorder() {
        let a = acked(&[(1, 1, 0, 0), (2, 1, 1, 0), (3, 1, 0, 1), (4, 1, 1, 1)]);
        let v = check(
            &a,
            &[Stream {
                room: 1,
                seqs: vec![2, 1, 4, 3],
            }],
        );
        assert!(v.clean(), "{v:?}");
    }
}
