//! Every connection with an identity, senders too, by user: what a disconnect through the server
//! API closes, here at once and on the other pods through the store's control channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use super::{Backend, Presence, PresenceError, Shared};

/// Close code of a connection a backend disconnected through the server API.
pub const CLOSE_DISCONNECTED: u16 = 4403;

/// Its close reason.
pub const DISCONNECTED_REASON: &str = "disconnected by the server";

/// How a disconnect closes one connection.
pub(super) struct Kick {
    stop: CancellationToken,
    disconnected: Arc<AtomicBool>,
}

impl Presence {
    /// Registers a connection of `user` that `disconnect` closes by cancelling `stop`, until the
    /// returned guard is dropped.
    pub fn session(&self, user: &str, stop: CancellationToken) -> Session {
        let id = self
            .shared
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
}

impl Shared {
    /// Closes this process's connections of `user`; how many.
    pub(super) fn disconnect_here(&self, user: &str) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kicks) = sessions.get(user) else {
            return 0;
        };
        for kick in kicks.values() {
            // The flag first: whoever sees the stop reads it to choose the close.
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
    /// Set once a disconnect stopped the connection: close it with [`CLOSE_DISCONNECTED`].
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
