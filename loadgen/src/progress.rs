//! Progress display: a bar on a terminal, a plain line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// Shared progress of the current phase.
pub struct Progress {
    done: Arc<AtomicU64>,
    ticker: Mutex<Option<CancellationToken>>,
    enabled: bool,
}

impl Progress {
    /// Progress shown on stderr; `enabled` false keeps quiet (tests).
    pub fn new(enabled: bool) -> Self {
        Progress {
            done: Arc::default(),
            ticker: Mutex::default(),
            enabled,
        }
    }

    /// The counter senders add to.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    /// Sets the counter directly.
    pub fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }

    /// Starts showing a new phase of `total` steps.
    pub fn phase(&self, name: &'static str, total: u64) {
        self.finish();
        self.done.store(0, Ordering::Relaxed);
        if !self.enabled {
            return;
        }
        let stop = CancellationToken::new();
        *self.ticker.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        let done = self.done.clone();
        let terminal = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let bar = terminal.then(|| {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(name);
                bar
            });
            let period = if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            };
            loop {
                let stopped = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = tokio::time::sleep(period) => false,
                };
                let n = done.load(Ordering::Relaxed);
                match &bar {
                    Some(bar) => bar.set_position(n),
                    None if !stopped => eprintln!(
                        "{name}: {n}/{total} ({:.0}%)",
                        n as f64 * 100.0 / total.max(1) as f64
                    ),
                    None => {}
                }
                if stopped {
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    return;
                }
            }
        });
    }

    /// Stops showing the current phase.
    pub fn finish(&self) {
        if let Some(stop) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stop.cancel();
        }
    }
}
