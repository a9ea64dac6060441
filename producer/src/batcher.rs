//! One batcher per queue (a room's, or a bucket's that rooms share): collects what its rooms
//! received, packs it into at most ten queue entries (one message each, or envelopes of many:
//! a bucket is one message group, so its rooms share envelopes), publishes them in one call with
//! retries, and answers each message from its entry's result. A single task per queue keeps one
//! batch in flight, so the queue's order is the order its messages were received. A queue in
//! memory is published by the connections themselves ([`publish_in_place`]), with the same
//! packing, retries and answers.

use chatflow::retry::Backoff;
use std::sync::Arc;
use std::time::Duration;

use chatflow::envelope::{Packing, TaggedPacker};
use chatflow::queue::{PublishEntry, SharedQueues};
use chatflow::rooms::RoomId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::breaker::{Admission, Breaker};
use crate::metrics::Metrics;

/// The answer for one message: Ok once the queue holds it, Err with the reason otherwise.
pub type Outcome = Result<(), String>;

/// A message waiting for its batch.
pub struct Pending {
    /// What to publish.
    pub entry: PublishEntry,
    /// Where its outcome goes.
    pub reply: oneshot::Sender<Outcome>,
}

/// Retry and batching policy.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    /// How messages are laid into queue entries.
    pub packing: Packing,
    /// Wait for more messages after the first of a batch.
    pub linger: Duration,
    /// Attempts per batch for transient failures.
    pub attempts: u32,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl BatchPolicy {
    /// The wait before retry `n` (1-based): doubling from the base, with jitter, so producers
    /// that failed together do not retry together.
    fn backoff(&self, n: u32) -> Duration {
        Backoff::jittered(self.retry_base, self.retry_max).nth(n)
    }
}

/// Shared pieces every room batcher uses.
pub struct BatchContext {
    /// Queue backend.
    pub queues: SharedQueues,
    /// Policy.
    pub policy: BatchPolicy,
    /// Circuit breaker shared by all rooms: an outage is a service-wide event.
    pub breaker: Breaker,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The queue entries of a batch and, for each, the messages it answers for. Entries sit apart
/// from their replies so the queue reads them in place, with no copy per attempt.
#[derive(Default)]
struct Batch {
    entries: Vec<PublishEntry>,
    replies: Vec<Vec<oneshot::Sender<Outcome>>>,
}

impl Batch {
    fn push(&mut self, entry: PublishEntry, replies: Vec<oneshot::Sender<Outcome>>) {
        self.entries.push(entry);
        self.replies.push(replies);
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn messages(&self) -> usize {
        self.replies.iter().map(Vec::len).sum()
    }
}

fn answer(replies: Vec<oneshot::Sender<Outcome>>, outcome: &Outcome) {
    for reply in replies {
        let _ = reply.send(outcome.clone());
    }
}

/// The replies of a batch's messages, each handed back with the entry that carries it.
type Packer = TaggedPacker<oneshot::Sender<Outcome>>;

/// Runs a queue's batcher until every sender is gone and the last batch is answered; `room` is
/// the queue's key (its first room).
pub async fn run(room: RoomId, ctx: Arc<BatchContext>, mut rx: mpsc::Receiver<Pending>) {
    let mut packer = Packer::new(ctx.policy.packing);
    // A message that did not fit the last batch opens the next one.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        // One turn of the scheduler lets the readers already woken add their messages to this
        // batch: without it an instant queue (the embedded one) gets a batch per message.
        tokio::task::yield_now().await;
        let deadline = Instant::now() + ctx.policy.linger;
        let mut next = Some(first);
        while let Some(p) = next.take() {
            if let Err((entry, reply)) = packer.push_tagged(p.entry, p.reply) {
                carry = Some(Pending { entry, reply });
                break;
            }
            next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
        }
        publish(room, &ctx, &mut seal(&mut packer)).await;
    }
}

/// The packer's entries as a batch, each with the replies of the messages it carries.
fn seal(packer: &mut Packer) -> Batch {
    let mut batch = Batch::default();
    for (entry, replies) in packer.take_tagged() {
        batch.push(entry, replies);
    }
    batch
}

/// Packs and publishes `pending` at once, in order, answering each message. For queues that
/// publish in memory, the connection that read the messages calls this itself: handing them to
/// the room's batcher would only add turns of the scheduler before the ack.
pub async fn publish_in_place(
    room: RoomId,
    ctx: &BatchContext,
    pending: impl IntoIterator<Item = Pending>,
) {
    let mut packer = Packer::new(ctx.policy.packing);
    for Pending {
        mut entry,
        mut reply,
    } in pending
    {
        // An empty packer takes any entry, so this ends after one publish at most.
        while let Err(back) = packer.push_tagged(entry, reply) {
            publish(room, ctx, &mut seal(&mut packer)).await;
            (entry, reply) = back;
        }
    }
    if !packer.is_empty() {
        publish(room, ctx, &mut seal(&mut packer)).await;
    }
}

/// Publishes `batch`, answering every message in it; the batch is empty afterwards.
async fn publish(room: RoomId, ctx: &BatchContext, batch: &mut Batch) {
    let m = &ctx.metrics;
    let admission = ctx.breaker.admit();
    if admission == Admission::Reject {
        fail_all(
            ctx,
            batch,
            "queue service unavailable (circuit breaker open)",
        );
        return;
    }
    let attempts = if admission == Admission::Probe {
        1
    } else {
        ctx.policy.attempts
    };
    let mut last_error = String::new();
    // Only an outage of the queue service counts toward the breaker; a missing queue or a
    // refused request concerns one room and must not fail the others.
    let mut outage = true;
    for attempt in 1..=attempts {
        if attempt > 1 {
            m.publish_retries.inc();
            tokio::time::sleep(ctx.policy.backoff(attempt - 1)).await;
        }
        m.batch_size.observe(batch.messages() as f64);
        let started = Instant::now();
        let result = ctx.queues.publish(room, &batch.entries).await;
        m.publish_latency.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(results) => {
                // A retried entry must not land behind a later one that already succeeded, so
                // only failures after the last success (a failed tail) are retried.
                let last_ok = results.iter().rposition(Result::is_ok);
                let mut retry = Batch::default();
                let parcels = batch.entries.drain(..).zip(batch.replies.drain(..));
                for (i, ((entry, replies), res)) in parcels.zip(results).enumerate() {
                    let n = replies.len() as u64;
                    match res {
                        Ok(_) => {
                            m.messages_published.inc_by(n);
                            answer(replies, &Ok(()));
                        }
                        Err(e) if e.sender_fault => {
                            m.publish_failed(n);
                            answer(replies, &Err(format!("queue refused the message: {e}")));
                        }
                        Err(e) if last_ok.is_some_and(|ok| i < ok) => {
                            m.publish_failed(n);
                            answer(
                                replies,
                                &Err(format!(
                                    "queue did not take the message ({e}); not retried, to keep the room's order"
                                )),
                            );
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            retry.push(entry, replies);
                        }
                    }
                }
                *batch = retry;
                if batch.is_empty() {
                    close_breaker(ctx);
                    return;
                }
            }
            Err(e) if e.is_transient() => last_error = e.to_string(),
            Err(e) => {
                last_error = e.to_string();
                outage = false;
                break;
            }
        }
        tracing::debug!(room, attempt, error = %last_error, "batch publish failed");
    }
    tracing::warn!(room, entries = batch.entries.len(), error = %last_error, "batch not published");
    if outage && ctx.breaker.failure() {
        m.breaker_open.set(1);
        tracing::error!(error = %last_error, "circuit breaker opened: answering QUEUE_ERROR until a probe succeeds");
    }
    fail_all(ctx, batch, &format!("queue unavailable: {last_error}"));
}

fn close_breaker(ctx: &BatchContext) {
    if ctx.breaker.is_open() {
        tracing::info!("circuit breaker closed: queue reachable again");
    }
    ctx.breaker.success();
    ctx.metrics.breaker_open.set(0);
}

fn fail_all(ctx: &BatchContext, batch: &mut Batch, reason: &str) {
    let outcome = Err(reason.to_owned());
    batch.entries.clear();
    for replies in batch.replies.drain(..) {
        ctx.metrics.publish_failed(replies.len() as u64);
        answer(replies, &outcome);
    }
}

/// While the breaker is open, probes the queue service on its own with a cheap call, so the
/// producer turns ready again without waiting for traffic (which an unready pod never gets).
pub async fn probe_while_open(
    room: RoomId,
    ctx: Arc<BatchContext>,
    cooldown: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(cooldown.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ctx.breaker.is_open() || ctx.breaker.admit() != Admission::Probe {
            continue;
        }
        match ctx.queues.depth(room).await {
            Ok(_) => close_breaker(&ctx),
            Err(e) => {
                ctx.breaker.failure();
                tracing::debug!(error = %e, "breaker probe failed");
            }
        }
    }
}
