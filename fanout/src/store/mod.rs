//! A room's history outside the pod: one Redis stream per room (Redis, Valkey, ElastiCache,
//! MemoryDB), capped by length and age, whose entry ids are the rooms' positions. A shard appends
//! each batch before it deletes the batch's queue messages, and any shard can answer a resume
//! from it.

mod ids;
mod metrics;
mod options;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chatflow::protocol::Position;
use chatflow::rooms::RoomId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

pub use ids::{Unstorable, entry_id, position};
pub use metrics::{OpLabel, RoomLabel, StoreMetrics};
pub use options::StoreOptions;
pub(crate) use options::without_credentials;

/// Most events one resume reads from the store; a resume further behind gets the newest ones
/// and `recovered: false`.
pub const REPLAY_LIMIT: u64 = 10_000;

/// The entry id of the last position there is.
const LAST_ID: &str = "18446744073709551615-18446744073709551615";

/// Why the store did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// HISTORY_STORE_URL does not parse as a Redis URL.
    #[error("HISTORY_STORE_URL is not a redis:// or rediss:// URL: {0}")]
    BadUrl(redis::RedisError),
    /// The store refused or did not answer (connection, timeout, a script error).
    #[error("history store: {0}")]
    Redis(#[from] redis::RedisError),
    /// Events after this position were trimmed since it was read.
    #[error("the stored history no longer reaches back to {0}")]
    Trimmed(Position),
    /// An answer this module did not expect.
    #[error("history store answered in an unexpected shape: {0}")]
    Shape(String),
}

/// The events after a position as the store holds them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// True when `events` are every message of the room after the position: nothing after it
    /// was trimmed, and the stream reaches back to it.
    pub covered: bool,
    /// The events, oldest first, with their positions.
    pub events: Vec<(Position, Bytes)>,
}

impl Stored {
    /// The position the events reach, or `after` when there are none.
    pub fn reached(&self, after: Position) -> Position {
        self.events.last().map_or(after, |(p, _)| *p)
    }
}

/// The Redis history store shared by every room of a shard.
#[derive(Clone)]
pub struct Store {
    conn: Connection,
    append: Script,
    since: Script,
    prefix: String,
    max_len: u64,
    max_age: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("max_len", &self.max_len)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store for `opts`, or None when HISTORY_STORE_URL is unset (memory-only history). It
    /// connects on first use and reconnects by itself, so a store that is down at start-up
    /// delays appends rather than the shard.
    pub fn open(opts: &StoreOptions) -> Result<Option<Store>, StoreError> {
        let Some(url) = opts.url.as_deref() else {
            return Ok(None);
        };
        if url.starts_with("rediss:") {
            // rustls needs one process-wide crypto provider; the SDK's is aws-lc-rs too. An
            // error means one is installed already, which serves as well.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = Client::open(url).map_err(StoreError::BadUrl)?;
        let timeout = Duration::from_millis(opts.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = Connection::new(client, config)?;
        Ok(Some(Store {
            conn,
            append: Script::new(include_str!("append.lua")),
            since: Script::new(include_str!("since.lua")),
            prefix: opts.key_prefix.clone(),
            max_len: opts.max_len,
            max_age: Duration::from_secs(opts.max_age_secs),
        }))
    }

    /// The keys of `room`'s stream and floor; the braces keep both in one Redis Cluster slot.
    fn keys(&self, room: RoomId) -> [String; 2] {
        [
            format!("{}:{{{room}}}:history", self.prefix),
            format!("{}:{{{room}}}:floor", self.prefix),
        ]
    }

    /// Appends `events` (in the room's order) in one round trip; an event already stored is
    /// skipped, so a batch that comes back after a failed delete is appended once. Returns the
    /// stream's length after trimming. Events at positions a stream id cannot hold are left
    /// out (and logged): none of SQS's sequence numbers is one.
    pub async fn append(
        &self,
        room: RoomId,
        events: &[(Position, Bytes)],
    ) -> Result<u64, StoreError> {
        let [stream, floor] = self.keys(room);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut call = self.append.key(stream);
        call.key(floor)
            .arg(self.max_len)
            .arg(self.max_age.as_millis() as u64)
            .arg(now_ms);
        for (position, event) in events {
            match entry_id(*position) {
                Ok(id) => {
                    call.arg(id).arg(event.as_ref());
                }
                Err(e) => tracing::error!(room, error = %e, "event left out of the history store"),
            }
        }
        let (_added, len): (u64, u64) = self
            .conn
            .outcome(call.invoke_async(&mut self.conn.get()).await)?;
        Ok(len)
    }

    /// The stored events of `room` after `after`: all of them, or the newest [`REPLAY_LIMIT`]
    /// when more follow (then not covered).
    pub async fn since(&self, room: RoomId, after: Position) -> Result<Stored, StoreError> {
        let (mut stored, more) = self
            .read_after(room, after, REPLAY_LIMIT, Keep::Newest)
            .await?;
        stored.covered &= !more;
        Ok(stored)
    }

    /// At most `n` stored events of `room` right after `after`, and whether more follow them: a
    /// page of history. `covered` says nothing was let go between `after` and the first.
    pub async fn page(
        &self,
        room: RoomId,
        after: Position,
        n: u64,
    ) -> Result<(Stored, bool), StoreError> {
        self.read_after(room, after, n, Keep::Oldest).await
    }

    async fn read_after(
        &self,
        room: RoomId,
        after: Position,
        limit: u64,
        keep: Keep,
    ) -> Result<(Stored, bool), StoreError> {
        let start = match entry_id(after) {
            // Nothing can follow the last position there is; Redis would refuse to read past it.
            Ok(id) if id == LAST_ID => {
                let none = Stored {
                    covered: true,
                    events: Vec::new(),
                };
                return Ok((none, false));
            }
            Ok(id) => format!("({id}"),
            Err(Unstorable(p)) if p.sequence == 0 && p.index == 0 => "-".to_owned(),
            Err(_) => return Ok((Stored::default(), false)),
        };
        let [stream, floor] = self.keys(room);
        type Answer = (String, String, Vec<Entry>, u8);
        let answer = self
            .since
            .key(stream)
            .key(floor)
            .arg(start)
            .arg(limit)
            .arg(match keep {
                Keep::Newest => "newest",
                Keep::Oldest => "oldest",
            })
            .invoke_async(&mut self.conn.get())
            .await;
        let (floor, oldest, entries, truncated): Answer = self.conn.outcome(answer)?;
        let events = events(entries)?;
        // What bounds the stream from below: the newest entry let go, or else the oldest held. A
        // stream that is gone while its floor stays (evicted) vouches for nothing.
        let bound = if floor.is_empty() { &oldest } else { &floor };
        let covered = !oldest.is_empty() && position(bound).is_some_and(|b| after >= b);
        Ok((Stored { covered, events }, truncated != 0))
    }

    /// The newest `n` stored events of `room`, oldest first.
    pub async fn latest(&self, room: RoomId, n: u64) -> Result<Vec<(Position, Bytes)>, StoreError> {
        let [stream, _] = self.keys(room);
        let answer: redis::RedisResult<Vec<Entry>> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(n)
            .query_async(&mut self.conn.get())
            .await;
        let mut newest_first = events(self.conn.outcome(answer)?)?;
        newest_first.reverse();
        Ok(newest_first)
    }

    /// A round trip to the store, for readiness and tests.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let pong = redis::cmd("PING").query_async(&mut self.conn.get()).await;
        let _: String = self.conn.outcome(pong)?;
        Ok(started.elapsed())
    }
}

/// Which entries a read after a position keeps when more follow than it may return.
#[derive(Clone, Copy)]
enum Keep {
    /// The newest (a resume: what is closest to live).
    Newest,
    /// The oldest (a page: what comes right after the position).
    Oldest,
}

/// A stream entry as Redis answers it: its id and its fields, key then value.
type Entry = (String, Vec<Vec<u8>>);

/// The events of stream entries, in the order given.
fn events(entries: Vec<Entry>) -> Result<Vec<(Position, Bytes)>, StoreError> {
    let mut events = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let p = position(&id).ok_or_else(|| StoreError::Shape(format!("entry id {id}")))?;
        let event = fields
            .chunks(2)
            .find(|kv| kv.first().is_some_and(|k| k == b"e"))
            .and_then(|kv| kv.get(1))
            .ok_or_else(|| StoreError::Shape(format!("entry {id} has no event")))?;
        events.push((p, Bytes::from(event.clone())));
    }
    Ok(events)
}

/// The store's connection, made anew after calls keep failing: a timeout does not make the
/// client reconnect by itself, and a store that moved (a failover behind a DNS name) or a
/// connection dropped without a reset would otherwise be waited on for as long as the kernel
/// keeps the socket.
#[derive(Clone)]
struct Connection {
    client: Client,
    config: ConnectionManagerConfig,
    current: Arc<RwLock<ConnectionManager>>,
    failures: Arc<AtomicU32>,
}

/// Failed calls in a row after which the connection is made anew.
const RECONNECT_AFTER: u32 = 3;

impl Connection {
    fn new(client: Client, config: ConnectionManagerConfig) -> Result<Self, StoreError> {
        let manager = client.get_connection_manager_lazy(config.clone())?;
        Ok(Connection {
            client,
            config,
            current: Arc::new(RwLock::new(manager)),
            failures: Arc::new(AtomicU32::new(0)),
        })
    }

    fn get(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Passes `result` on, counting failures and reconnecting after [`RECONNECT_AFTER`].
    fn outcome<T>(&self, result: redis::RedisResult<T>) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures.is_multiple_of(RECONNECT_AFTER)
                    && let Ok(fresh) = self.client.get_connection_manager_lazy(self.config.clone())
                {
                    tracing::info!(failures, "history store: connecting anew");
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
                Err(e.into())
            }
        }
    }
}
