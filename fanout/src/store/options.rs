//! Where a shard keeps room history beyond its own memory, and how much.

use clap::Args;

/// The history store's flags: without a URL, history is the shard's memory only.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct StoreOptions {
    /// Redis (or Valkey) URL of the history store: `redis://[:PASSWORD@]HOST:PORT[/DB]`, or
    /// `rediss://` for TLS. Unset, history lives in each shard's memory.
    #[arg(long = "history-store-url", env = "HISTORY_STORE_URL")]
    #[serde(serialize_with = "without_credentials")]
    pub url: Option<String>,
    /// Events kept per room in the store.
    #[arg(long = "history-max-len", env = "HISTORY_MAX_LEN", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_len: u64,
    /// Seconds an event is kept in the store; a room quiet for this long is forgotten.
    #[arg(long = "history-max-age-secs", env = "HISTORY_MAX_AGE_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub max_age_secs: u64,
    /// Prefix of the store's keys, so sets sharing a store keep apart.
    #[arg(
        long = "history-key-prefix",
        env = "HISTORY_KEY_PREFIX",
        default_value = "chatflow"
    )]
    pub key_prefix: String,
    /// Longest wait for the store to connect or answer, in milliseconds.
    #[arg(long = "history-store-timeout-ms", env = "HISTORY_STORE_TIMEOUT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub timeout_ms: u64,
}

/// The URL as `/info` shows it: scheme, host and port, never a password.
pub(crate) fn without_credentials<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(url) => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            s.collect_str(&format_args!("{scheme}://{host}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_never_shows_the_store_password() {
        let opts = |url: &str| StoreOptions {
            url: Some(url.to_owned()),
            max_len: 1,
            max_age_secs: 1,
            key_prefix: "p".into(),
            timeout_ms: 10,
        };
        let shown = serde_json::to_value(opts("rediss://:s3cret@cache.example:6379/0")).unwrap();
        assert_eq!(shown["url"], "rediss://cache.example:6379/0");
        let shown = serde_json::to_value(opts("redis://user:pw@10.0.0.1:6379")).unwrap();
        assert_eq!(shown["url"], "redis://10.0.0.1:6379");
    }
}
