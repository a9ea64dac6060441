//! Identity and connection-limit options, shared by every server with a WebSocket route.

use std::path::PathBuf;

/// Who may connect, from where, and for how long.
#[derive(Debug, Clone, Default, clap::Args, serde::Serialize)]
pub struct AuthOptions {
    /// File holding the HS256 secret tokens are signed with (at least 32 bytes). With neither
    /// this nor JWKS_FILE the server is anonymous: anyone may send and read any room.
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// File holding a JWKS document (RS256, ES256 or oct keys, chosen by `kid`); re-read every
    /// JWKS_REFRESH_SECS, and at once for a token whose `kid` is unknown.
    #[arg(long, env = "JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds between re-reads of the key files (the secret and the JWKS document).
    #[arg(long, env = "JWKS_REFRESH_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub jwks_refresh_secs: u64,
    /// The `iss` every token must carry (unchecked when unset).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every token must carry (unchecked when unset).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_secs: u64,
    /// Seconds a connection stays open past its token's expiry before it is closed with 4401,
    /// so a client can fetch a fresh token and reconnect without a gap.
    #[arg(long, env = "TOKEN_EXPIRY_GRACE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub token_expiry_grace_secs: u64,
    /// Origins browsers may open WebSockets from (comma-separated, exact like
    /// `https://chat.example.com`, or `*`). Unset: only the origin of the server's own host.
    /// Requests without an Origin header (programs, not browsers) are not affected.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Most WebSocket connections from one client address; more are refused with HTTP 429
    /// (0: no cap).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Seconds after which a connection is closed with 1001 so the client reconnects (and a
    /// subscriber resumes with `?after=`), spreading load over new pods; each connection's limit
    /// is up to a fifth shorter, at random (0: no limit).
    #[arg(long, env = "MAX_CONNECTION_AGE_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub max_connection_age_secs: u64,
}

impl AuthOptions {
    /// Whether tokens are checked.
    pub fn checks_tokens(&self) -> bool {
        self.jwt_secret_file.is_some() || self.jwks_file.is_some()
    }
}
