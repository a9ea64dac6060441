//! Presence: who is in a room now, across every pod that serves it. Each subscriber with an
//! identity (its token's `sub` and `name`) is a connection of its user; a user is present while
//! one of their connections is. Pods write their connections to a shared store (Redis) in
//! batches and refresh them, so a pod that dies without a goodbye has its users expire; a roster
//! is read from the store, and joins and leaves reach the subscribers that asked for them as one
//! frame per room per interval. Without a store, presence is this process's own subscribers.

mod agent;
mod diff;
mod listen;
mod memory;
mod metrics;
mod options;
mod remote;
mod request;
mod route;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chatflow::auth::Grant;
use chatflow::rooms::RoomId;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use metrics::PresenceMetrics;
pub use options::PresenceOptions;
pub use request::{Attendance, MAX_GIVEN};
pub use route::{PresenceRoute, roster_page};
pub use sessions::{CLOSE_DISCONNECTED, DISCONNECTED_REASON, Session};

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
    /// The store did not answer in time.
    #[error("presence store: no answer within {0:?}")]
    Timeout(Duration),
}

/// Connections per room whose leaving is remembered while the store is unreachable; past this,
/// they leave by expiry.
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

struct Shared {
    opts: PresenceOptions,
    backend: Backend,
    /// Names this process's connections apart from other pods'.
    pod: String,
    next_conn: AtomicU64,
    local: Mutex<HashMap<RoomId, Local>>,
    watched: Mutex<HashMap<RoomId, Watched>>,
    /// The watched rooms whose channel the store's connection carries now.
    confirmed: Mutex<HashSet<RoomId>>,
    /// Every connection with an identity, senders too, by user: what a disconnect closes.
    sessions: Mutex<HashMap<String, HashMap<u64, sessions::Kick>>>,
    metrics: PresenceMetrics,
    /// Wakes the agent when connections arrive or go, or a room is first watched.
    wake: Notify,
    /// Wakes the store listener when the watched rooms change.
    rewatch: Notify,
    stop: CancellationToken,
    /// The agent, then the listener when there is a store.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// This process's connections in one room, and what the store has not been told yet.
#[derive(Default)]
struct Local {
    conns: HashMap<String, Member>,
    fresh: HashSet<String>,
    gone: Vec<String>,
}

/// A room whose changes local subscribers asked for.
struct Watched {
    tx: broadcast::Sender<Bytes>,
    watchers: usize,
    pending: diff::Pending,
    /// A watcher waits for the store's channel of the room before its first frame.
    greet_due: bool,
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
                confirmed: Mutex::default(),
                sessions: Mutex::default(),
                metrics: PresenceMetrics::new(registry),
                wake: Notify::new(),
                rewatch: Notify::new(),
                stop: CancellationToken::new(),
                tasks: Mutex::default(),
            }),
        };
        let mut tasks = vec![tokio::spawn(presence.clone().agent())];
        if presence.is_shared() {
            tasks.push(tokio::spawn(presence.clone().listen()));
        }
        *presence.tasks() = tasks;
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
            l.fresh.insert(conn.clone());
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

    /// Registers a subscriber to `room` as its request asks: its user (the token's, or with no
    /// token the `user` and `name` it gave), and its presence frames when it sent
    /// `presence=true`.
    pub fn attend(&self, room: RoomId, query: Option<&str>, grant: Option<&Grant>) -> Attendance {
        let asked = request::Asked::parse(query, grant);
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
            let w = watched.entry(room).or_insert_with(|| Watched {
                tx: broadcast::channel(16).0,
                watchers: 0,
                pending: diff::Pending::default(),
                greet_due: false,
            });
            w.watchers += 1;
            // In memory, or once the store's channel of the room is heard, changes reach the
            // watcher from now on; otherwise the listener greets it when the channel is.
            let heard = || {
                self.shared
                    .confirmed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&room)
            };
            if !self.is_shared() || heard() {
                w.pending.greet();
            } else {
                w.greet_due = true;
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
    /// expiry), within 5 s, and stops.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks());
        if let Some(agent) = tasks.first_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
        }
        for task in tasks {
            task.abort();
        }
    }

    /// Stops at once, writing nothing more (a server that failed to start).
    pub fn abort(&self) {
        self.shared.stop.cancel();
        for task in std::mem::take(&mut *self.tasks()) {
            task.abort();
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
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

impl Drop for Here {
    fn drop(&mut self) {
        let shared_store = matches!(self.shared.backend, Backend::Remote(_));
        {
            let mut local = self.shared.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = local.get_mut(&self.room) {
                l.conns.remove(&self.conn);
                let unwritten = l.fresh.remove(&self.conn);
                // In memory a connection still fresh was never added. In the store it may have
                // been all the same (a refresh writes every connection, a join that timed out
                // may have run), and a leave of an unknown connection does nothing: always sent.
                if shared_store {
                    if l.gone.len() < MAX_GONE {
                        l.gone.push(std::mem::take(&mut self.conn));
                    }
                } else if !unwritten {
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
