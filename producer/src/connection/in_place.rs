//! A connection on a queue in memory, served by one task: it takes every frame already
//! received, publishes the messages among them in one call, and writes the answers itself
//! before it waits for more. Nothing is handed to another task, so an ack leaves in the same
//! turn that read its message.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use chatflow::auth::Deadline;
use chatflow::ws::{self, Check, FrameSink, Inbound, Liveness, Obligation, ReadError};
use chatflow_fanout::presence::{CLOSE_DISCONNECTED, DISCONNECTED_REASON};
use fastwebsockets::OpCode;
use tokio::io::{AsyncWrite, WriteHalf};
use tokio::sync::oneshot;
use tokio::time::{Instant, Interval, Sleep};
use tokio_util::sync::CancellationToken;

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

type Sink = FrameSink<WriteHalf<ws::Stream>>;

/// Serves one upgraded connection until either side closes, its deadline comes, or the
/// producer shuts down.
pub(super) async fn serve(
    ws: fastwebsockets::WebSocket<ws::Stream>,
    shared: Arc<Shared>,
    target: Target,
    peer: Peer,
    leave: CancellationToken,
) {
    let cfg = &shared.config;
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let (mut reader, sink) = ws::split_server(ws, cfg.max_frame_bytes as usize);
    let mut ticker = tokio::time::interval_at(Instant::now() + idle, idle);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = Conn {
        taken: Taken::new(&shared, &target, &peer),
        sink,
        // Its own token (its turn to go), so waiting on it registers with no lock shared by
        // other connections.
        stop: leave,
        deadline: Box::pin(Deadline::sleep(peer.pass.deadline())),
        liveness: Liveness::new(idle),
        ticker,
        idle,
        peer: &peer,
    };
    // Pongs and the echo of a close, owed while a read was under way; they go out behind the
    // answers to what was read before them.
    let owed = Mutex::new(Vec::new());
    let mut owe = |ob: Obligation| {
        owed.lock().unwrap_or_else(|e| e.into_inner()).push(ob);
        std::future::ready(())
    };
    let end = loop {
        let read = reader.next(&mut owe);
        tokio::pin!(read);
        // Polled once before anything else: a frame already received is taken at once, and only
        // a read that would wait publishes and answers what was taken. The read is never
        // dropped half done, as the WebSocket reader loses its place if it is.
        let next = match futures::poll!(read.as_mut()) {
            Poll::Ready(next) => next,
            Poll::Pending => match conn.wait(read).await {
                Ok(next) => next,
                Err(end) => break end,
            },
        };
        conn.liveness.seen();
        let obligations = std::mem::take(&mut *owed.lock().unwrap_or_else(|e| e.into_inner()));
        conn.taken
            .answers
            .extend(obligations.into_iter().map(Answer::Owe));
        if let Err(end) = conn.on_frame(next).await {
            break end;
        }
        if let Err(end) = conn.answer_if_full().await {
            break end;
        }
    };
    conn.finish(end).await;
}

/// One connection's state between reads.
struct Conn<'a> {
    taken: Taken<'a>,
    sink: Sink,
    stop: CancellationToken,
    deadline: Pin<Box<Sleep>>,
    liveness: Liveness,
    ticker: Interval,
    idle: Duration,
    peer: &'a Peer,
}

impl Conn<'_> {
    /// Answers what was taken, then waits for the read to complete, pinging a quiet client;
    /// or says why reading ends first.
    async fn wait<F>(&mut self, mut read: Pin<&mut F>) -> Result<F::Output, End>
    where
        F: Future,
    {
        self.taken.answer_into(&mut self.sink).await;
        self.sink
            .flush_within(self.idle)
            .await
            .map_err(|_| End::Gone)?;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Err(End::Shutdown),
                next = &mut read => return Ok(next),
                _ = &mut self.deadline => return Err(End::Deadline),
                _ = self.ticker.tick() => match self.liveness.check() {
                    Check::Fine => {}
                    Check::Ping => {
                        self.sink.frame(OpCode::Ping, b"chatflow");
                        self.sink.flush_within(self.idle).await.map_err(|_| End::Gone)?;
                    }
                    Check::Gone => {
                        let (code, why) = ws::CLOSE_IDLE;
                        self.taken.answers.push(Answer::Close(code, why.into()));
                        return Err(End::Closed);
                    }
                },
            }
        }
    }

    /// Takes what was read: a message to publish, or the answer to a frame that is not one.
    async fn on_frame(&mut self, next: Result<Inbound, ReadError>) -> Result<(), End> {
        let (stop, idle) = (&self.stop, self.idle);
        match next {
            Ok(Inbound::Text(frame)) => {
                self.taken
                    .place(&mut self.sink, stop, idle, frame.len())
                    .await?;
                self.taken.take(&frame);
                if let Some(wait) = self.peer.take_pause() {
                    // Over its rate: the refusal goes out now, and nothing more is read until
                    // the limit takes a message again.
                    self.taken.answer_into(&mut self.sink).await;
                    self.sink.flush_within(idle).await.map_err(|_| End::Gone)?;
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Err(End::Shutdown),
                        _ = &mut self.deadline => return Err(End::Deadline),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Ok(())
            }
            Ok(Inbound::Binary(frame)) => {
                self.taken
                    .place(&mut self.sink, stop, idle, frame.len())
                    .await?;
                let refused = binary_refused(self.taken.shared);
                self.taken.answers.push(Answer::Reply(Reply::Now(refused)));
                Ok(())
            }
            Ok(Inbound::Pong) => Ok(()),
            Ok(Inbound::Close) | Err(ReadError::Closed) => Err(End::Closed),
            Err(ReadError::TooLarge(limit)) => {
                let why = format!("message larger than {limit} bytes");
                self.taken
                    .answers
                    .push(Answer::Close(ws::CLOSE_TOO_BIG, why));
                Err(End::Closed)
            }
            Err(ReadError::Protocol(why)) => {
                self.taken
                    .answers
                    .push(Answer::Close(ws::CLOSE_PROTOCOL, why));
                Err(End::Closed)
            }
        }
    }

    /// A client that never pauses is answered every [`GATHER_MAX`] frames all the same, and
    /// meets its stop and its deadline here (the timer is polled only while a read waits).
    async fn answer_if_full(&mut self) -> Result<(), End> {
        if self.taken.answers.len() < GATHER_MAX {
            return Ok(());
        }
        self.taken.answer_into(&mut self.sink).await;
        self.sink
            .flush_within(self.idle)
            .await
            .map_err(|_| End::Gone)?;
        if self.stop.is_cancelled() {
            return Err(End::Shutdown);
        }
        if self
            .peer
            .pass
            .deadline()
            .is_some_and(|d| Instant::now() >= d.at)
        {
            return Err(End::Deadline);
        }
        Ok(())
    }

    /// Publishes and answers what was read before reading ended, then closes as `end` says.
    async fn finish(mut self, end: End) {
        self.taken.answer_into(&mut self.sink).await;
        if end == End::Gone {
            return;
        }
        let close = match end {
            End::Shutdown if self.peer.is_disconnected() => {
                Some((CLOSE_DISCONNECTED, DISCONNECTED_REASON))
            }
            End::Shutdown => Some((ws::CLOSE_GOING_AWAY, "server shutting down")),
            End::Deadline => self.peer.pass.deadline().map(|d| (d.code, d.reason)),
            End::Closed | End::Gone => None,
        };
        if let Some((code, reason)) = close {
            self.taken.answers.push(Answer::Close(code, reason.into()));
            self.taken.answer_into(&mut self.sink).await;
        }
        let _ = tokio::time::timeout(self.idle, self.sink.shutdown()).await;
    }
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
        stop: &CancellationToken,
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
