//! Any bytes a client sends as a chat message: the parser never panics, and whatever it accepts
//! meets every validation rule.
#![no_main]

use chatflow::protocol::{
    CLIENT_MESSAGE_ID_MAX, ConversationMessage, MESSAGE_MAX, USER_ID_MAX, USER_ID_MIN,
    USERNAME_MAX, USERNAME_MIN, java_whitespace,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    match ConversationMessage::parse(frame) {
        Ok(m) => {
            assert!((USER_ID_MIN..=USER_ID_MAX).contains(&m.user_id), "{m:?}");
            assert!(
                (USERNAME_MIN..=USERNAME_MAX).contains(&m.username.len())
                    && m.username.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{m:?}"
            );
            let chars = m.message.chars().count();
            assert!(
                (1..=MESSAGE_MAX).contains(&chars) && !m.message.chars().all(java_whitespace),
                "{m:?}"
            );
            assert!(
                matches!(m.timestamp.as_bytes().get(10), Some(b'T' | b't')),
                "{m:?}"
            );
            // At most nanoseconds, as Java reads them: a timestamp's length is bounded.
            let fraction = m
                .timestamp
                .get(19..)
                .and_then(|r| r.strip_prefix('.'))
                .map_or(0, |f| f.bytes().take_while(u8::is_ascii_digit).count());
            assert!(fraction <= 9 && m.timestamp.len() <= 64, "{m:?}");
            if let Some(id) = &m.client_message_id {
                assert!(
                    (1..=CLIENT_MESSAGE_ID_MAX).contains(&id.len())
                        && id.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                    "{m:?}"
                );
            }
        }
        Err(rejection) => assert!(!rejection.reason.is_empty(), "{rejection:?}"),
    }
});
