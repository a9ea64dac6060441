//! Any bytes a client sends after the upgrade: the server's frame reader never panics, never
//! hands over a message above its limit or a text message that is not UTF-8, and comes to an
//! end with its input.
#![no_main]

use chatflow::ws::{Inbound, Obligation, server_reader};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1024;

fuzz_target!(|wire: &[u8]| {
    futures::executor::block_on(async {
        let mut reader = server_reader(wire, LIMIT);
        let mut owe = |_: Obligation| async {};
        // Every message takes at least a two-byte frame header from the input.
        for _ in 0..=wire.len() / 2 {
            match reader.next(&mut owe).await {
                Ok(Inbound::Text(text)) => {
                    assert!(text.len() <= LIMIT);
                    assert!(std::str::from_utf8(&text).is_ok());
                }
                Ok(Inbound::Binary(bytes)) => assert!(bytes.len() <= LIMIT),
                Ok(Inbound::Pong) => {}
                Ok(Inbound::Close) | Err(_) => return,
            }
        }
        panic!("more messages than the input can hold");
    });
});
