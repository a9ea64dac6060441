//! A sender connection: pipelines messages up to a window, matches in-order replies, retries
//! QUEUE_ERROR with backoff, and reconnects (resending what was unanswered) when the socket drops.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatflow::protocol::{ErrorCode, MessageType, Reply};
use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientWriter, ConnectError, connect_split};
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
    /// First send, µs since the run's start.
    pub sent_us: u64,
    /// From first send to the final answer, µs.
    pub latency_us: u64,
    /// Outcome.
    pub status: Status,
    /// Retries spent.
    pub retries: u32,
    /// Sender connection id.
    pub sender: u32,
    /// Position of the answered attempt in this sender's send order.
    pub order: u64,
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
}

struct Flight {
    out: Outgoing,
    first_sent_us: u64,
    attempt: u32,
    order: u64,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.min(6))
}

struct Conn {
    writer: ClientWriter,
    replies: mpsc::Receiver<Option<Bytes>>,
}

async fn open(spec: &SenderSpec) -> Result<Conn, ConnectError> {
    let (mut reader, writer) = connect_split(&spec.url, spec.connect_timeout).await?;
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
    let mut records = Vec::new();
    let mut inflight: VecDeque<Flight> = VecDeque::new();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<Flight>();
    let mut waiting_retries = 0usize;
    let mut next_order = 0u64;
    let mut source_done = false;
    let now_us = |t0: Instant| t0.elapsed().as_micros() as u64;
    let record = |records: &mut Vec<SendRecord>, f: &Flight, status: Status, t0: Instant| {
        spec.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        records.push(SendRecord {
            seq: f.out.seq,
            room: f.out.room,
            message_type: f.out.message_type,
            sent_us: f.first_sent_us,
            latency_us: now_us(t0).saturating_sub(f.first_sent_us),
            status,
            retries: f.attempt,
            sender: spec.id,
            order: f.order,
        })
    };
    loop {
        if source_done && inflight.is_empty() && waiting_retries == 0 {
            break;
        }
        let room_for_more = inflight.len() < spec.window;
        let mut sent = false;
        tokio::select! {
            biased;
            reply = conn.replies.recv() => match reply.flatten() {
                Some(bytes) => {
                    let Some(flight) = inflight.pop_front() else { continue };
                    match serde_json::from_slice::<Reply>(&bytes) {
                        Ok(Reply::Ok(_)) => record(&mut records, &flight, Status::Ok, spec.t0),
                        Ok(Reply::Error(e)) if e.error_code == ErrorCode::QueueError && flight.attempt < spec.max_retries => {
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
                                while let Some(out) = source.recv().await {
                                    let f = Flight { out, first_sent_us: now_us(spec.t0), attempt: 0, order: 0 };
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
                        send(&mut conn.writer, &mut inflight, f, &mut next_order).await;
                        sent = true;
                    }
                }
            },
            f = retry_rx.recv(), if waiting_retries > 0 && room_for_more => {
                waiting_retries -= 1;
                if let Some(f) = f {
                    send(&mut conn.writer, &mut inflight, f, &mut next_order).await;
                    sent = true;
                }
            }
            out = source.recv(), if !source_done && room_for_more => match out {
                Some(out) => {
                    let f = Flight { out, first_sent_us: now_us(spec.t0), attempt: 0, order: 0 };
                    send(&mut conn.writer, &mut inflight, f, &mut next_order).await;
                    sent = true;
                }
                None => source_done = true,
            },
        }
        if sent && (source.is_empty() || inflight.len() >= spec.window) {
            // A failed flush shows up as a closed reply channel and is handled there.
            let _ = conn.writer.flush().await;
        }
    }
    Ok(records)
}

async fn send(
    writer: &mut ClientWriter,
    inflight: &mut VecDeque<Flight>,
    mut f: Flight,
    next_order: &mut u64,
) {
    f.order = *next_order;
    *next_order += 1;
    let _ = writer.text(f.out.frame.as_bytes()).await;
    inflight.push_back(f);
}
