//! Logging set-up shared by every binary.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: RUST_LOG filter (default `info`), JSON lines when
/// LOG_FORMAT=json (for log collectors), human-readable otherwise. Safe to call twice.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
