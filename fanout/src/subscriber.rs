//! One subscriber WebSocket: replays what it missed when it resumes, then writes the room's
//! events in order; reads only to answer pings and notice the close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatflow::auth::{Deadline, Grant};
use chatflow::protocol::{Position, SubscriberFrame};
use chatflow::rooms::RoomId;
use chatflow::ws::{self, Check, Inbound, Liveness, Obligation, ReadError};
use fastwebsockets::OpCode;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::history::Replay;
use crate::presence::{CLOSE_DISCONNECTED, DISCONNECTED_REASON, Feed, Here, Presence};
use crate::resume::{self, Backing, Fetched};
use crate::room::{Event, Room};
use crate::store::StoreError;
use prometheus_client::metrics::counter::Counter;

/// A subscriber whose socket takes nothing for this long is gone, even if TCP says otherwise.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Subscribers send nothing worth reading; anything larger is refused.
const MAX_INBOUND: usize = 4096;

/// How one subscription is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages it may fall behind before it is disconnected.
    pub buffer: usize,
    /// Position of the last message it saw, when it resumes (with `fetched`: the position the
    /// fetched events reach, from which the room's history goes on).
    pub after: Option<Position>,
    /// Silence after which it is pinged; twice this and it is closed as gone.
    pub idle: Duration,
    /// The start of a resume fetched from elsewhere, sent before the room's own history.
    pub fetched: Option<Fetched>,
    /// When the subscription is closed whatever happens (token expiry, connection age).
    pub deadline: Option<Deadline>,
    /// The history store, for a resume the room's memory does not reach back to.
    pub backing: Option<Backing>,
    /// Set when the shutdown token was cancelled by a disconnect through the server API, not
    /// by a shutdown: the close then says so.
    pub disconnected: Option<Arc<AtomicBool>>,
}

/// A subscriber's place in its room, taken before the upgrade is answered: the client counts
/// itself subscribed from the 101, so nothing broadcast after it may pass the subscriber by.
/// Dropped, it leaves the room.
pub struct Membership {
    room: Arc<Room>,
    id: u64,
    kick: CancellationToken,
    replay: Option<Replay>,
    rx: mpsc::Receiver<Event>,
    presence: Option<Feed>,
}

impl Membership {
    /// Joins `room` with `opts.buffer` places and, resuming after `opts.after`, what the room's
    /// memory holds since.
    pub fn join(room: Arc<Room>, opts: &Options) -> Membership {
        let (tx, rx) = mpsc::channel::<Event>(opts.buffer);
        let joined = room.join(tx, opts.after);
        Membership {
            room,
            id: joined.id,
            kick: joined.kick,
            replay: joined.replay,
            rx,
            presence: None,
        }
    }

    /// Enters the subscriber in `presence`, when there is one, as its request's `query` and
    /// `grant` ask: its user in the roster while the returned guard lives, and the room's
    /// presence frames sent with its events.
    pub fn attend(
        mut self,
        presence: Option<&Presence>,
        room: RoomId,
        query: Option<&str>,
        grant: Option<&Grant>,
    ) -> (Self, Option<Here>) {
        let Some(presence) = presence else {
            return (self, None);
        };
        let attendance = presence.attend(room, query, grant);
        self.presence = attendance.feed;
        (self, attendance.here)
    }
}

/// The next presence frame, or never without a feed.
async fn presence_frame(feed: &mut Option<Feed>) -> Option<bytes::Bytes> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.room.leave(self.id);
    }
}

/// Counters a subscription bumps when it resumes from a position.
#[derive(Debug, Clone, Copy)]
pub struct ResumeCounters<'a> {
    /// Every resume.
    pub resumed: &'a Counter,
    /// Resumes whose gap could not be vouched for.
    pub partial: &'a Counter,
}

/// Whether a live event is one a resuming subscriber already has: after a shard restart the
/// queue redelivers what the old shard broadcast but could not delete, and a replay from the
/// store may reach past the join.
fn already_seen(sent_upto: Option<Position>, ev: &Event) -> bool {
    matches!((sent_upto, ev.position), (Some(upto), Some(p)) if p <= upto)
}

/// What a subscriber has been sent, so a live event it already has (a redelivery, or one a
/// replay from the store reached) is not sent again.
struct Forward {
    /// The newest position sent, for a subscriber that resumed.
    sent_upto: Option<Position>,
    /// Set while the store must be read again at the first live event (see `resume::Plan`).
    recheck: Option<Position>,
    backing: Option<Backing>,
}

impl Forward {
    /// Writes `ev` unless the subscriber has it; the first event past a pending recheck first
    /// brings what the store took meanwhile.
    async fn event(&mut self, sink: &mut Sink, ev: &Event) -> Result<(), StoreError> {
        if let (Some(from), Some(next)) = (self.recheck, ev.position)
            && next > from
        {
            self.recheck = None;
            let backing = self
                .backing
                .as_ref()
                .expect("a recheck comes from the store");
            for (p, e) in resume::gap(backing, from, next).await? {
                if self.sent_upto.is_none_or(|upto| p > upto) {
                    sink.text(&e);
                    self.sent_upto = Some(p);
                }
            }
        }
        if already_seen(self.sent_upto, ev) {
            return Ok(());
        }
        sink.text(&ev.bytes);
        if let (Some(_), Some(p)) = (self.sent_upto, ev.position) {
            self.sent_upto = Some(p);
        }
        Ok(())
    }
}

type Sink = ws::FrameSink<WriteHalf<ws::Stream>>;

/// Why a subscription ends: the close to send, or none when the peer is gone or stalled.
type Ending = Option<(u16, String)>;

/// The subscriber's side of the socket, read on a task of its own: it only answers pings and
/// notices the peer going.
struct Peer {
    /// Pongs and the close echo owed to the peer.
    owed: mpsc::Receiver<Obligation>,
    /// Fires when the peer closed or the socket failed (and, cancelled by us, ends the reader).
    gone: CancellationToken,
    /// Fires when the peer sent a frame over [`MAX_INBOUND`].
    too_big: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    fn read(mut reader: ws::MessageReader<ReadHalf<ws::Stream>>, liveness: Liveness) -> Peer {
        let (owed_tx, owed) = mpsc::channel::<Obligation>(4);
        let gone = CancellationToken::new();
        let too_big = CancellationToken::new();
        let task = tokio::spawn({
            let (gone, too_big) = (gone.clone(), too_big.clone());
            async move {
                let seen = || liveness.seen();
                let mut owe = |ob: Obligation| {
                    seen();
                    let owed_tx = owed_tx.clone();
                    async move {
                        let _ = owed_tx.send(ob).await;
                    }
                };
                loop {
                    tokio::select! {
                        _ = gone.cancelled() => return,
                        next = reader.next(&mut owe) => match next {
                            Ok(Inbound::Text(_) | Inbound::Binary(_) | Inbound::Pong) => seen(),
                            Err(ReadError::TooLarge(_)) => { too_big.cancel(); return; }
                            Ok(Inbound::Close) | Err(_) => { gone.cancel(); return; }
                        },
                    }
                }
            }
        });
        Peer {
            owed,
            gone,
            too_big,
            task,
        }
    }
}

/// Serves one subscriber, already in its room, until it leaves, falls behind, or the consumer
/// shuts down.
pub async fn serve(
    socket: fastwebsockets::WebSocket<ws::Stream>,
    mut membership: Membership,
    mut opts: Options,
    resumes: ResumeCounters<'_>,
    shutdown: CancellationToken,
) {
    // A quiet room sends nothing, so a peer that vanished without a FIN would hold its place
    // forever: any frame from it (a pong, its own ping) shows it is still there.
    let liveness = Liveness::new(opts.idle);
    let (reader, mut sink) = ws::split_server(socket, MAX_INBOUND);
    let mut forward = Forward {
        sent_upto: opts.after,
        recheck: None,
        backing: opts.backing.take(),
    };
    if let (Some(after), Some(replay)) = (opts.after, membership.replay.take()) {
        let plan = resume::plan(after, replay, opts.fetched.take(), forward.backing.as_ref()).await;
        resumes.resumed.inc();
        if !plan.notice.recovered {
            resumes.partial.inc();
        }
        sink.text(&SubscriberFrame::from(plan.notice).to_json());
        for ev in &plan.events {
            sink.text(ev);
        }
        forward.sent_upto = Some(plan.sent_upto);
        forward.recheck = plan.recheck;
    }
    let mut peer = Peer::read(reader, liveness.clone());
    // Replayed events go out before the first live one arrives, however long that takes.
    let ending = if sink.flush_within(STALL_LIMIT).await.is_err() {
        None
    } else {
        relay(
            &mut sink,
            &mut membership,
            &mut forward,
            &mut peer,
            liveness,
            &opts,
            &shutdown,
        )
        .await
    };
    drop(membership);
    if let Some((code, why)) = ending {
        sink.close(code, &why);
        // A stalled peer may never take the close frame: give it a moment, then hang up.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.shutdown()).await;
    }
    peer.gone.cancel();
    let _ = peer.task.await;
}

/// Writes the room's live events to the subscriber until the subscription ends, answering its
/// pings and pinging it when it is quiet.
async fn relay(
    sink: &mut Sink,
    membership: &mut Membership,
    forward: &mut Forward,
    peer: &mut Peer,
    mut liveness: Liveness,
    opts: &Options,
    shutdown: &CancellationToken,
) -> Ending {
    let expiry = Deadline::sleep(opts.deadline);
    tokio::pin!(expiry);
    let kicked = membership.kick.clone();
    let too_slow = || {
        let buffer = opts.buffer;
        Some((
            ws::CLOSE_POLICY,
            format!("too slow: more than {buffer} messages behind"),
        ))
    };
    let mut ticker = tokio::time::interval(opts.idle);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            biased;
            // Before the events: a busy room must not hold a deadline off.
            _ = &mut expiry => {
                let d = opts.deadline.expect("the timer fires only with a deadline");
                return Some((d.code, d.reason.to_owned()));
            }
            // Before the events: a busy room must not hold a disconnect off either.
            _ = shutdown.cancelled(), if opts.disconnected.as_ref().is_some_and(|d| d.load(Ordering::Acquire)) => {
                return Some((CLOSE_DISCONNECTED, DISCONNECTED_REASON.to_owned()));
            }
            // Before the obligations: the reader, gone, has dropped their sender.
            _ = peer.too_big.cancelled() => return Some((ws::CLOSE_TOO_BIG, format!("subscribers may send frames of at most {MAX_INBOUND} bytes"))),
            ev = membership.rx.recv() => match ev {
                Some(ev) => {
                    if let Err(e) = burst(sink, membership, forward, ev).await {
                        return Some((ws::CLOSE_TRY_AGAIN, format!("history store: {e}; resume again")));
                    }
                    if sink.flush_within(STALL_LIMIT).await.is_err() { return None; }
                }
                // The room let go of us: either we fell behind or the consumer is stopping.
                None if kicked.is_cancelled() => return too_slow(),
                None => return Some((ws::CLOSE_GOING_AWAY, "server shutting down".to_owned())),
            },
            _ = kicked.cancelled() => return too_slow(),
            Some(frame) = presence_frame(&mut membership.presence) => {
                sink.text(&frame);
                if sink.flush_within(STALL_LIMIT).await.is_err() { return None; }
            }
            ob = peer.owed.recv() => match ob {
                Some(Obligation::Pong(p)) => { sink.frame(OpCode::Pong, &p); let _ = sink.flush_within(STALL_LIMIT).await; }
                Some(Obligation::Close(p)) => { sink.frame(OpCode::Close, &p); let _ = sink.flush_within(STALL_LIMIT).await; return None; }
                None => return None,
            },
            _ = peer.gone.cancelled() => return None,
            _ = ticker.tick() => match liveness.check() {
                Check::Fine => {}
                Check::Ping => {
                    sink.frame(OpCode::Ping, b"chatflow");
                    if sink.flush_within(STALL_LIMIT).await.is_err() { return None; }
                }
                Check::Gone => return Some((ws::CLOSE_IDLE.0, ws::CLOSE_IDLE.1.to_owned())),
            },
            _ = shutdown.cancelled() => {
                if opts.disconnected.as_ref().is_some_and(|d| d.load(Ordering::Acquire)) {
                    return Some((CLOSE_DISCONNECTED, DISCONNECTED_REASON.to_owned()));
                }
                // Deliver what is already queued for this subscriber before saying goodbye.
                while let Ok(ev) = membership.rx.try_recv() {
                    if forward.event(sink, &ev).await.is_err() { break; }
                }
                return Some((ws::CLOSE_GOING_AWAY, "server shutting down".to_owned()));
            }
        }
    }
}

/// Writes `first` and whatever else is already queued, up to 64 KiB unflushed, so a busy room
/// costs one flush per burst rather than one per event.
async fn burst(
    sink: &mut Sink,
    membership: &mut Membership,
    forward: &mut Forward,
    first: Event,
) -> Result<(), StoreError> {
    let mut next = Some(first);
    while let Some(ev) = next.take() {
        forward.event(sink, &ev).await?;
        if sink.queued() < 64 * 1024 {
            next = membership.rx.try_recv().ok();
        }
    }
    Ok(())
}
