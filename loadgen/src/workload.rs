//! What the simulated users send: the original assignment's message mix.

use chatflow::protocol::{MessageType, now_rfc3339};
use chatflow::rooms::{RoomId, RoomRange};
use rand::Rng;
use rand::rngs::SmallRng;

/// The 50 canned chat lines messages are drawn from.
pub const CANNED: [&str; 50] = [
    "Hello everyone!",
    "How is it going?",
    "Anyone here?",
    "Good morning!",
    "Good night!",
    "That's hilarious",
    "I agree",
    "I disagree",
    "Can you explain?",
    "Thanks a lot!",
    "See you later",
    "What's up?",
    "Nice to meet you",
    "Welcome!",
    "Let's do this",
    "Great idea",
    "Not sure about that",
    "Sounds good",
    "Absolutely",
    "No way!",
    "brb",
    "lol",
    "Interesting point",
    "Tell me more",
    "I'm in",
    "Count me out",
    "Who's ready?",
    "Almost done",
    "Just finished",
    "On my way",
    "Happy Friday!",
    "Any news?",
    "Check this out",
    "Well said",
    "Fair enough",
    "Let me think",
    "Good question",
    "Exactly!",
    "Maybe later",
    "Why not?",
    "Congrats!",
    "Keep it up",
    "Nice work",
    "Love it",
    "Same here",
    "Totally",
    "Not today",
    "Back now",
    "Signing off",
    "Cheers!",
];

/// One message ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Run-wide sequence number; the clientMessageId is derived from it.
    pub seq: u64,
    /// Target room.
    pub room: RoomId,
    /// Message type.
    pub message_type: MessageType,
    /// The JSON frame.
    pub frame: String,
}

/// Draws the message type: 90% TEXT, 5% JOIN, 5% LEAVE.
pub fn draw_type(rng: &mut impl Rng) -> MessageType {
    match rng.random_range(0..100) {
        0..90 => MessageType::Text,
        90..95 => MessageType::Join,
        _ => MessageType::Leave,
    }
}

/// The clientMessageId of a sequence number in a run.
pub fn client_message_id(run: &str, seq: u64) -> String {
    format!("{run}-{seq}")
}

/// The sequence number back from a clientMessageId of this run.
pub fn seq_of(run: &str, id: &str) -> Option<u64> {
    id.strip_prefix(run)?.strip_prefix('-')?.parse().ok()
}

/// Builds message `seq` for `room`.
pub fn make(run: &str, seq: u64, room: RoomId, rng: &mut SmallRng) -> Outgoing {
    let user: u32 = rng.random_range(1..=100_000);
    let message_type = draw_type(rng);
    let text = CANNED[rng.random_range(0..CANNED.len())];
    let frame = serde_json::json!({
        "userId": user.to_string(),
        "username": format!("user{user}"),
        "message": text,
        "timestamp": now_rfc3339(),
        "messageType": message_type.as_str(),
        "clientMessageId": client_message_id(run, seq),
    })
    .to_string();
    Outgoing {
        seq,
        room,
        message_type,
        frame,
    }
}

/// A uniformly random room of the range.
pub fn draw_room(rooms: RoomRange, rng: &mut impl Rng) -> RoomId {
    rng.random_range(rooms.start()..=rooms.end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn messages_are_valid_and_the_mix_is_90_5_5() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for seq in 0..20_000 {
            let m = make("r", seq, 3, &mut rng);
            let parsed =
                chatflow::protocol::ConversationMessage::parse(m.frame.as_bytes()).expect("valid");
            assert_eq!(parsed.message_type, m.message_type);
            assert_eq!(
                seq_of("r", parsed.client_message_id.as_deref().unwrap()),
                Some(seq)
            );
            counts[MessageType::ALL
                .iter()
                .position(|t| *t == m.message_type)
                .unwrap()] += 1;
        }
        let share = |n: usize| n as f64 / 20_000.0;
        assert!((share(counts[0]) - 0.90).abs() < 0.01, "{counts:?}");
        assert!((share(counts[1]) - 0.05).abs() < 0.01, "{counts:?}");
        assert!((share(counts[2]) - 0.05).abs() < 0.01, "{counts:?}");
    }
}
