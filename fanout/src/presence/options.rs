//! Where presence is kept and how fast it moves.

use clap::Args;

/// The presence flags: without a store URL, presence is this process's own subscribers.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PresenceOptions {
    /// Serve presence: the `/presence/{roomId}` roster and `?presence=true` join/leave frames.
    #[arg(long = "presence", env = "PRESENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Redis (or Valkey) URL where every pod writes its subscribers, so a roster spans the pods:
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://`. Unset, a roster is this process's.
    #[arg(long = "presence-store-url", env = "PRESENCE_STORE_URL")]
    #[serde(serialize_with = "crate::store::without_credentials")]
    pub url: Option<String>,
    /// Seconds a connection stays in the roster without a refresh: how long a user of a pod
    /// that died without saying goodbye (SIGKILL, node loss) is still listed.
    #[arg(long = "presence-ttl-secs", env = "PRESENCE_TTL_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(4..=3_600))]
    pub ttl_secs: u64,
    /// Milliseconds over which joins and leaves are gathered into one frame per room.
    #[arg(long = "presence-diff-interval-ms", env = "PRESENCE_DIFF_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub diff_interval_ms: u64,
    /// Most users one presence frame names; further changes are counted in `omitted`.
    #[arg(long = "presence-diff-max", env = "PRESENCE_DIFF_MAX", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub diff_max: u64,
    /// Prefix of the store's keys and channels, so sets sharing a store keep apart.
    #[arg(
        long = "presence-key-prefix",
        env = "PRESENCE_KEY_PREFIX",
        default_value = "chatflow"
    )]
    pub key_prefix: String,
    /// Longest wait for the store to connect or answer, in milliseconds.
    #[arg(long = "presence-store-timeout-ms", env = "PRESENCE_STORE_TIMEOUT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub timeout_ms: u64,
}

impl Default for PresenceOptions {
    fn default() -> Self {
        PresenceOptions {
            enabled: true,
            url: None,
            ttl_secs: 20,
            diff_interval_ms: 1_000,
            diff_max: 100,
            key_prefix: "chatflow".to_owned(),
            timeout_ms: 2_000,
        }
    }
}
