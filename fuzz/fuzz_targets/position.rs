//! Any `?after=` value: a position the server accepts is one it would have written itself.
#![no_main]

use chatflow::protocol::Position;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = text.parse::<Position>() {
        assert_eq!(p.to_string().parse::<Position>(), Ok(p), "{text:?}");
    }
});
