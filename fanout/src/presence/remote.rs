//! Presence in a Redis-protocol store shared by every pod: per room, each connection with its
//! expiry, each user with their live connections, first-seen time and name, all changed by Lua
//! scripts so counts never drift between pods; a channel per room carries the changes.

use std::time::Duration;

use chatflow::rooms::RoomId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, Script};

use super::{Change, Member, PresenceError, PresenceOptions, Roster};

/// Most connections one script call adds or refreshes, so no call holds the store for long.
const BATCH: usize = 1_000;

/// Most expired connections one call removes.
const SWEEP: u64 = 1_000;

/// Most sweep calls per room and pass: a million expired connections.
const MAX_SWEEPS: usize = 1_000;

/// The store and its scripts.
pub(super) struct Remote {
    client: Client,
    conn: ConnectionManager,
    join: Script,
    leave: Script,
    roster: Script,
    prefix: String,
    timeout: Duration,
}

impl Remote {
    /// Connects lazily to `url`: a store that is down at start-up delays presence, not the pod.
    pub(super) fn open(url: &str, opts: &PresenceOptions) -> Result<Remote, PresenceError> {
        if url.starts_with("rediss:") {
            // One process-wide crypto provider; an error means one is installed already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = Client::open(url).map_err(PresenceError::BadUrl)?;
        let timeout = Duration::from_millis(opts.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_lazy(config)?;
        let common = include_str!("common.lua");
        let script = |body: &str| Script::new(&format!("{common}{body}"));
        Ok(Remote {
            client,
            conn,
            join: script(include_str!("join.lua")),
            leave: script(include_str!("leave.lua")),
            roster: script(include_str!("roster.lua")),
            prefix: opts.key_prefix.clone(),
            timeout,
        })
    }

    /// The room's keys; the braces keep them in one Redis Cluster slot.
    fn keys(&self, room: RoomId) -> [String; 5] {
        ["conns", "owner", "refs", "users", "names"]
            .map(|k| format!("{}:{{{room}}}:presence:{k}", self.prefix))
    }

    /// The channel the room's changes are published on.
    pub(super) fn channel(&self, room: RoomId) -> String {
        format!("{}:presence-changes:{room}", self.prefix)
    }

    /// The channel disconnects are announced on, heard by every pod.
    pub(super) fn control_channel(&self) -> String {
        format!("{}:presence-control", self.prefix)
    }

    /// Tells every other pod to close `user`'s connections.
    pub(super) async fn announce_disconnect(
        &self,
        user: &str,
        pod: &str,
    ) -> Result<(), PresenceError> {
        let msg = serde_json::json!({"disconnect": user, "from": pod}).to_string();
        let _receivers: u64 = redis::cmd("PUBLISH")
            .arg(self.control_channel())
            .arg(msg)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The room a channel of [`Remote::channel`] is for.
    pub(super) fn room_of(&self, channel: &str) -> Option<RoomId> {
        channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":presence-changes:")?
            .parse()
            .ok()
    }

    fn call<'a>(&self, script: &'a Script, room: RoomId) -> redis::ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        for key in self.keys(room) {
            call.key(key);
        }
        call.arg(self.channel(room));
        call
    }

    /// Adds `entries` to `room`, or refreshes those already there, until `expiry` (ms).
    pub(super) async fn join(
        &self,
        room: RoomId,
        entries: &[(String, Member)],
        now: u64,
        expiry: u64,
        key_ttl: Duration,
    ) -> Result<(), PresenceError> {
        for chunk in entries.chunks(BATCH) {
            let mut call = self.call(&self.join, room);
            call.arg(now).arg(expiry).arg(key_ttl.as_millis() as u64);
            for (conn, m) in chunk {
                call.arg(conn)
                    .arg(&m.user)
                    .arg(m.name.as_deref().unwrap_or(""));
            }
            let _joined: u64 = call.invoke_async(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

    /// Removes `conns` from `room`, and up to [`SWEEP`] expired connections with each call.
    pub(super) async fn leave(
        &self,
        room: RoomId,
        conns: &[String],
        now: u64,
    ) -> Result<(), PresenceError> {
        for chunk in conns.chunks(BATCH) {
            self.leave_call(room, chunk, now).await?;
        }
        Ok(())
    }

    /// Removes every expired connection of `room`, [`SWEEP`] per call: a pod that died with
    /// tens of thousands of a room's users is swept in one pass.
    pub(super) async fn sweep(&self, room: RoomId, now: u64) -> Result<(), PresenceError> {
        for _ in 0..MAX_SWEEPS {
            if self.leave_call(room, &[], now).await? < SWEEP {
                break;
            }
        }
        Ok(())
    }

    /// One leave call; how many expired connections it removed.
    async fn leave_call(
        &self,
        room: RoomId,
        conns: &[String],
        now: u64,
    ) -> Result<u64, PresenceError> {
        let mut call = self.call(&self.leave, room);
        call.arg(now).arg(SWEEP);
        for conn in conns {
            call.arg(conn);
        }
        let (_left, swept): (u64, u64) = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(swept)
    }

    /// A page of `room`'s roster after the expired connections are gone.
    pub(super) async fn roster(
        &self,
        room: RoomId,
        offset: u64,
        limit: u64,
        now: u64,
    ) -> Result<Roster, PresenceError> {
        let mut call = self.call(&self.roster, room);
        call.arg(now).arg(offset).arg(limit);
        let (count, page, names): (u64, Vec<String>, Vec<Option<String>>) =
            call.invoke_async(&mut self.conn.clone()).await?;
        let members = page
            .chunks(2)
            .zip(names)
            .map(|(pair, name)| Member {
                user: pair[0].clone(),
                name: name.filter(|n| !n.is_empty()),
                since: pair
                    .get(1)
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0) as u64,
            })
            .collect();
        Ok(Roster { count, members })
    }

    /// Users present in `room` (expired ones included until the next sweep).
    pub(super) async fn count(&self, room: RoomId) -> Result<u64, PresenceError> {
        let [_, _, _, users, _] = self.keys(room);
        Ok(redis::cmd("ZCARD")
            .arg(users)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// A connection for the change channels, within the store's timeout.
    pub(super) async fn pubsub(&self) -> Result<PubSub, PresenceError> {
        match tokio::time::timeout(self.timeout, self.client.get_async_pubsub()).await {
            Ok(pubsub) => Ok(pubsub?),
            Err(_) => Err(PresenceError::Timeout(self.timeout)),
        }
    }

    /// The store's timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The user a control message disconnects, unless `pod` sent it (it closed its own already).
pub(super) fn disconnect_of(payload: &[u8], pod: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v.get("from").and_then(|f| f.as_str()) == Some(pod) {
        return None;
    }
    v.get("disconnect")?.as_str().map(str::to_owned)
}

/// The changes one published message carries: `{"j": [[user, name, since]...], "l": [user...]}`
/// (an empty list arrives as `{}` from Lua's JSON encoder).
pub(super) fn changes(payload: &[u8]) -> Vec<Change> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    let list = |key: &str| v.get(key).and_then(|l| l.as_array()).cloned();
    let mut out = Vec::new();
    for j in list("j").unwrap_or_default() {
        let (Some(user), name, since) = (
            j.get(0).and_then(|u| u.as_str()),
            j.get(1).and_then(|n| n.as_str()),
            j.get(2).and_then(|s| s.as_f64()),
        ) else {
            continue;
        };
        out.push(Change::Joined(Member {
            user: user.to_owned(),
            name: name.filter(|n| !n.is_empty()).map(str::to_owned),
            since: since.unwrap_or(0.0) as u64,
        }));
    }
    for l in list("l").unwrap_or_default() {
        if let Some(user) = l.as_str() {
            out.push(Change::Left(user.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_changes_read_back_including_empty_lists() {
        let c = changes(br#"{"j":[["alice","Alice",1700000000000],["bob","",5]],"l":{}}"#);
        assert_eq!(c.len(), 2);
        assert!(
            matches!(&c[0], Change::Joined(m) if m.user == "alice" && m.name.as_deref() == Some("Alice") && m.since == 1_700_000_000_000)
        );
        assert!(matches!(&c[1], Change::Joined(m) if m.name.is_none()));
        assert_eq!(
            changes(br#"{"j":{},"l":["carol"]}"#),
            vec![Change::Left("carol".into())]
        );
        assert!(changes(b"not json").is_empty());
    }
}
