//! A sender connection: pipelines messages up to a window, matches in-order replies, retries
//! QUEUE_ERROR with backoff, and reconnects (resending what was unanswered) when the socket drops.
//!
//! Closed loop (no [`Schedule`]): the next message goes out as soon as the window has room.
//! Open loop (with a [`Schedule`]): message i goes out at its intended time, or at once when
//! behind, the window still bounding what is outstanding; its latency counts from the intended
//! time, so a stall delays and is charged to every message scheduled during it (coordinated
//! omission corrected, as wrk2 does).

use chatflow::retry::Backoff;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatflow::protocol::{ErrorCode, MessageType, Reply};
use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientWriter, ConnectError, connect_split_with};

use crate::credentials::{Credentials, as_user};
use tokio::sync::mpsc;

use crate::workload::Outgoing;

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Acknowledged.
    Ok,
    /// Answered with an error (after retries for QUEUE_ERROR).
    Error(ErrorCode),
    /// The connection was lost and could not be re-established within the retry budget.
    Lost,
}

impl Status {
    /// The code written to reports.
    pub fn code(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Error(c) => c.as_str(),
            Status::Lost => "CONNECTION_LOST",
        }
    }
}

/// The outcome of one message.
#[derive(Debug, Clone, Copy)]
pub struct SendRecord {
    /// Sequence number.
    pub seq: u64,
    /// Room.
    pub room: RoomId,
    /// Type.
    pub message_type: MessageType,
    /// First send, µs since the run's start; in open loop the intended send time instead.
    pub sent_us: u64,
    /// From `sent_us` to the final answer, µs.
    pub latency_us: u64,
    /// How far behind its intended time the first attempt actually went out, µs (0 in closed loop).
    pub lag_us: u64,
    /// Outcome.
    pub status: Status,
    /// Retries spent.
    pub retries: u32,
    /// Sender connection id.
    pub sender: u32,
    /// Position of the answered attempt in this sender's send order.
    pub order: u64,
    /// Position of the first attempt in this sender's send order (`order` if never retried).
    pub first_order: u64,
}

/// A sender's settings.
#[derive(Debug, Clone)]
pub struct SenderSpec {
    /// Connection id, for order checking.
    pub id: u32,
    /// ws://.../chat/{room}
    pub url: String,
    /// Messages outstanding before waiting for replies.
    pub window: usize,
    /// Retries per message (QUEUE_ERROR or lost connection).
    pub max_retries: u32,
    /// The run's clock origin.
    pub t0: Instant,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Counts answered messages, for progress.
    pub done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Open loop: when each message is meant to go out. None: closed loop.
    pub schedule: Option<Schedule>,
    /// Tokens, when the servers check them: the connection is then one user.
    pub credentials: Option<std::sync::Arc<Credentials>>,
}

/// One sender's share of an open-loop schedule: `senders` connections interleave so that the
/// run-wide message g = i * senders + index is due at `start + g / rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// When the run-wide message 0 is due, µs since the run's t0.
    pub start_us: u64,
    /// Offered messages per second across all senders.
    pub rate: f64,
    /// Senders sharing the rate.
    pub senders: u64,
    /// This sender's place among them.
    pub index: u64,
}

impl Schedule {
    /// The intended send time of this sender's message `i`, µs since t0. Computed from the
    /// index rather than by adding intervals, so late sends never push the schedule back.
    pub fn intended_us(&self, i: u64) -> u64 {
        let g = i as f64 * self.senders as f64 + self.index as f64;
        self.start_us + (g * 1e6 / self.rate).round() as u64
    }

    /// This sender's messages per second.
    pub fn per_sender_rate(&self) -> f64 {
        self.rate / self.senders.max(1) as f64
    }
}

/// Latency of a message answered at `answered_us` whose first attempt was due (open loop) or
/// sent (closed loop) at `from_us`; retries keep counting from there.
pub fn latency_us(from_us: u64, answered_us: u64) -> u64 {
    answered_us.saturating_sub(from_us)
}

struct Flight {
    out: Outgoing,
    /// Intended (open loop) or actual (closed loop) time of the first attempt.
    first_sent_us: u64,
    lag_us: u64,
    attempt: u32,
    order: u64,
    first_order: Option<u64>,
}

/// The wait before retry `attempt`: 50 ms doubling to 3.2 s.
fn backoff(attempt: u32) -> Duration {
    Backoff::new(Duration::from_millis(50), Duration::from_millis(3_200)).nth(attempt)
}

struct Conn {
    writer: ClientWriter,
    replies: mpsc::Receiver<Option<Bytes>>,
}

async fn open(spec: &SenderSpec) -> Result<Conn, ConnectError> {
    // A fresh token on every connect, so a reconnect after an expiry close is let in.
    let auth = spec.credentials.as_ref().map(|c| c.sender_header(spec.id));
    let headers = crate::credentials::headers(auth.as_deref());
    let (mut reader, writer) =
        connect_split_with(&spec.url, spec.connect_timeout, &headers).await?;
    let (tx, replies) = mpsc::channel(spec.window.max(1) * 2);
    tokio::spawn(async move {
        loop {
            match reader.next().await {
                Ok(ClientEvent::Text(b)) => {
                    if tx.send(Some(b)).await.is_err() {
                        return;
                    }
                }
                Ok(ClientEvent::Binary(_)) => {}
                Ok(ClientEvent::Closed(..)) | Err(_) => {
                    let _ = tx.send(None).await;
                    return;
                }
            }
        }
    });
    Ok(Conn { writer, replies })
}

/// Sends everything `source` yields; returns one record per message.
pub async fn run(
    spec: SenderSpec,
    mut source: mpsc::Receiver<Outgoing>,
) -> Result<Vec<SendRecord>, ConnectError> {
    let mut conn = open(&spec).await?;
    let user = spec
        .credentials
        .as_ref()
        .map(|_| Credentials::user_of(spec.id));
    let mut records = Vec::new();
    let mut inflight: VecDeque<Flight> = VecDeque::new();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<Flight>();
    let mut waiting_retries = 0usize;
    let mut next_order = 0u64;
    let mut source_done = false;
    // Open loop: the next message from the source, held until its intended time.
    let mut pending: Option<(Outgoing, u64)> = None;
    let mut taken = 0u64;
    let schedule = spec.schedule;
    let due = |i: u64| match &schedule {
        Some(s) => spec.t0 + Duration::from_micros(s.intended_us(i)),
        None => Instant::now(),
    };
    let now_us = |t0: Instant| t0.elapsed().as_micros() as u64;
    let record = |records: &mut Vec<SendRecord>, f: &Flight, status: Status, t0: Instant| {
        spec.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        records.push(SendRecord {
            seq: f.out.seq,
            room: f.out.room,
            message_type: f.out.message_type,
            sent_us: f.first_sent_us,
            latency_us: latency_us(f.first_sent_us, now_us(t0)),
            lag_us: f.lag_us,
            status,
            retries: f.attempt,
            sender: spec.id,
            order: f.order,
            first_order: f.first_order.unwrap_or(f.order),
        })
    };
    loop {
        if source_done && pending.is_none() && inflight.is_empty() && waiting_retries == 0 {
            break;
        }
        let room_for_more = inflight.len() < spec.window;
        let next_due = pending.as_ref().map_or_else(Instant::now, |(_, i)| due(*i));
        let mut sent = false;
        tokio::select! {
            biased;
            reply = conn.replies.recv() => match reply.flatten() {
                Some(bytes) => {
                    let Some(flight) = inflight.pop_front() else { continue };
                    match serde_json::from_slice::<Reply>(&bytes) {
                        Ok(Reply::Ok(_)) => record(&mut records, &flight, Status::Ok, spec.t0),
                        Ok(Reply::Error(e)) if retryable(e.error_code) && flight.attempt < spec.max_retries => {
                            waiting_retries += 1;
                            let tx = retry_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(backoff(flight.attempt)).await;
                                let _ = tx.send(Flight { attempt: flight.attempt + 1, ..flight });
                            });
                        }
                        Ok(Reply::Error(e)) => record(&mut records, &flight, Status::Error(e.error_code), spec.t0),
                        Err(_) => record(&mut records, &flight, Status::Error(ErrorCode::InvalidJson), spec.t0),
                    }
                }
                None => {
                    // Lost connection: reconnect and resend what was unanswered, in order.
                    let mut attempt = 0;
                    conn = loop {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                        match open(&spec).await {
                            Ok(c) => break c,
                            Err(e) if attempt >= spec.max_retries => {
                                tracing::warn!(url = %spec.url, error = %e, "giving up on the connection");
                                for f in inflight.drain(..) {
                                    record(&mut records, &f, Status::Lost, spec.t0);
                                }
                                let mut unsent: Vec<(Outgoing, u64)> = pending.take().into_iter().collect();
                                while let Some(out) = source.recv().await {
                                    unsent.push((out, taken));
                                    taken += 1;
                                }
                                for (out, i) in unsent {
                                    let at = schedule.map_or_else(|| now_us(spec.t0), |s| s.intended_us(i));
                                    let f = Flight { out, first_sent_us: at, lag_us: 0, attempt: 0, order: 0, first_order: None };
                                    record(&mut records, &f, Status::Lost, spec.t0);
                                }
                                return Ok(records);
                            }
                            Err(_) => continue,
                        }
                    };
                    let resend: Vec<Flight> = inflight.drain(..).collect();
                    for mut f in resend {
                        f.attempt += 1;
                        if f.attempt > spec.max_retries {
                            record(&mut records, &f, Status::Lost, spec.t0);
                            continue;
                        }
                        send(&mut conn.writer, &mut inflight, f, &mut next_order, user).await;
                        sent = true;
                    }
                }
            },
            f = retry_rx.recv(), if waiting_retries > 0 && room_for_more => {
                waiting_retries -= 1;
                if let Some(f) = f {
                    send(&mut conn.writer, &mut inflight, f, &mut next_order, user).await;
                    sent = true;
                }
            }
            // Open loop: a full window holds the message back, but its intended time stands.
            _ = tokio::time::sleep_until(next_due.into()), if room_for_more && pending.is_some() => {
                if let (Some((out, i)), Some(s)) = (pending.take(), schedule) {
                    let intended = s.intended_us(i);
                    let lag_us = now_us(spec.t0).saturating_sub(intended);
                    let f = Flight { out, first_sent_us: intended, lag_us, attempt: 0, order: 0, first_order: None };
                    send(&mut conn.writer, &mut inflight, f, &mut next_order, user).await;
                    sent = true;
                }
            }
            out = source.recv(), if !source_done && pending.is_none() && (room_for_more || schedule.is_some()) => match out {
                Some(out) if schedule.is_some() => {
                    pending = Some((out, taken));
                    taken += 1;
                }
                Some(out) => {
                    let f = Flight { out, first_sent_us: now_us(spec.t0), lag_us: 0, attempt: 0, order: 0, first_order: None };
                    send(&mut conn.writer, &mut inflight, f, &mut next_order, user).await;
                    sent = true;
                }
                None => source_done = true,
            },
        }
        // Flush once nothing more is ready to go (open loop: nothing more due), so a backlog or
        // catching up goes out in batches.
        let more_ready = !source.is_empty() && (schedule.is_none() || due(taken) <= Instant::now());
        if sent && (!more_ready || inflight.len() >= spec.window) {
            // A failed flush shows up as a closed reply channel and is handled there.
            let _ = conn.writer.flush().await;
        }
    }
    Ok(records)
}

/// Errors a client tries again after a pause: the queue service failing, or its own rate.
fn retryable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::QueueError | ErrorCode::RateLimited)
}

async fn send(
    writer: &mut ClientWriter,
    inflight: &mut VecDeque<Flight>,
    mut f: Flight,
    next_order: &mut u64,
    user: Option<u32>,
) {
    if let Some(user) = user {
        f.out.frame = as_user(&f.out.frame, user);
    }
    f.order = *next_order;
    f.first_order.get_or_insert(*next_order);
    *next_order += 1;
    let _ = writer.text(f.out.frame.as_bytes()).await;
    inflight.push_back(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Recorder;

    #[test]
    fn intended_times_come_from_the_index_and_interleave_the_senders() {
        let s = |index| Schedule {
            start_us: 5_000,
            rate: 4_000.0,
            senders: 4,
            index,
        };
        assert_eq!(s(0).per_sender_rate(), 1_000.0);
        assert_eq!(s(0).intended_us(0), 5_000);
        assert_eq!(s(1).intended_us(0), 5_250);
        assert_eq!(s(3).intended_us(2), 5_000 + 11 * 250);
        // No drift: message a million is exactly a million periods later.
        assert_eq!(s(0).intended_us(1_000_000), 5_000 + 1_000_000 * 1_000);
        // Together the senders offer one message every 1/rate, evenly.
        let mut all: Vec<u64> = (0..4)
            .flat_map(|k| (0..100).map(move |i| s(k).intended_us(i)))
            .collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] == 250), "{all:?}");
    }

    /// A model of one open-loop sender with a window against a server that answers in order,
    /// 1 ms after a message arrives, except that nothing is answered during a stall. Returns, per
    /// message, (intended, actually sent, answered), µs.
    fn simulate(
        schedule: Schedule,
        n: usize,
        window: usize,
        stall: (u64, u64),
    ) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = Vec::with_capacity(n);
        for i in 0..n {
            let intended = schedule.intended_us(i as u64);
            // Held back while the window is full: until the answer `window` messages earlier.
            let slot_free = if i >= window { out[i - window].2 } else { 0 };
            let sent = intended.max(slot_free);
            let mut answered = sent + 1_000;
            if answered >= stall.0 && answered < stall.1 {
                answered = stall.1;
            }
            if let Some(prev) = out.last() {
                answered = answered.max(prev.2);
            }
            out.push((intended, sent, answered));
        }
        out
    }

    #[test]
    fn a_stall_is_charged_to_every_message_scheduled_during_it() {
        let schedule = Schedule {
            start_us: 0,
            rate: 1_000.0,
            senders: 1,
            index: 0,
        };
        let (stall_from, stall_to) = (100_000, 300_000);
        let sim = simulate(schedule, 2_000, 8, (stall_from, stall_to));
        let (mut corrected, mut from_send) = (Recorder::default(), Recorder::default());
        for &(intended, sent, answered) in &sim {
            corrected.record_us(latency_us(intended, answered));
            from_send.record_us(latency_us(sent, answered));
            if (stall_from..stall_to).contains(&intended) {
                // Everything due during the stall waits out the rest of it, even the messages
                // the full window kept from being sent until it ended.
                assert!(latency_us(intended, answered) >= stall_to - intended);
            }
        }
        let (c, u) = (corrected.summary(), from_send.summary());
        // 10% of the schedule fell in the 200 ms stall: the corrected p95 and p99 show it ...
        assert!(c.p95 >= 50.0 && c.p99 >= 150.0, "{c:?}");
        // ... while timing from the actual send hides it behind the window (coordinated omission).
        assert!(u.p99 < 5.0 && u.max >= 199.0, "{u:?}");
    }
}
