//! Presence: who is in a room now, across every pod that serves it. Each subscriber with an
//! identity (its token's `sub` and `name`) is a connection of its user; a user is present while
//! one of their connections is. Pods write their connections to a shared store (Redis) in
//! batches and refresh them, so a pod that dies without a goodbye has its users expire; a roster
//! is read from the store, and joins and leaves reach the subscribers that asked for them as one
//! frame per room per interval. Without a store, presence is this process's own subscribers.

mod diff;
mod memory;
mod metrics;
mod options;
mod remote;
mod route;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chatflow::auth::Grant;
use chatflow::protocol::SubscriberFrame;
use chatflow::rooms::RoomId;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use metrics::PresenceMetrics;
pub use options::PresenceOptions;
pub use route::{PresenceRoute, roster_page};

/// A user as a roster lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The token's `sub`.
    pub user: String,
    /// The token's `name`.
    pub name: Option<String>,
    /// When their first connection arrived, milliseconds since the epoch.
    pub since: u64,
}

/// One change to a room's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A user's first connection arrived.
    Joined(Member),
    /// A user's last connection went.
    Left(String),
}

/// A page of a room's roster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// Users present in the room.
    pub count: u64,
    /// This page of them, oldest arrival first.
    pub members: Vec<Member>,
}

/// Why presence could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// PRESENCE_STORE_URL does not parse as a Redis URL.
    #[error("PRESENCE_STORE_URL is not a redis:// or rediss:// URL: {0}")]
    BadUrl(redis::RedisError),
    /// The store refused or did not answer.
    #[error("presence store: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Connections whose leaving is remembered while the store is unreachable; past this, they
/// leave by expiry.
const MAX_GONE: usize = 100_000;

/// How long the agent gathers joins and leaves before it writes them.
const GATHER: Duration = Duration::from_millis(20);

/// Presence for one process: a handle its subscribers register with and its routes read.
#[derive(Clone)]
pub struct Presence {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field(
                "shared_store",
                &matches!(self.shared.backend, Backend::Remote(_)),
            )
            .finish_non_exhaustive()
    }
}

enum Backend {
    Memory(Mutex<memory::Rooms>),
    Remote(Box<remote::Remote>),
}

/// A room's connections the store is to be told of: arrived (with their users), and gone.
type Writes = (RoomId, Vec<(String, Member)>, Vec<String>);

struct Shared {
    opts: PresenceOptions,
    backend: Backend,
    /// Names this process's connections apart from other pods'.
    pod: String,
    next_conn: AtomicU64,
    local: Mutex<HashMap<RoomId, Local>>,
    watched: Mutex<HashMap<RoomId, Watched>>,
    /// Every connection with an identity, senders too, by user: what a disconnect closes.
    sessions: Mutex<HashMap<String, HashMap<u64, Kick>>>,
    metrics: PresenceMetrics,
    /// Wakes the agent when connections arrive or go, or a room is first watched.
    wake: Notify,
    /// Wakes the store listener when the watched rooms change.
    rewatch: Notify,
    stop: CancellationToken,
    agent: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// This process's connections in one room, and what the store has not been told yet.
#[derive(Default)]
struct Local {
    conns: HashMap<String, Member>,
    fresh: Vec<String>,
    gone: Vec<String>,
}

/// A room whose changes local subscribers asked for.
struct Watched {
    tx: broadcast::Sender<Bytes>,
    watchers: usize,
    pending: diff::Pending,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Presence {
    /// Presence as `opts` say, or None when it is turned off; its agent runs until
    /// [`Presence::close`]. Must be called within a tokio runtime.
    pub fn start(
        opts: &PresenceOptions,
        registry: &mut Registry,
    ) -> Result<Option<Presence>, PresenceError> {
        if !opts.enabled {
            return Ok(None);
        }
        let backend = match opts.url.as_deref() {
            Some(url) => Backend::Remote(Box::new(remote::Remote::open(url, opts)?)),
            None => Backend::Memory(Mutex::default()),
        };
        let presence = Presence {
            shared: Arc::new(Shared {
                opts: opts.clone(),
                backend,
                pod: format!("{:016x}", rand::random::<u64>()),
                next_conn: AtomicU64::new(0),
                local: Mutex::default(),
                watched: Mutex::default(),
                sessions: Mutex::default(),
                metrics: PresenceMetrics::new(registry),
                wake: Notify::new(),
                rewatch: Notify::new(),
                stop: CancellationToken::new(),
                agent: Mutex::default(),
            }),
        };
        let agent = tokio::spawn(presence.clone().agent());
        *presence
            .shared
            .agent
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(agent);
        Ok(Some(presence))
    }

    /// Whether rosters span every pod sharing the store, not only this process.
    pub fn is_shared(&self) -> bool {
        matches!(self.shared.backend, Backend::Remote(_))
    }

    /// Registers a connection of `user` in `room` until the returned guard is dropped.
    pub fn enter(&self, room: RoomId, user: String, name: Option<String>) -> Here {
        let n = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn = format!("{}:{n}", self.shared.pod);
        let member_user = user.clone();
        let member = Member {
            user,
            name,
            since: now_ms(),
        };
        {
            let mut local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
            let l = local.entry(room).or_default();
            l.conns.insert(conn.clone(), member);
            l.fresh.push(conn.clone());
        }
        self.shared.metrics.connections.inc();
        self.shared.wake.notify_one();
        Here {
            shared: self.shared.clone(),
            room,
            conn,
            user: member_user,
        }
    }

    /// Registers a connection of `user` that `disconnect` closes by cancelling `stop`, until the
    /// returned guard is dropped.
    pub fn session(&self, user: &str, stop: CancellationToken) -> Session {
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let kick = Kick {
            stop,
            disconnected: Arc::new(AtomicBool::new(false)),
        };
        let disconnected = kick.disconnected.clone();
        let mut sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions
            .entry(user.to_owned())
            .or_default()
            .insert(id, kick);
        Session {
            shared: self.shared.clone(),
            user: user.to_owned(),
            id,
            disconnected,
        }
    }

    /// Closes every connection of `user`: this process's at once, the other pods' through the
    /// store. Returns how many were closed here, and whether the other pods were told.
    pub async fn disconnect(&self, user: &str) -> Result<(usize, bool), PresenceError> {
        let here = self.shared.disconnect_here(user);
        match &self.shared.backend {
            Backend::Memory(_) => Ok((here, false)),
            Backend::Remote(r) => {
                r.announce_disconnect(user, &self.shared.pod).await?;
                Ok((here, true))
            }
        }
    }

    /// Registers a subscriber to `room` as its request asks: its user (the token's, or with no
    /// token the `user` and `name` it gave), and its presence frames when it sent
    /// `presence=true`.
    pub fn attend(&self, room: RoomId, query: Option<&str>, grant: Option<&Grant>) -> Attendance {
        let asked = Asked::parse(query, grant);
        Attendance {
            here: asked.who.map(|(user, name)| self.enter(room, user, name)),
            feed: asked.watch.then(|| self.watch(room)),
        }
    }

    /// The room's presence frames: a first one (perhaps without changes) once changes reach
    /// this feed, then one per interval with changes.
    pub fn watch(&self, room: RoomId) -> Feed {
        let rx = {
            let mut watched = self
                .shared
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let fresh = !watched.contains_key(&room);
            let w = watched.entry(room).or_insert_with(|| Watched {
                tx: broadcast::channel(16).0,
                watchers: 0,
                pending: diff::Pending::default(),
            });
            w.watchers += 1;
            // A room the store's channel already carries, or one in memory, greets at once;
            // a new channel greets once the store confirmed it.
            if !fresh || !self.is_shared() {
                w.pending.greet();
            }
            w.tx.subscribe()
        };
        self.shared.rewatch.notify_one();
        Feed {
            rx,
            _watch: WatchGuard {
                shared: self.shared.clone(),
                room,
            },
        }
    }

    /// A page of `room`'s roster: `limit` users from the `offset`th, oldest arrival first.
    pub async fn roster(
        &self,
        room: RoomId,
        offset: u64,
        limit: u64,
    ) -> Result<Roster, PresenceError> {
        match &self.shared.backend {
            Backend::Memory(rooms) => Ok(rooms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .roster(room, offset, limit)),
            Backend::Remote(r) => r.roster(room, offset, limit, now_ms()).await,
        }
    }

    /// Writes what is pending (the connections closed by a shutdown leave at once, not by
    /// expiry) and stops the agent.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        let agent = self
            .shared
            .agent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(agent) = agent {
            let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
        }
    }

    /// Batches writes, refreshes this process's connections, and sends each watched room's
    /// changes once per interval.
    async fn agent(self) {
        let s = &self.shared;
        let ttl = Duration::from_secs(s.opts.ttl_secs);
        let mut refresh = tokio::time::interval(ttl / 4);
        let mut diffs = tokio::time::interval(Duration::from_millis(s.opts.diff_interval_ms));
        for t in [&mut refresh, &mut diffs] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let listener = match &s.backend {
            Backend::Remote(_) => Some(tokio::spawn(self.clone().listen())),
            Backend::Memory(_) => None,
        };
        loop {
            tokio::select! {
                _ = s.stop.cancelled() => break,
                _ = s.wake.notified() => {
                    tokio::time::sleep(GATHER).await;
                    self.flush().await;
                }
                _ = refresh.tick() => {
                    self.flush().await;
                    self.refresh().await;
                }
                _ = diffs.tick() => self.send_diffs().await,
            }
        }
        self.flush().await;
        if let Some(listener) = listener {
            listener.abort();
        }
    }

    /// Tells the store of the connections that arrived and went since the last flush.
    async fn flush(&self) {
        let s = &self.shared;
        let work: Vec<Writes> = {
            let mut local = s.local.lock().unwrap_or_else(|e| e.into_inner());
            let work = local
                .iter_mut()
                .filter(|(_, l)| !l.fresh.is_empty() || !l.gone.is_empty())
                .map(|(room, l)| {
                    let fresh = std::mem::take(&mut l.fresh)
                        .into_iter()
                        .filter_map(|c| l.conns.get(&c).map(|m| (c, m.clone())))
                        .collect();
                    (*room, fresh, std::mem::take(&mut l.gone))
                })
                .collect();
            local.retain(|_, l| !l.conns.is_empty());
            work
        };
        for (room, fresh, gone) in work {
            let now = now_ms();
            let changes = match &s.backend {
                Backend::Memory(rooms) => {
                    let mut rooms = rooms.lock().unwrap_or_else(|e| e.into_inner());
                    let mut changes = rooms.join(room, &fresh);
                    changes.extend(rooms.leave(room, &gone));
                    changes
                }
                Backend::Remote(r) => {
                    let expiry = now + s.opts.ttl_secs * 1_000;
                    if !fresh.is_empty()
                        && let Err(e) = r.join(room, &fresh, now, expiry, self.key_ttl()).await
                    {
                        s.metrics.store_errors.inc();
                        tracing::warn!(room, error = %e, "presence: joins not written; retrying");
                        self.put_back(room, fresh.into_iter().map(|(c, _)| c).collect(), true);
                    }
                    if !gone.is_empty()
                        && let Err(e) = r.leave(room, &gone, now).await
                    {
                        s.metrics.store_errors.inc();
                        tracing::warn!(room, error = %e, "presence: leaves not written; retrying");
                        self.put_back(room, gone, false);
                    }
                    // The store publishes the changes; every pod, this one too, hears them.
                    Vec::new()
                }
            };
            self.note(room, changes);
        }
    }

    /// Keys of a room outlive its last refresh by this long.
    fn key_ttl(&self) -> Duration {
        Duration::from_secs(self.shared.opts.ttl_secs * 2)
    }

    /// Queues a failed write again for the next flush.
    fn put_back(&self, room: RoomId, conns: Vec<String>, fresh: bool) {
        let mut local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
        let l = local.entry(room).or_default();
        if fresh {
            // Those gone meanwhile never reached the store: nothing to undo.
            l.fresh
                .extend(conns.into_iter().filter(|c| l.conns.contains_key(c)));
        } else {
            let room_left = MAX_GONE.saturating_sub(l.gone.len());
            l.gone.extend(conns.into_iter().take(room_left));
        }
    }

    /// Pushes every local connection's expiry forward and sweeps the rooms of expired ones.
    async fn refresh(&self) {
        let Backend::Remote(r) = &self.shared.backend else {
            return;
        };
        let rooms: Vec<(RoomId, Vec<(String, Member)>)> = {
            let local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
            local
                .iter()
                .map(|(room, l)| {
                    let conns = l.conns.iter().map(|(c, m)| (c.clone(), m.clone()));
                    (*room, conns.collect())
                })
                .collect()
        };
        let watched: Vec<RoomId> = self.watched_rooms().into_iter().collect();
        for (room, conns) in rooms {
            let now = now_ms();
            let expiry = now + self.shared.opts.ttl_secs * 1_000;
            // A refresh adds back what the store lost (a flush or restart of it), too.
            if let Err(e) = r.join(room, &conns, now, expiry, self.key_ttl()).await {
                self.shared.metrics.store_errors.inc();
                tracing::warn!(room, error = %e, "presence: refresh failed");
            }
        }
        // Rooms watched here but with no local users are swept too, so their leaves by expiry
        // reach the watchers.
        for room in watched {
            if let Err(e) = r.leave(room, &[], now_ms()).await {
                self.shared.metrics.store_errors.inc();
                tracing::warn!(room, error = %e, "presence: sweep failed");
            }
        }
    }

    fn watched_rooms(&self) -> HashSet<RoomId> {
        let watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        watched.keys().copied().collect()
    }

    /// Adds changes to a watched room's next frame.
    fn note(&self, room: RoomId, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watched.get_mut(&room) {
            for c in changes {
                w.pending.add(c);
            }
        }
    }

    /// Has the room's watchers sent a frame at the next interval: changes reach them from now.
    fn greet(&self, room: RoomId) {
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watched.get_mut(&room) {
            w.pending.greet();
        }
    }

    /// Sends each watched room's gathered changes as one frame.
    async fn send_diffs(&self) {
        let due: Vec<(RoomId, diff::Pending)> = {
            let mut watched = self
                .shared
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            watched
                .iter_mut()
                .filter(|(_, w)| !w.pending.is_empty())
                .map(|(room, w)| (*room, std::mem::take(&mut w.pending)))
                .collect()
        };
        for (room, pending) in due {
            let count = match &self.shared.backend {
                Backend::Memory(rooms) => {
                    rooms.lock().unwrap_or_else(|e| e.into_inner()).count(room)
                }
                Backend::Remote(r) => match r.count(room).await {
                    Ok(n) => n,
                    Err(e) => {
                        self.shared.metrics.store_errors.inc();
                        tracing::warn!(room, error = %e, "presence: count failed");
                        continue;
                    }
                },
            };
            let Some(frame) = pending.frame(room, count, self.shared.opts.diff_max as usize) else {
                continue;
            };
            let bytes = Bytes::from(SubscriberFrame::Presence(frame).to_json());
            let watched = self
                .shared
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(w) = watched.get(&room) {
                let _ = w.tx.send(bytes);
                self.shared.metrics.frames.inc();
            }
        }
    }

    /// Hears the store's change channels for the watched rooms, reconnecting when the
    /// connection drops; changes published while it was down are lost (the next frame's count
    /// is right again).
    async fn listen(self) {
        let Backend::Remote(r) = &self.shared.backend else {
            return;
        };
        loop {
            match r.pubsub().await {
                Ok(pubsub) => {
                    let (mut sink, mut stream) = pubsub.split();
                    let mut subscribed: HashSet<RoomId> = HashSet::new();
                    if let Err(e) = sink.subscribe(r.control_channel()).await {
                        tracing::warn!(error = %e, "presence: cannot hear disconnects from other pods");
                    }
                    let mut check = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) if msg.get_channel_name() == r.control_channel() => {
                                    if let Some(user) = remote::disconnect_of(msg.get_payload_bytes(), &self.shared.pod) {
                                        let closed = self.shared.disconnect_here(&user);
                                        tracing::info!(user, closed, "disconnected by another pod's server API");
                                    }
                                }
                                Some(msg) => {
                                    if let Some(room) = r.room_of(msg.get_channel_name()) {
                                        self.note(room, remote::changes(msg.get_payload_bytes()));
                                    }
                                }
                                None => break,
                            },
                            _ = async { tokio::select! { _ = check.tick() => {}, _ = self.shared.rewatch.notified() => {} } } => {
                                let want = self.watched_rooms();
                                let add: Vec<RoomId> = want.difference(&subscribed).copied().collect();
                                let drop: Vec<RoomId> = subscribed.difference(&want).copied().collect();
                                let mut failed = false;
                                for room in add {
                                    match sink.subscribe(r.channel(room)).await {
                                        Ok(()) => {
                                            subscribed.insert(room);
                                            self.greet(room);
                                        }
                                        Err(_) => failed = true,
                                    }
                                }
                                for room in drop {
                                    if sink.unsubscribe(r.channel(room)).await.is_ok() {
                                        subscribed.remove(&room);
                                    }
                                }
                                if failed { break; }
                            }
                        }
                    }
                    tracing::warn!("presence: change channel connection lost; reconnecting");
                }
                Err(e) => {
                    self.shared.metrics.store_errors.inc();
                    tracing::warn!(error = %e, "presence: cannot open the change channels");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Longest user id or name a subscriber without a token may give.
pub const MAX_GIVEN: usize = 128;

/// What a subscribe request asks of presence.
#[derive(Debug, Default, PartialEq, Eq)]
struct Asked {
    /// Send presence frames.
    watch: bool,
    /// The user and name the connection is present as; None stays out of the roster.
    who: Option<(String, Option<String>)>,
}

impl Asked {
    fn parse(query: Option<&str>, grant: Option<&Grant>) -> Asked {
        let mut asked = Asked::default();
        let (mut user, mut name) = (None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "presence" => asked.watch = value == "true" || value == "1",
                "user" => user = Some(value.into_owned()),
                "name" => name = Some(value.into_owned()),
                _ => {}
            }
        }
        let given = |v: Option<String>| {
            v.map(|v| v.trim().chars().take(MAX_GIVEN).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        asked.who = match grant {
            // With tokens, a user is who their token says, whatever the query claims.
            Some(g) => Some((g.subject.clone(), g.name.clone())),
            None => given(user).map(|u| (u, given(name))),
        };
        asked
    }
}

/// A subscriber's presence: its place in the roster and its frames, each if asked for.
#[derive(Default)]
pub struct Attendance {
    /// Held while the subscriber is connected.
    pub here: Option<Here>,
    /// Its room's presence frames.
    pub feed: Option<Feed>,
}

/// A connection's place in its room's presence; dropped, the connection leaves.
pub struct Here {
    shared: Arc<Shared>,
    room: RoomId,
    conn: String,
    user: String,
}

impl Here {
    /// Registers the connection for disconnects too (see [`Presence::session`]).
    pub fn session(&self, stop: CancellationToken) -> Session {
        Presence {
            shared: self.shared.clone(),
        }
        .session(&self.user, stop)
    }
}

/// How a disconnect closes one connection.
struct Kick {
    stop: CancellationToken,
    disconnected: Arc<AtomicBool>,
}

impl Shared {
    /// Closes this process's connections of `user`; how many.
    fn disconnect_here(&self, user: &str) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kicks) = sessions.get(user) else {
            return 0;
        };
        for kick in kicks.values() {
            kick.disconnected.store(true, Ordering::Release);
            kick.stop.cancel();
        }
        kicks.len()
    }
}

/// A connection with an identity, closable by a disconnect until dropped.
pub struct Session {
    shared: Arc<Shared>,
    user: String,
    id: u64,
    disconnected: Arc<AtomicBool>,
}

impl Session {
    /// Set once a disconnect closed the connection: close it with [`CLOSE_DISCONNECTED`].
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.disconnected.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(kicks) = sessions.get_mut(&self.user) {
            kicks.remove(&self.id);
            if kicks.is_empty() {
                sessions.remove(&self.user);
            }
        }
    }
}

/// Close code of a connection a backend disconnected through the server API.
pub const CLOSE_DISCONNECTED: u16 = 4403;

/// Its close reason.
pub const DISCONNECTED_REASON: &str = "disconnected by the server";

impl Drop for Here {
    fn drop(&mut self) {
        {
            let mut local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = local.get_mut(&self.room) {
                l.conns.remove(&self.conn);
                if let Some(i) = l.fresh.iter().position(|c| *c == self.conn) {
                    // Never written: nothing to take back.
                    l.fresh.swap_remove(i);
                } else if l.gone.len() < MAX_GONE {
                    l.gone.push(std::mem::take(&mut self.conn));
                }
            }
        }
        self.shared.metrics.connections.dec();
        self.shared.wake.notify_one();
    }
}

/// A subscriber's presence frames for one room.
pub struct Feed {
    rx: broadcast::Receiver<Bytes>,
    _watch: WatchGuard,
}

impl Feed {
    /// The next frame; a subscriber too slow for them skips to the newest (each frame carries
    /// the room's count). None once presence stopped.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.rx.recv().await {
                Ok(b) => return Some(b),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

struct WatchGuard {
    shared: Arc<Shared>,
    room: RoomId,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watched.get_mut(&self.room) {
            w.watchers -= 1;
            if w.watchers == 0 {
                watched.remove(&self.room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatflow::auth::RoomSet;
    use serde_json::json;

    fn grant(sub: &str, name: Option<&str>) -> Grant {
        Grant {
            subject: sub.to_owned(),
            user_id: None,
            name: name.map(str::to_owned),
            publish: RoomSet::default(),
            subscribe: RoomSet::default(),
            expires_at: 0,
        }
    }

    #[test]
    fn a_token_says_who_is_present_whatever_the_query_claims() {
        let g = grant("alice", Some("Alice"));
        let asked = Asked::parse(Some("user=mallory&name=M&presence=true"), Some(&g));
        assert!(asked.watch);
        assert_eq!(asked.who, Some(("alice".into(), Some("Alice".into()))));
    }

    #[test]
    fn without_a_token_the_given_user_is_present_and_none_stays_out() {
        let asked = Asked::parse(Some("user=bob&name=Bob%20B"), None);
        assert_eq!(asked.who, Some(("bob".into(), Some("Bob B".into()))));
        assert!(!asked.watch);
        assert_eq!(Asked::parse(Some("after=1.0"), None), Asked::default());
        assert_eq!(Asked::parse(Some("user=%20"), None).who, None);
        let long = "x".repeat(500);
        let asked = Asked::parse(Some(&format!("user={long}")), None);
        assert_eq!(asked.who.unwrap().0.len(), MAX_GIVEN);
    }

    #[tokio::test]
    async fn subscribers_that_asked_hear_joins_and_leaves_once_per_interval() {
        let opts = PresenceOptions {
            diff_interval_ms: 50,
            ..PresenceOptions::default()
        };
        let presence = Presence::start(&opts, &mut Registry::default())
            .unwrap()
            .unwrap();
        let mut watcher = presence.attend(9, Some("presence=true"), None);
        assert!(watcher.here.is_none(), "no identity, not in the roster");
        let alice = presence.attend(9, Some("user=alice"), Some(&grant("alice", Some("Alice"))));
        let alice_again = presence.enter(9, "alice".into(), None);
        let frame = next_frame(watcher.feed.as_mut().unwrap(), |f| f["joined"] != json!([])).await;
        assert_eq!(frame["count"], 1);
        assert_eq!(frame["joined"][0]["userId"], "alice");
        assert_eq!(frame["joined"][0]["name"], "Alice");
        let roster = presence.roster(9, 0, 10).await.unwrap();
        assert_eq!(roster.count, 1);
        drop(alice);
        drop(alice_again);
        let frame = next_frame(watcher.feed.as_mut().unwrap(), |f| f["left"] != json!([])).await;
        assert_eq!(frame["count"], 0);
        assert_eq!(frame["left"][0], "alice");
        presence.close().await;
    }

    /// The next frame that `wanted`; every frame on the way is a presence frame.
    async fn next_frame(
        feed: &mut Feed,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let bytes = tokio::time::timeout(Duration::from_secs(5), feed.next())
                .await
                .expect("a frame within the interval")
                .expect("presence still running");
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["status"], "PRESENCE");
            if wanted(&v) {
                return v;
            }
        }
    }
}
