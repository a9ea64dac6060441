//! Any string as a token, and any claims signed with the server's key: a token not signed with
//! the key is never accepted, a signed one always is and names its subject, and a room list
//! grants exactly the ranges it writes.
#![no_main]

use std::sync::{Arc, OnceLock};

use chatflow::auth::{
    AuthOptions, Claims, Gate, MAX_ROOM_ENTRIES, MAX_TOKEN_BYTES, RoomSet, mint_hs256,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret-fuzz";

fn gate() -> &'static Gate {
    static GATE: OnceLock<Arc<Gate>> = OnceLock::new();
    GATE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("chatflow-fuzz-{}.key", std::process::id()));
        std::fs::write(&path, SECRET).unwrap();
        let opts = AuthOptions {
            jwt_secret_file: Some(path),
            ..AuthOptions::default()
        };
        Gate::new(
            &opts,
            Vec::new(),
            &mut prometheus_client::registry::Registry::default(),
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verdict = futures::executor::block_on(gate().verify(text));
    assert!(verdict.is_err(), "an unsigned token was accepted: {text:?}");

    let signed = mint_hs256(SECRET, &Claims::new(text, 300, &[], &[]));
    let verdict = futures::executor::block_on(gate().verify(&signed));
    if signed.len() > MAX_TOKEN_BYTES {
        assert!(verdict.unwrap_err().contains("longer than"));
    } else {
        let grant = verdict.unwrap();
        assert_eq!(grant.subject, text);
        assert_eq!(grant.user_id, text.trim().parse().ok());
    }

    let entries: Vec<String> = text.split(',').map(str::to_owned).collect();
    if let Ok(set) = RoomSet::parse(&entries) {
        assert!(entries.len() <= MAX_ROOM_ENTRIES);
        for e in &entries {
            let e = e.trim();
            let (a, b) = if e == "*" {
                (u32::MIN, u32::MAX)
            } else {
                let (a, b) = e.split_once('-').unwrap_or((e, e));
                (a.trim().parse().unwrap(), b.trim().parse().unwrap())
            };
            assert!(a <= b && set.contains(a) && set.contains(b), "{e:?}");
        }
    }
});
