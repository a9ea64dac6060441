//! Memory per connection: a child process holds idle connections while this process, which
//! runs the server, watches its own resident memory grow.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Options of the hidden `hold` scenario.
#[derive(Debug, Clone, Args)]
pub struct HoldOptions {
    /// URL to open connections to.
    #[arg(long)]
    pub url: String,
    /// How many.
    #[arg(long)]
    pub count: usize,
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Opens `count` connections, prints `held N`, and keeps them until stdin closes.
pub async fn hold(o: HoldOptions) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(o.count);
    for chunk in (0..o.count).collect::<Vec<_>>().chunks(200) {
        let opened = futures::future::join_all(
            chunk
                .iter()
                .map(|_| chatflow::ws::connect_split(&o.url, Duration::from_secs(30))),
        )
        .await;
        for c in opened {
            held.push(
                c.with_context(|| format!("opening connection {} to {}", held.len() + 1, o.url))?,
            );
        }
    }
    println!("held {}", held.len());
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

/// Server memory per connection while a child holds `count` idle connections to `url`.
#[derive(Debug, Clone, Copy)]
pub struct PerConnection {
    /// Live heap bytes per connection (exact, from the counting allocator).
    pub heap: f64,
    /// Resident-memory growth per connection (includes allocator slack; understates when
    /// freed memory is reused).
    pub rss: f64,
}

/// Measures server memory per connection: heap and RSS growth of this process while a child
/// holds `count` idle connections to `url`, divided by `count`.
pub async fn per_connection(url: &str, count: usize) -> anyhow::Result<PerConnection> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let heap_before = chatflow_testkit::alloc::live_bytes();
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut child = Command::new(exe)
        .args(["bench", "hold", "--url", url, "--count", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the connection holder")?;
    let stdout = child.stdout.take().context("holder stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .context("the holder did not open its connections in time")??;
    if line.as_deref() != Some(&format!("held {count}")) {
        bail!("the holder failed: {line:?}");
    }
    // Let upgrades finish and per-connection tasks settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let heap_after = chatflow_testkit::alloc::live_bytes();
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(PerConnection {
        heap: heap_after.saturating_sub(heap_before) as f64 / count as f64,
        rss: after.saturating_sub(before) as f64 / count as f64,
    })
}
