//! Tokens for the load generator's users, minted from the HS256 secret the servers check them
//! with: loadgen plays the identity provider a deployment would have. Each sender connection
//! is one user, as a token names one user, so its messages carry that user's id.

use std::path::Path;

use chatflow::auth::{Claims, mint_hs256};

/// Largest userId the protocol accepts.
const MAX_USER: u32 = 100_000;

/// How long a minted token lasts; a connection open longer is closed by the server and
/// reconnects with a fresh one.
const TTL_SECS: u64 = 3_600;

/// The secret users' tokens are signed with.
pub struct Credentials {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl Credentials {
    /// The secret in `path` (trailing whitespace ignored, as the servers read it).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        Ok(Credentials {
            secret: bytes.trim_ascii_end().to_vec(),
        })
    }

    /// The user a sender connection speaks as.
    pub fn user_of(sender: u32) -> u32 {
        sender % MAX_USER + 1
    }

    /// `Authorization` for a sender connection: its user, every room.
    pub fn sender_header(&self, sender: u32) -> String {
        let user = Self::user_of(sender).to_string();
        self.header(Claims::new(user, TTL_SECS, &["*"], &["*"]))
    }

    /// `Authorization` for a subscriber: reads every room, sends nowhere.
    pub fn subscriber_header(&self) -> String {
        self.header(Claims::new("loadgen-subscriber", TTL_SECS, &[], &["*"]))
    }

    fn header(&self, claims: Claims) -> String {
        format!("Bearer {}", mint_hs256(&self.secret, &claims))
    }
}

/// The request headers that carry `authorization`, if there is one.
pub fn headers(authorization: Option<&str>) -> Vec<(&'static str, &str)> {
    authorization
        .map(|h| ("authorization", h))
        .into_iter()
        .collect()
}

/// `frame` as sent by `user`: its userId and username replaced.
pub fn as_user(frame: &str, user: u32) -> String {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(frame) else {
        return frame.to_owned();
    };
    m.insert("userId".into(), user.to_string().into());
    m.insert("username".into(), format!("user{user}").into());
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_sent_as_its_connection_s_user() {
        let f = r#"{"userId":"77","username":"user77","message":"hi","clientMessageId":"r-1"}"#;
        let v: serde_json::Value = serde_json::from_str(&as_user(f, 5)).unwrap();
        assert_eq!(
            (v["userId"].as_str(), v["username"].as_str()),
            (Some("5"), Some("user5"))
        );
        assert_eq!(v["clientMessageId"], "r-1");
        assert_eq!(
            Credentials::user_of(100_000),
            1,
            "warm-up ids stay valid user ids"
        );
    }
}
