//! A room's history outside the pod: one Redis stream per room (Redis, Valkey, ElastiCache,
//! MemoryDB), capped by length and age, whose entry ids are the rooms' positions. A shard appends
//! each batch before it deletes the batch's queue messages, and any shard can answer a resume
//! from it.

mod ids;
mod metrics;
mod options;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chatflow::protocol::Position;
use chatflow::rooms::RoomId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

pub use ids::{Unstorable, entry_id, position};
pub use metrics::{OpLabel, RoomLabel, StoreMetrics};
pub use options::StoreOptions;

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
    conn: ConnectionManager,
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
        let conn = client.get_connection_manager_lazy(config)?;
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
        let (_added, len): (u64, u64) = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(len)
    }

    /// The stored events of `room` after `after`, at most `self.max_len` and a little (a stream
    /// is trimmed after each append, so it may briefly hold a batch more).
    pub async fn since(&self, room: RoomId, after: Position) -> Result<Stored, StoreError> {
        let start = match entry_id(after) {
            Ok(id) => format!("({id}"),
            Err(Unstorable(p)) if p.sequence == 0 && p.index == 0 => "-".to_owned(),
            Err(_) => return Ok(Stored::default()),
        };
        let limit = self.max_len + 1024;
        let [stream, floor] = self.keys(room);
        type Answer = (String, String, Vec<(String, Vec<Vec<u8>>)>);
        let (floor, oldest, entries): Answer = self
            .since
            .key(stream)
            .key(floor)
            .arg(start)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
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
        // What bounds the stream from below: the newest entry let go, or else the oldest held.
        let bound = if floor.is_empty() { &oldest } else { &floor };
        let covered = !bound.is_empty()
            && position(bound).is_some_and(|b| after >= b)
            && (events.len() as u64) < limit;
        Ok(Stored { covered, events })
    }

    /// A round trip to the store, for readiness and tests.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(started.elapsed())
    }
}
