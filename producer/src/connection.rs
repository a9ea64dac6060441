//! One client WebSocket: a reader that validates messages and publishes them (through the
//! room's batcher, or itself when the queue is in memory), and a writer that answers them in
//! the order they were sent.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use chatflow::protocol::{ConversationMessage, ErrorCode};
use chatflow::rooms::RoomId;
use chatflow::ws::{self, Check, FrameSink, Inbound, Liveness, Obligation, ReadError};
use fastwebsockets::OpCode;
use tokio::io::AsyncWrite;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::batcher::{Outcome, Pending};
use crate::ingest::{self, Reply};
use crate::server::Shared;

/// What the writer sends, in order.
enum Out {
    /// An answer, holding its place under the producer-wide bound until it is written.
    Reply(Reply, OwnedSemaphorePermit),
    Owe(Obligation),
    Close(u16, String),
}

/// The room a socket was opened for: served here, or the reason it is not.
#[derive(Clone)]
pub enum Target {
    /// A room of the configured range.
    Room(RoomId),
    /// Every message on this socket is answered INVALID_ROOM with this reason.
    Invalid(String),
}

/// Serves one upgraded connection until either side closes or the producer shuts down.
pub async fn serve(
    ws: fastwebsockets::WebSocket<ws::Stream>,
    shared: Arc<Shared>,
    target: Target,
    client_ip: IpAddr,
) {
    let cfg = &shared.config;
    let (mut reader, sink) = ws::split_server(ws, cfg.max_frame_bytes as usize);
    let (tx, rx) = mpsc::channel::<Out>(cfg.max_unacked as usize);
    let stop_reading = shared.shutdown.child_token();
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let liveness = Liveness::new(idle);
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        WriterClock {
            liveness: liveness.clone(),
            idle,
        },
        stop_reading.clone(),
    ));

    let client_ip = client_ip.to_string();
    // The echo of a close is held back and put behind the answers gathered before it: nothing
    // may follow a close frame on the wire. A pong goes out at once, wherever it lands.
    let owed_close = Mutex::new(None);
    let mut owe = |ob: Obligation| {
        let tx = tx.clone();
        let now = match ob {
            Obligation::Close(_) => {
                *owed_close.lock().unwrap_or_else(|e| e.into_inner()) = Some(ob);
                None
            }
            Obligation::Pong(_) => Some(ob),
        };
        async move {
            if let Some(ob) = now {
                let _ = tx.send(Out::Owe(ob)).await;
            }
        }
    };
    // With a queue in memory, what the reader takes in one go is published in one call; the
    // answers wait here until then, in order.
    let mut gathered = Gathered::default();
    loop {
        let read = reader.next(&mut owe);
        tokio::pin!(read);
        // Polled once before anything else: a frame already received is taken at once, and
        // only a read that would wait publishes what was gathered. The read is never dropped
        // half done, as the WebSocket reader loses its place if it is.
        let ready = if stop_reading.is_cancelled() {
            None
        } else {
            match futures::poll!(read.as_mut()) {
                Poll::Ready(next) => Some(next),
                Poll::Pending => {
                    if !gathered.flush(&shared, &target, &tx).await {
                        break;
                    }
                    tokio::select! {
                        biased;
                        _ = stop_reading.cancelled() => None,
                        next = &mut read => Some(next),
                    }
                }
            }
        };
        let Some(next) = ready else {
            if shared.shutdown.is_cancelled() && gathered.flush(&shared, &target, &tx).await {
                let _ = tx
                    .send(Out::Close(
                        ws::CLOSE_GOING_AWAY,
                        "server shutting down".into(),
                    ))
                    .await;
            }
            break;
        };
        liveness.seen();
        if let Some(close) = owed_close.lock().unwrap_or_else(|e| e.into_inner()).take() {
            gathered.outs.push(Out::Owe(close));
        }
        let out = match next {
            Ok(Inbound::Text(frame)) if shared.in_place => {
                let Some(place) =
                    wait_for_place(&shared, &stop_reading, &mut gathered, &target, &tx).await
                else {
                    continue;
                };
                gathered.take(&shared, &target, &frame, &client_ip, place);
                if gathered.is_full() && !gathered.flush(&shared, &target, &tx).await {
                    break;
                }
                continue;
            }
            Ok(Inbound::Text(frame)) => {
                let Some(place) =
                    wait_for_place(&shared, &stop_reading, &mut gathered, &target, &tx).await
                else {
                    continue;
                };
                Out::Reply(accept(&shared, &target, &frame, &client_ip).await, place)
            }
            Ok(Inbound::Binary(_)) => {
                let Some(place) =
                    wait_for_place(&shared, &stop_reading, &mut gathered, &target, &tx).await
                else {
                    continue;
                };
                shared.metrics.error(ErrorCode::InvalidJson);
                Out::Reply(
                    Reply::Now(ingest::error_reply(
                        ErrorCode::InvalidJson,
                        "binary frames are not accepted: send JSON as a text frame",
                        None,
                    )),
                    place,
                )
            }
            Ok(Inbound::Pong) => continue,
            Ok(Inbound::Close) | Err(ReadError::Closed) => break,
            Err(ReadError::TooLarge(limit)) => Out::Close(
                ws::CLOSE_TOO_BIG,
                format!("message larger than {limit} bytes"),
            ),
            Err(ReadError::Protocol(why)) => Out::Close(ws::CLOSE_PROTOCOL, why),
        };
        let closing = matches!(out, Out::Close(..));
        if !gathered.flush(&shared, &target, &tx).await {
            break;
        }
        // A full channel means max_unacked replies are outstanding: reading waits here.
        if tx.send(out).await.is_err() || closing {
            break;
        }
    }
    // What was read before the loop ended is still published and answered.
    gathered.flush(&shared, &target, &tx).await;
    drop(tx);
    let _ = writer.await;
}

/// A place under the producer-wide bound of unanswered messages; None when reading stops first
/// (the loop then sees the stop and leaves).
async fn wait_for_place(
    shared: &Shared,
    stop_reading: &CancellationToken,
    gathered: &mut Gathered,
    target: &Target,
    tx: &mpsc::Sender<Out>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(place) = shared.unanswered.clone().try_acquire_owned() {
        return Some(place);
    }
    // The messages gathered hold places that come back only once they are answered: waiting
    // with them unpublished could wait forever.
    if !gathered.flush(shared, target, tx).await {
        return None;
    }
    tokio::select! {
        biased;
        _ = stop_reading.cancelled() => None,
        p = shared.unanswered.clone().acquire_owned() => Some(p.expect("never closed")),
    }
}

/// Most messages one publish in place gathers: a bound keeps the first one's ack from waiting
/// on a long burst.
const GATHER_MAX: usize = 64;

/// Messages read since the last publish in place, and the answers and close echo owed since,
/// in order.
#[derive(Default)]
struct Gathered {
    outs: Vec<Out>,
    pending: Vec<Pending>,
}

impl Gathered {
    /// Validates one frame and keeps it for the next publish, its answer behind the others.
    fn take(
        &mut self,
        shared: &Shared,
        target: &Target,
        frame: &Bytes,
        client_ip: &str,
        place: OwnedSemaphorePermit,
    ) {
        let reply = match validate(shared, target, frame, client_ip) {
            Ok((_, stamped)) => {
                let (reply, outcome) = oneshot::channel();
                self.pending.push(Pending {
                    entry: stamped.entry,
                    reply,
                });
                Reply::Later {
                    ok: stamped.ok,
                    client_message_id: stamped.client_message_id,
                    outcome,
                }
            }
            Err(now) => Reply::Now(now),
        };
        self.outs.push(Out::Reply(reply, place));
    }

    fn is_full(&self) -> bool {
        self.outs.len() >= GATHER_MAX
    }

    /// Publishes the messages gathered in one call and hands their answers to the writer;
    /// false when the writer is gone.
    async fn flush(&mut self, shared: &Shared, target: &Target, tx: &mpsc::Sender<Out>) -> bool {
        if let (Target::Room(room), false) = (target, self.pending.is_empty()) {
            let pending = std::mem::take(&mut self.pending);
            crate::batcher::publish_in_place(*room, &shared.batch, pending).await;
        }
        for out in self.outs.drain(..) {
            if tx.send(out).await.is_err() {
                return false;
            }
        }
        true
    }
}

async fn accept(shared: &Shared, target: &Target, frame: &Bytes, client_ip: &str) -> Reply {
    let (room, stamped) = match validate(shared, target, frame, client_ip) {
        Ok(ok) => ok,
        Err(now) => return Reply::Now(now),
    };
    let m = &shared.metrics;
    let (reply, outcome) = oneshot::channel();
    let pending = Pending {
        entry: stamped.entry,
        reply,
    };
    if shared.batcher(room).send(pending).await.is_err() {
        m.error(ErrorCode::QueueError);
        return Reply::Now(ingest::error_reply(
            ErrorCode::QueueError,
            "the producer is shutting down",
            stamped.client_message_id.as_deref(),
        ));
    }
    Reply::Later {
        ok: stamped.ok,
        client_message_id: stamped.client_message_id,
        outcome,
    }
}

/// A frame validated and stamped for its room, or the error reply to send at once.
fn validate(
    shared: &Shared,
    target: &Target,
    frame: &Bytes,
    client_ip: &str,
) -> Result<(RoomId, ingest::Stamped), Bytes> {
    let m = &shared.metrics;
    m.messages_received.inc();
    let parsed = ConversationMessage::parse(frame);
    let room = match target {
        Target::Room(room) => *room,
        Target::Invalid(reason) => {
            m.error(ErrorCode::InvalidRoom);
            let cmid = match &parsed {
                Ok(msg) => msg.client_message_id.clone(),
                Err(r) => r.client_message_id.clone(),
            };
            return Err(ingest::error_reply(
                ErrorCode::InvalidRoom,
                reason,
                cmid.as_deref(),
            ));
        }
    };
    let msg = match parsed {
        Ok(msg) => msg,
        Err(rejection) => {
            m.error(rejection.code);
            return Err(ingest::rejection_reply(&rejection));
        }
    };
    m.messages_validated.inc();
    Ok((
        room,
        ingest::stamp(msg, room, &shared.config.server_id, client_ip),
    ))
}

struct WriterClock {
    liveness: Liveness,
    idle: Duration,
}

/// Writes replies in order, batching what is ready into one write; pings idle clients and
/// closes those that stay silent.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut sink: FrameSink<W>,
    mut rx: mpsc::Receiver<Out>,
    mut clock: WriterClock,
    stop_reading: CancellationToken,
) {
    let mut ticker = tokio::time::interval(clock.idle);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut closed = false;
    loop {
        let out = tokio::select! {
            out = rx.recv() => out,
            _ = ticker.tick() => {
                match clock.liveness.check() {
                    Check::Fine => {}
                    Check::Ping => sink.frame(OpCode::Ping, b"chatflow"),
                    Check::Gone => {
                        sink.close(ws::CLOSE_NORMAL, "idle timeout");
                        closed = true;
                        stop_reading.cancel();
                    }
                }
                if sink.flush_within(clock.idle).await.is_err() {
                    stop_reading.cancel();
                    return;
                }
                continue;
            }
        };
        let Some(out) = out else { break };
        match out {
            Out::Reply(Reply::Now(bytes), _place) => sink.text(&bytes),
            Out::Reply(
                Reply::Later {
                    ok,
                    client_message_id,
                    mut outcome,
                },
                _place,
            ) => match outcome.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    // Replies already written must not wait for this message's batch: without
                    // this flush an ack sits in the buffer until the writer catches up with the
                    // reader, which under steady load can be many batches later.
                    if sink.queued() > 0 && sink.flush_within(clock.idle).await.is_err() {
                        stop_reading.cancel();
                        return;
                    }
                    answer(&mut sink, &ok, client_message_id.as_deref(), outcome.await);
                }
                ready => answer(
                    &mut sink,
                    &ok,
                    client_message_id.as_deref(),
                    ready.map_err(|_| ()),
                ),
            },
            Out::Owe(Obligation::Pong(p)) => sink.frame(OpCode::Pong, &p),
            Out::Owe(Obligation::Close(p)) if !closed => {
                sink.frame(OpCode::Close, &p);
                closed = true;
            }
            Out::Owe(Obligation::Close(_)) => {}
            Out::Close(code, reason) if !closed => {
                sink.close(code, &reason);
                closed = true;
            }
            Out::Close(..) => {}
        }
        if (rx.is_empty() || sink.queued() > 64 * 1024)
            && sink.flush_within(clock.idle).await.is_err()
        {
            // The peer is gone: stop reading too; pending outcomes are still awaited by nobody,
            // which is fine because the queue result does not depend on the reply.
            stop_reading.cancel();
            return;
        }
    }
    let _ = sink.shutdown().await;
}

/// Writes the answer to a published message: its OK reply, or QUEUE_ERROR with the reason.
fn answer<W: AsyncWrite + Unpin, E>(
    sink: &mut FrameSink<W>,
    ok: &Bytes,
    client_message_id: Option<&str>,
    outcome: Result<Outcome, E>,
) {
    match outcome {
        Ok(Ok(())) => sink.text(ok),
        Ok(Err(reason)) => sink.text(&ingest::error_reply(
            ErrorCode::QueueError,
            &reason,
            client_message_id,
        )),
        Err(_) => sink.text(&ingest::error_reply(
            ErrorCode::QueueError,
            "the message was dropped before it was published",
            client_message_id,
        )),
    }
}
