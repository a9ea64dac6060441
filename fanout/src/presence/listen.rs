//! The store's channels as one pod hears them: each watched room's changes, and the disconnects
//! other pods were asked for. One connection, re-made when it drops or stops answering; changes
//! published while it was down are lost (the next frame's count is right again).

use std::collections::HashSet;
use std::time::Duration;

use chatflow::rooms::RoomId;
use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};

use super::remote::{self, Remote};
use super::{Backend, Presence};

/// How often the connection is pinged, and the watched rooms compared with those subscribed.
const CHECK: Duration = Duration::from_secs(1);

/// Pings are sent every this many checks.
const PING_EVERY: u32 = 5;

impl Presence {
    /// Runs until the presence is closed.
    pub(super) async fn listen(self) {
        let Backend::Remote(r) = &self.shared.backend else {
            return;
        };
        loop {
            match r.pubsub().await {
                Ok(pubsub) => {
                    let (sink, stream) = pubsub.split();
                    let why = self.hear(r, sink, stream).await;
                    self.confirmed().clear();
                    tracing::warn!(
                        why,
                        "presence: the store's channels were lost; reconnecting"
                    );
                }
                Err(e) => {
                    self.shared.metrics.store_errors.inc();
                    tracing::warn!(error = %e, "presence: cannot open the store's channels");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Serves one channel connection until it fails; why it ended.
    async fn hear(&self, r: &Remote, mut sink: PubSubSink, mut stream: PubSubStream) -> String {
        let within = r.timeout();
        let control = r.control_channel();
        match tokio::time::timeout(within, sink.subscribe(&control)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("subscribing to disconnects: {e}"),
            Err(_) => return "subscribing to disconnects timed out".to_owned(),
        }
        let mut subscribed: HashSet<RoomId> = HashSet::new();
        let mut check = tokio::time::interval(CHECK);
        let mut checks = 0u32;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return "the connection closed".to_owned();
                    };
                    let channel = msg.get_channel_name();
                    if channel == control {
                        if let Some(user) = remote::disconnect_of(msg.get_payload_bytes(), &self.shared.pod) {
                            let closed = self.shared.disconnect_here(&user);
                            tracing::info!(user, closed, "disconnected by another pod's server API");
                        }
                    } else if let Some(room) = r.room_of(channel) {
                        self.note(room, remote::changes(msg.get_payload_bytes()));
                    }
                }
                _ = check.tick() => {
                    checks += 1;
                    if checks.is_multiple_of(PING_EVERY) {
                        match tokio::time::timeout(within, sink.ping::<redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return format!("ping: {e}"),
                            Err(_) => return "ping timed out".to_owned(),
                        }
                    }
                    if let Err(why) = self.follow(r, &mut sink, &mut subscribed).await {
                        return why;
                    }
                }
                _ = self.shared.rewatch.notified() => {
                    if let Err(why) = self.follow(r, &mut sink, &mut subscribed).await {
                        return why;
                    }
                }
            }
        }
    }

    /// Subscribes to the rooms newly watched and lets go of those no longer watched; then greets
    /// the watchers that wait for their room's channel.
    async fn follow(
        &self,
        r: &Remote,
        sink: &mut PubSubSink,
        subscribed: &mut HashSet<RoomId>,
    ) -> Result<(), String> {
        let within = r.timeout();
        let want = self.watched_rooms();
        let add: Vec<RoomId> = want.difference(subscribed).copied().collect();
        let gone: Vec<RoomId> = subscribed.difference(&want).copied().collect();
        let mut added = HashSet::new();
        for room in add {
            match tokio::time::timeout(within, sink.subscribe(r.channel(room))).await {
                Ok(Ok(())) => {
                    subscribed.insert(room);
                    self.confirmed().insert(room);
                    added.insert(room);
                }
                Ok(Err(e)) => return Err(format!("subscribing to room {room}: {e}")),
                Err(_) => return Err(format!("subscribing to room {room} timed out")),
            }
        }
        for room in gone {
            self.confirmed().remove(&room);
            match tokio::time::timeout(within, sink.unsubscribe(r.channel(room))).await {
                Ok(Ok(())) => {
                    subscribed.remove(&room);
                }
                Ok(Err(e)) => return Err(format!("unsubscribing from room {room}: {e}")),
                Err(_) => return Err(format!("unsubscribing from room {room} timed out")),
            }
        }
        // After the confirmed set is updated: a watcher that came meanwhile either saw its room
        // confirmed and was greeted, or waits here. A room heard anew (after a reconnect, too)
        // greets all its watchers: what was published before went by them.
        self.greet_waiting(subscribed, &added);
        Ok(())
    }

    /// The rooms whose channel this pod hears now.
    fn confirmed(&self) -> std::sync::MutexGuard<'_, HashSet<RoomId>> {
        self.shared
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Has a frame sent at the next interval to the watchers of the rooms `added`, and to those
    /// that wait for a channel now heard.
    fn greet_waiting(&self, heard: &HashSet<RoomId>, added: &HashSet<RoomId>) {
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (room, w) in watched.iter_mut() {
            if added.contains(room) || (w.greet_due && heard.contains(room)) {
                w.greet_due = false;
                w.pending.greet();
            }
        }
    }
}
