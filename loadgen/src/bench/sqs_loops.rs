//! Baselines for `bench e2e`: what LocalStack (or SQS) does for a plain SDK client in the same
//! run, one message per SQS message and ten per request, with no chat pipeline around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatflow::queue::{BodyFormat, MAX_BATCH, PublishEntry, SharedQueues};
use chatflow::rooms::RoomRange;

use crate::local::run_queues;

/// Messages per second through a loop, and the queues it used (deleted afterwards).
async fn with_queues<F, Fut>(endpoint: &str, rooms: RoomRange, body: F) -> anyhow::Result<f64>
where
    F: FnOnce(SharedQueues) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let queues: SharedQueues =
        Arc::new(run_queues(endpoint, chatflow::rooms::Layout::PerRoom).await?);
    chatflow::queue::ensure_rooms(queues.as_ref(), rooms).await?;
    let rate = body(queues.clone()).await;
    for room in rooms.iter() {
        let _ = queues.delete_queue(room).await;
    }
    rate
}

fn batch(room: u32, n: u64) -> Vec<PublishEntry> {
    (0..MAX_BATCH)
        .map(|i| PublishEntry {
            body: format!("{{\"n\":{n},\"i\":{i}}}"),
            group_id: room.to_string(),
            dedup_id: format!("{room}-{n}-{i}"),
            format: BodyFormat::Task,
        })
        .collect()
}

/// One sender per room, each sending `SendMessageBatch` of 10 in a loop: messages accepted per
/// second.
pub async fn send_only(endpoint: &str, rooms: RoomRange, run: Duration) -> anyhow::Result<f64> {
    with_queues(endpoint, rooms, |queues| async move {
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + run;
        let mut tasks = Vec::new();
        for room in rooms.iter() {
            let (queues, sent) = (queues.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if let Ok(res) = queues.publish(room, &batch(room, n)).await {
                        let ok = res.iter().filter(|r| r.is_ok()).count() as u64;
                        sent.fetch_add(ok, Ordering::Relaxed);
                    }
                    n += 1;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        Ok(sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    })
    .await
}

/// Per room, a sender as in [`send_only`] and a receiver that receives up to 10 and deletes
/// them in one batch: messages through all three requests per second.
pub async fn send_receive_delete(
    endpoint: &str,
    rooms: RoomRange,
    run: Duration,
) -> anyhow::Result<f64> {
    with_queues(endpoint, rooms, |queues| async move {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + run;
        let mut tasks = Vec::new();
        for room in rooms.iter() {
            let q = queues.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let _ = q.publish(room, &batch(room, n)).await;
                    n += 1;
                }
            }));
            let (q, done) = (queues.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let Ok(got) = q.receive(room, MAX_BATCH, Duration::from_secs(1)).await else {
                        continue;
                    };
                    if got.is_empty() {
                        continue;
                    }
                    let receipts: Vec<String> = got.into_iter().map(|m| m.receipt).collect();
                    if let Ok(res) = q.delete_batch(room, &receipts).await
                        && Instant::now() < deadline
                    {
                        let ok = res.iter().filter(|r| r.is_ok()).count() as u64;
                        done.fetch_add(ok, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / run.as_secs_f64())
    })
    .await
}
