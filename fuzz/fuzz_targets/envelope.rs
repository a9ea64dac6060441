//! Any queue body in either format: unpacking never panics, and every chat message a shard
//! would broadcast (one that passes its re-check) meets the length rules of the protocol.
#![no_main]

use chatflow::envelope::unpack;
use chatflow::protocol::{CLIENT_MESSAGE_ID_MAX, MESSAGE_MAX, USERNAME_MAX};
use chatflow::queue::BodyFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for format in [BodyFormat::Task, BodyFormat::Envelope] {
        let Ok(tasks) = unpack(&format, body) else {
            continue;
        };
        for t in tasks.iter().filter(|t| t.recheck(t.room_id).is_ok()) {
            assert!(t.message.chars().count() <= MESSAGE_MAX, "{t:?}");
            assert!(t.username.len() <= USERNAME_MAX, "{t:?}");
            assert!(t.timestamp.len() <= 64, "{t:?}");
            assert!(
                t.client_message_id
                    .as_ref()
                    .is_none_or(|c| c.len() <= CLIENT_MESSAGE_ID_MAX)
            );
            assert!(
                [&t.message_id, &t.server_id, &t.client_ip, &t.received_at]
                    .iter()
                    .all(|s| s.len() <= 256)
            );
        }
    }
});
