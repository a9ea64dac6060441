//! A connection on a queue in memory, served by one task: it takes every frame already
//! received, publishes the messages among them in one call, and writes the answers itself
//! before it waits for more. Nothing is handed to another task, so an ack leaves in the same
//! turn that read its message.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use chatflow::auth::Deadline;
use chatflow::ws::{self, Check, FrameSink, Inbound, Liveness, Obligation, ReadError};
use fastwebsockets::OpCode;
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Peer, Target, answer, binary_refused, places_for, validate};
use crate::batcher::{self, Pending};
use crate::ingest::Reply;
use crate::server::Shared;

/// Most messages taken before they are published and answered: a bound keeps the first one's
/// ack from waiting on a long burst.
const GATHER_MAX: usize = 64;

/// What goes back for something read, in the order it was read.
enum Answer {
    Reply(Reply),
    Owe(Obligation),
    Close(u16, String),
}

/// Why reading ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed, broke the protocol or went quiet; what it is owed is still written.
    Closed,
    /// The producer is shutting down: the client is told so after its answers.
    Shutdown,
    /// The client took nothing written to it for the idle timeout.
    Gone,
    /// The token expired or the connection reached its age limit: closed after its answers.
    Deadline,
}

/// Serves one upgraded connection until either side closes, its deadline comes, or the
/// producer shuts down.
pub(super) async fn serve(
    ws: fastwebsockets::WebSocket<ws::Stream>,
    shared: Arc<Shared>,
    target: Target,
    peer: Peer,
) {
    let cfg = &shared.config;
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let (mut reader, mut sink) = ws::split_server(ws, cfg.max_frame_bytes as usize);
    let mut taken = Taken::new(&shared, &target, &peer);
    let deadline = Deadline::sleep(peer.pass.deadline());
    tokio::pin!(deadline);
    // Pongs and the echo of a close, owed while a read was under way; they go out behind the
    // answers to what was read before them.
    let owed = Mutex::new(Vec::new());
    let mut owe = |ob: Obligation| {
        owed.lock().unwrap_or_else(|e| e.into_inner()).push(ob);
        std::future::ready(())
    };
    // Its own token, so waiting on it registers with no lock shared by other connections.
    let stop = shared.life.stopping().child_token();
    let mut liveness = Liveness::new(idle);
    let mut ticker = tokio::time::interval_at(Instant::now() + idle, idle);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let end = 'reading: loop {
        let read = reader.next(&mut owe);
        tokio::pin!(read);
        // Polled once before anything else: a frame already received is taken at once, and only
        // a read that would wait publishes and answers what was taken. The read is never
        // dropped half done, as the WebSocket reader loses its place if it is.
        let next = match futures::poll!(read.as_mut()) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                taken.answer_into(&mut sink).await;
                if sink.flush_within(idle).await.is_err() {
                    break 'reading End::Gone;
                }
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break 'reading End::Shutdown,
                        next = &mut read => break next,
                        _ = &mut deadline => break 'reading End::Deadline,
                        _ = ticker.tick() => match liveness.check() {
                            Check::Fine => {}
                            Check::Ping => {
                                sink.frame(OpCode::Ping, b"chatflow");
                                if sink.flush_within(idle).await.is_err() {
                                    break 'reading End::Gone;
                                }
                            }
                            Check::Gone => {
                                let (code, why) = ws::CLOSE_IDLE;
                                let close = Answer::Close(code, why.into());
                                taken.answers.push(close);
                                break 'reading End::Closed;
                            }
                        },
                    }
                }
            }
        };
        liveness.seen();
        let obligations = std::mem::take(&mut *owed.lock().unwrap_or_else(|e| e.into_inner()));
        taken
            .answers
            .extend(obligations.into_iter().map(Answer::Owe));
        match next {
            Ok(Inbound::Text(frame)) => {
                if let Err(end) = taken.place(&mut sink, &stop, idle, frame.len()).await {
                    break end;
                }
                taken.take(&frame);
                if let Some(wait) = peer.take_pause() {
                    // Over its rate: the refusal goes out now, and nothing more is read until
                    // the limit takes a message again.
                    taken.answer_into(&mut sink).await;
                    if sink.flush_within(idle).await.is_err() {
                        break End::Gone;
                    }
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break 'reading End::Shutdown,
                        _ = &mut deadline => break 'reading End::Deadline,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            Ok(Inbound::Binary(frame)) => {
                if let Err(end) = taken.place(&mut sink, &stop, idle, frame.len()).await {
                    break end;
                }
                let refused = binary_refused(&shared);
                taken.answers.push(Answer::Reply(Reply::Now(refused)));
            }
            Ok(Inbound::Pong) => {}
            Ok(Inbound::Close) | Err(ReadError::Closed) => break End::Closed,
            Err(ReadError::TooLarge(limit)) => {
                let why = format!("message larger than {limit} bytes");
                taken.answers.push(Answer::Close(ws::CLOSE_TOO_BIG, why));
                break End::Closed;
            }
            Err(ReadError::Protocol(why)) => {
                taken.answers.push(Answer::Close(ws::CLOSE_PROTOCOL, why));
                break End::Closed;
            }
        }
        // A client that never pauses is answered every GATHER_MAX frames all the same.
        if taken.answers.len() >= GATHER_MAX {
            taken.answer_into(&mut sink).await;
            if sink.flush_within(idle).await.is_err() {
                break End::Gone;
            }
            if stop.is_cancelled() {
                break End::Shutdown;
            }
            // The timer is polled only while a read waits: a client that never pauses meets
            // its deadline here.
            if peer.pass.deadline().is_some_and(|d| Instant::now() >= d.at) {
                break End::Deadline;
            }
        }
    };

    // What was read before reading ended is still published and answered.
    taken.answer_into(&mut sink).await;
    if end == End::Gone {
        return;
    }
    let close = match end {
        End::Shutdown => Some((ws::CLOSE_GOING_AWAY, "server shutting down")),
        End::Deadline => peer.pass.deadline().map(|d| (d.code, d.reason)),
        End::Closed | End::Gone => None,
    };
    if let Some((code, reason)) = close {
        taken.answers.push(Answer::Close(code, reason.into()));
        taken.answer_into(&mut sink).await;
    }
    let _ = tokio::time::timeout(idle, sink.shutdown()).await;
}

/// What was read and not yet answered: the messages to publish and, in order, what goes back
/// for everything read, with the places it holds under the producer-wide bound.
struct Taken<'a> {
    shared: &'a Shared,
    target: &'a Target,
    peer: &'a Peer,
    pending: Vec<Pending>,
    answers: Vec<Answer>,
    places: usize,
    /// A close frame went out: nothing may follow it.
    closed: bool,
}

// Places are given back with their answers; a task that ends any other way (a panic, a dropped
// future) must not keep them from every other connection.
impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.places > 0 {
            self.shared.unanswered.add_permits(self.places);
        }
    }
}

impl<'a> Taken<'a> {
    fn new(shared: &'a Shared, target: &'a Target, peer: &'a Peer) -> Self {
        Taken {
            shared,
            target,
            peer,
            pending: Vec::new(),
            answers: Vec::new(),
            places: 0,
            closed: false,
        }
    }

    /// Takes the places of one more frame, first answering what was taken when the bound is
    /// reached (those hold places that come back only once answered).
    async fn place<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut FrameSink<W>,
        stop: &tokio_util::sync::CancellationToken,
        idle: Duration,
        frame_len: usize,
    ) -> Result<(), End> {
        let n = places_for(self.shared, frame_len);
        if let Ok(place) = self.shared.unanswered.try_acquire_many(n) {
            place.forget();
            self.places += n as usize;
            return Ok(());
        }
        self.answer_into(sink).await;
        sink.flush_within(idle).await.map_err(|_| End::Gone)?;
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(End::Shutdown),
            place = self.shared.unanswered.acquire_many(n) => {
                place.expect("never closed").forget();
                self.places += n as usize;
                Ok(())
            }
        }
    }

    /// Validates one frame and keeps it for the next publish, its answer behind the others.
    fn take(&mut self, frame: &Bytes) {
        let reply = match validate(self.shared, self.target, frame, self.peer) {
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
        self.answers.push(Answer::Reply(reply));
    }

    /// Publishes the messages taken in one call and queues every answer owed, in order, on
    /// `sink`; their places go back.
    async fn answer_into<W: AsyncWrite + Unpin>(&mut self, sink: &mut FrameSink<W>) {
        if let (Target::Room(room), false) = (self.target, self.pending.is_empty()) {
            batcher::publish_in_place(*room, &self.shared.batch, self.pending.drain(..)).await;
        }
        for a in self.answers.drain(..) {
            if self.closed {
                break;
            }
            match a {
                Answer::Reply(Reply::Now(bytes)) => sink.text(&bytes),
                Answer::Reply(Reply::Later {
                    ok,
                    client_message_id,
                    mut outcome,
                }) => {
                    // Every message published above has its outcome by now.
                    let outcome = outcome.try_recv().map_err(|_| ());
                    answer(sink, &ok, client_message_id.as_deref(), outcome);
                }
                Answer::Owe(Obligation::Pong(p)) => sink.frame(OpCode::Pong, &p),
                Answer::Owe(Obligation::Close(p)) => {
                    sink.frame(OpCode::Close, &p);
                    self.closed = true;
                }
                Answer::Close(code, reason) => {
                    sink.close(code, &reason);
                    self.closed = true;
                }
            }
        }
        if self.places > 0 {
            self.shared
                .unanswered
                .add_permits(std::mem::take(&mut self.places));
        }
    }
}
