//! A connection whose messages go through their room's batcher: a reader that validates them
//! and hands them over, and a writer that answers them in the order they were sent, each once
//! its batch is published.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatflow::auth::Deadline;
use chatflow::protocol::ErrorCode;
use chatflow::ws::{self, Check, FrameSink, Inbound, Liveness, Obligation, ReadError};
use fastwebsockets::OpCode;
use tokio::io::AsyncWrite;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Peer, Target, answer, validate};
use crate::batcher::Pending;
use crate::ingest::{self, Reply};
use crate::server::Shared;
use chatflow_fanout::presence::{CLOSE_DISCONNECTED, DISCONNECTED_REASON};

/// What the writer sends, in order.
enum Out {
    /// An answer, holding its place under the producer-wide bound until it is written.
    Reply(Reply, OwnedSemaphorePermit),
    Owe(Obligation),
    Close(u16, String),
}

/// Serves one upgraded connection until either side closes, its deadline comes, or the
/// producer shuts down.
pub(super) async fn serve(
    ws: fastwebsockets::WebSocket<ws::Stream>,
    shared: Arc<Shared>,
    target: Target,
    peer: Peer,
    stop_reading: CancellationToken,
) {
    let cfg = &shared.config;
    let (mut reader, sink) = ws::split_server(ws, cfg.max_frame_bytes as usize);
    let (tx, rx) = mpsc::channel::<Out>(cfg.max_unacked as usize);
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

    let deadline = Deadline::sleep(peer.pass.deadline());
    tokio::pin!(deadline);
    let mut owe = |ob: Obligation| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Out::Owe(ob)).await;
        }
    };
    loop {
        let next = tokio::select! {
            biased;
            _ = stop_reading.cancelled() => None,
            // Before the read: a client that keeps frames coming must not hold its deadline off.
            _ = &mut deadline => {
                if let Some(d) = peer.pass.deadline() {
                    // Answers to what was read go out first: the writer sends in order.
                    let _ = tx.send(Out::Close(d.code, d.reason.into())).await;
                }
                break;
            }
            next = reader.next(&mut owe) => Some(next),
        };
        let Some(next) = next else {
            if peer.is_disconnected() {
                let _ = tx
                    .send(Out::Close(CLOSE_DISCONNECTED, DISCONNECTED_REASON.into()))
                    .await;
            } else if shared.life.is_stopping() {
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
        let out = match out_for(next, &shared, &target, &peer, &stop_reading).await {
            ControlFlow::Continue(Some(out)) => out,
            ControlFlow::Continue(None) => continue,
            ControlFlow::Break(()) => break,
        };
        let closing = matches!(out, Out::Close(..));
        // A full channel means max_unacked replies are outstanding: reading waits here.
        if tx.send(out).await.is_err() || closing {
            break;
        }
        if let Some(wait) = peer.take_pause() {
            // Over its rate: nothing more is read until the limit takes a message again.
            tokio::select! {
                _ = stop_reading.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// What the writer is handed for what was read: nothing for a pong or for a frame still
/// waiting for its places when reading stopped; a break when the client closed.
async fn out_for(
    next: Result<Inbound, ReadError>,
    shared: &Shared,
    target: &Target,
    peer: &Peer,
    stop_reading: &CancellationToken,
) -> ControlFlow<(), Option<Out>> {
    ControlFlow::Continue(match next {
        Ok(Inbound::Text(frame)) => match wait_for_place(shared, stop_reading, frame.len()).await {
            Some(place) => Some(Out::Reply(
                accept(shared, target, &frame, peer).await,
                place,
            )),
            None => None,
        },
        Ok(Inbound::Binary(frame)) => wait_for_place(shared, stop_reading, frame.len())
            .await
            .map(|place| Out::Reply(Reply::Now(super::binary_refused(shared)), place)),
        Ok(Inbound::Pong) => None,
        Ok(Inbound::Close) | Err(ReadError::Closed) => return ControlFlow::Break(()),
        Err(ReadError::TooLarge(limit)) => Some(Out::Close(
            ws::CLOSE_TOO_BIG,
            format!("message larger than {limit} bytes"),
        )),
        Err(ReadError::Protocol(why)) => Some(Out::Close(ws::CLOSE_PROTOCOL, why)),
    })
}

/// The places of a frame of `frame_len` bytes under the producer-wide bound of unanswered
/// messages; None when reading stops first (the loop then sees the stop and leaves).
async fn wait_for_place(
    shared: &Shared,
    stop_reading: &CancellationToken,
    frame_len: usize,
) -> Option<OwnedSemaphorePermit> {
    let n = super::places_for(shared, frame_len);
    if let Ok(place) = shared.unanswered.clone().try_acquire_many_owned(n) {
        return Some(place);
    }
    tokio::select! {
        biased;
        _ = stop_reading.cancelled() => None,
        p = shared.unanswered.clone().acquire_many_owned(n) => Some(p.expect("never closed")),
    }
}

async fn accept(shared: &Shared, target: &Target, frame: &Bytes, peer: &Peer) -> Reply {
    let (room, stamped) = match validate(shared, target, frame, peer) {
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
            _ = ticker.tick(), if !closed => {
                match clock.liveness.check() {
                    Check::Fine => {}
                    Check::Ping => sink.frame(OpCode::Ping, b"chatflow"),
                    Check::Gone => {
                        sink.close(ws::CLOSE_IDLE.0, ws::CLOSE_IDLE.1);
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
        if closed {
            // Nothing may follow a close frame; what is left is dropped, its places freed.
            continue;
        }
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
            Out::Owe(Obligation::Close(p)) => {
                sink.frame(OpCode::Close, &p);
                closed = true;
            }
            Out::Close(code, reason) => {
                sink.close(code, &reason);
                closed = true;
            }
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
