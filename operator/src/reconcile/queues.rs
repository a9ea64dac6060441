//! The reconciler's queue work: a client per queue location, ensuring every queue of a set only
//! when something may have changed, backlog reads, and deletion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatflow::queue::{
    Deletion, Ensured, QueueDepth, QueueError, SharedQueues, SqsConfig, SqsQueues, delete_owned,
    ensure_owned,
};
use chatflow::rooms::{QueueNaming, RoomId, RoomRange};
use futures::StreamExt;

use super::Error;
use crate::crd::ShardStatus;
use crate::desired::{Plan, QueueLocation};

/// How often queues are ensured when nothing else asks for it: catches queues deleted or
/// attributes changed behind the operator's back.
pub const RECHECK: Duration = Duration::from_secs(600);

/// The outcome of ensuring a set's queues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ensure {
    /// Queues that exist with the wanted attributes.
    pub ready: u32,
    /// Of those, queues whose attributes had drifted and were set back.
    pub repaired: u32,
    /// The first failure, if any queue could not be ensured.
    pub error: Option<String>,
    /// Queues (by key, their first room) another set owns, with that owner (or [`UNTAGGED`]),
    /// in room order.
    pub conflicts: Vec<(RoomId, String)>,
}

/// What the queues of a set looked like when last ensured.
struct Checked {
    /// Everything the queues are derived from; a change means they must be ensured again.
    fingerprint: String,
    at: Instant,
    outcome: Ensure,
}

/// Most queue clients kept, one per location and prefix in use; past it the least recently used
/// is dropped (and built again if needed), so sets coming and going cannot grow the cache.
const MAX_CLIENTS: usize = 256;

/// Queue clients per location and the last ensure per set.
#[derive(Default)]
pub struct QueueState {
    clients: tokio::sync::Mutex<HashMap<String, (SharedQueues, Instant)>>,
    checked: Mutex<HashMap<String, Checked>>,
}

fn client_key(loc: &QueueLocation, naming: &QueueNaming) -> String {
    // The layout is part of the key: it decides which queue a room's calls reach.
    format!("{:?}|{:?}|{:?}", loc.endpoint, loc.region, naming)
}

fn fingerprint(plan: &Plan, loc: &QueueLocation) -> String {
    format!(
        "{:?}|{:?}|{:?}|{}|{:?}",
        loc.endpoint, loc.region, plan.naming, plan.rooms, plan.attrs
    )
}

impl QueueState {
    /// The queue client of a location and prefix, built once.
    pub async fn client(
        &self,
        loc: &QueueLocation,
        naming: &QueueNaming,
    ) -> Result<SharedQueues, Error> {
        let key = client_key(loc, naming);
        let mut clients = self.clients.lock().await;
        if let Some((q, used)) = clients.get_mut(&key) {
            *used = Instant::now();
            return Ok(q.clone());
        }
        if clients.len() >= MAX_CLIENTS
            && let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            clients.remove(&oldest);
        }
        let config = SqsConfig {
            endpoint: loc.endpoint.clone(),
            region: loc.region.clone(),
            ..SqsConfig::default()
        };
        let q: SharedQueues = Arc::new(
            SqsQueues::connect(&config, naming.clone())
                .await
                .map_err(|e| Error::Queues(e.to_string()))?,
        );
        clients.insert(key, (q.clone(), Instant::now()));
        Ok(q)
    }

    /// Drops the client of a location and prefix no set uses any more.
    pub async fn drop_client(&self, loc: &QueueLocation, naming: &QueueNaming) {
        self.clients.lock().await.remove(&client_key(loc, naming));
    }

    /// Clients held.
    pub async fn clients(&self) -> usize {
        self.clients.lock().await.len()
    }

    /// The last outcome for `set`, unless its queues are due to be ensured again: the spec
    /// changed, the last attempt fell short, a queue was found missing, or [`RECHECK`] passed.
    pub fn cached(&self, set: &str, plan: &Plan, loc: &QueueLocation) -> Option<Ensure> {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        let c = checked.get(set)?;
        let fresh = c.fingerprint == fingerprint(plan, loc)
            && c.outcome.error.is_none()
            && c.outcome.ready == plan.queues.len() as u32
            && c.at.elapsed() < RECHECK;
        let fresh = fresh && c.outcome.conflicts.is_empty();
        fresh.then(|| Ensure {
            repaired: 0,
            ..c.outcome.clone()
        })
    }

    /// Remembers an outcome for `set`.
    pub fn record(&self, set: &str, plan: &Plan, loc: &QueueLocation, outcome: &Ensure) {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                set.to_owned(),
                Checked {
                    fingerprint: fingerprint(plan, loc),
                    at: Instant::now(),
                    outcome: outcome.clone(),
                },
            );
    }

    /// Makes every set's next reconcile ensure its queues.
    pub fn forget_all(&self) {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Makes the next reconcile of `set` ensure its queues (one was found missing, or the set
    /// went away).
    pub fn forget(&self, set: &str) {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(set);
    }
}

/// The owner of a conflict whose queue carries no owner tag.
pub const UNTAGGED: &str = "";

/// Ensures every queue of `plan` for `owner`, `concurrency` calls at a time.
pub async fn ensure(queues: &SharedQueues, plan: &Plan, owner: &str, concurrency: usize) -> Ensure {
    let adopt = plan.adopt_untagged;
    let results: Vec<_> = futures::stream::iter(plan.queues.iter().copied())
        .map(|room| {
            let (queues, attrs) = (queues.clone(), plan.attrs.clone());
            async move { ensure_owned(queues.as_ref(), room, &attrs, owner, adopt).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut out = Ensure::default();
    for r in results {
        match r {
            Ok(Ensured::Ready) => out.ready += 1,
            Ok(Ensured::Repaired(_)) => {
                out.ready += 1;
                out.repaired += 1;
            }
            Err(QueueError::OwnedByOther { room, owner }) => out.conflicts.push((room, owner)),
            Err(QueueError::Untagged { room }) => out.conflicts.push((room, UNTAGGED.into())),
            Err(e) => {
                out.error.get_or_insert(e.to_string());
            }
        }
    }
    out.conflicts.sort();
    out
}

/// What reading the set's queue depths found.
#[derive(Debug, Default)]
pub struct Backlog {
    /// A queue turned out not to exist.
    pub missing: bool,
    /// Depth of every queue that could be read, by key (its first room).
    pub depths: HashMap<u32, QueueDepth>,
}

/// Reads every queue's depth and fills each shard's backlog (visible plus in-flight messages of
/// its queues) where every one of its queues could be read.
pub async fn fill_backlog(
    queues: &SharedQueues,
    plan: &Plan,
    shards: &mut [ShardStatus],
    concurrency: usize,
) -> Backlog {
    let results: Vec<(u32, Result<QueueDepth, QueueError>)> =
        futures::stream::iter(plan.queues.iter().copied())
            .map(|room| {
                let queues = queues.clone();
                async move { (room, queues.depth(room).await) }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let missing = results
        .iter()
        .any(|(_, r)| matches!(r, Err(QueueError::NotFound { .. })));
    let depths: HashMap<u32, QueueDepth> = results
        .into_iter()
        .filter_map(|(room, r)| r.ok().map(|d| (room, d)))
        .collect();
    for (status, shard) in shards.iter_mut().zip(&plan.shards) {
        let keys = plan.naming.queue_keys(shard.rooms);
        let known: Vec<u64> = keys
            .iter()
            .filter_map(|r| depths.get(r).map(|d| d.visible + d.in_flight))
            .collect();
        if known.len() == keys.len() {
            status.backlog = Some(known.iter().sum());
        }
    }
    Backlog { missing, depths }
}

/// What deleting a set's queues did.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Queues deleted.
    pub deleted: u32,
    /// Queues left because another set (or nobody) owns them, one line each.
    pub kept: Vec<String>,
    /// Failures, one line each.
    pub failures: Vec<String>,
}

/// Deletes every queue of the range that `owner` owns.
pub async fn delete_all(
    queues: &SharedQueues,
    rooms: RoomRange,
    owner: &str,
    concurrency: usize,
) -> Deleted {
    let keys = queues.naming().queue_keys(rooms);
    let results: Vec<_> = futures::stream::iter(keys)
        .map(|room| {
            let queues = queues.clone();
            async move { (room, delete_owned(queues.as_ref(), room, owner).await) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut out = Deleted::default();
    for (room, r) in results {
        match r {
            Ok(Deletion::Deleted) => out.deleted += 1,
            Ok(Deletion::Absent) => {}
            Ok(Deletion::Kept { owner }) => out.kept.push(format!(
                "queue of room {room} (owned by {})",
                owner.as_deref().unwrap_or("no set")
            )),
            Err(e) => out.failures.push(format!("queue of room {room}: {e}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_cache_stays_bounded_and_forgets_deleted_sets() {
        let state = QueueState::default();
        let loc = QueueLocation {
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
        };
        let naming = |i: usize| QueueNaming::parse(&format!("p{i}-")).unwrap();
        for i in 0..MAX_CLIENTS + 20 {
            state.client(&loc, &naming(i)).await.unwrap();
        }
        assert_eq!(state.clients().await, MAX_CLIENTS);
        let recent = naming(MAX_CLIENTS + 19);
        state.drop_client(&loc, &recent).await;
        assert_eq!(state.clients().await, MAX_CLIENTS - 1);
    }
}
