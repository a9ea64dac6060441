//! A run's subscribers: connected before the first message, then waited for until every
//! acknowledged message has reached each of them (or they go quiet), and checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{CONNECT_TIMEOUT, Run, RunError};
use crate::subscriber::{self, Received};
use crate::verify::{self, Acked, Verdict};

/// The subscribers of every room, listening.
pub(super) struct Audience {
    listening: Vec<JoinHandle<Received>>,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Audience {
    /// Connects `subscribers_per_room` subscribers to each room (none without a subscribe URL).
    pub(super) async fn connect(run: &Run<'_>) -> Result<Self, RunError> {
        let audience = Audience {
            listening: Vec::new(),
            received: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        let Some(sub_url) = &run.targets.subscribe else {
            return Ok(audience);
        };
        let mut audience = audience;
        for room in run.workload.rooms.iter() {
            for _ in 0..run.workload.subscribers_per_room {
                let url = sub_url(room);
                let reader =
                    subscriber::connect(&url, CONNECT_TIMEOUT, run.targets.credentials.as_deref())
                        .await
                        .map_err(|source| RunError::Unreachable {
                            what: "subscribe endpoint",
                            source,
                        })?;
                audience.listening.push(tokio::spawn(subscriber::listen(
                    reader,
                    room,
                    run.id.clone(),
                    run.t0,
                    audience.received.clone(),
                    audience.stop.clone(),
                    subscriber::Resume {
                        url,
                        give_up_after: Some(run.workload.drain_timeout),
                        credentials: run.targets.credentials.clone(),
                    },
                )));
            }
        }
        Ok(audience)
    }

    /// Waits for the deliveries every acknowledged message owes each subscriber, or until none
    /// came for the drain timeout; then stops listening and checks what arrived.
    pub(super) async fn finish(
        self,
        run: &Run<'_>,
        acked: &[Acked],
    ) -> (Vec<Received>, Option<Verdict>) {
        if self.listening.is_empty() {
            return (Vec::new(), None);
        }
        let expected = acked.len() as u64 * run.workload.subscribers_per_room as u64;
        run.progress.phase("deliveries", expected);
        let mut last = self.received.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            let now = self.received.load(Ordering::Relaxed);
            run.progress.set(now);
            if now >= expected {
                // Linger briefly so duplicates, if any, are seen too.
                tokio::time::sleep(Duration::from_millis(300)).await;
                break;
            }
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > run.workload.drain_timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.cancel();
        let mut streams = Vec::new();
        for s in self.listening {
            if let Ok(r) = s.await {
                streams.push(r);
            }
        }
        let vs: Vec<verify::Stream> = streams
            .iter()
            .map(|s| verify::Stream {
                room: s.room,
                seqs: s.seqs.clone(),
            })
            .collect();
        let verdict = verify::check(acked, &vs);
        (streams, Some(verdict))
    }
}
