//! Where a room's events come from: the shard that owns it, by the set's routing table (a
//! mounted ConfigMap, looked at again on every connect so a reshard is followed) or by one
//! template.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chatflow::rooms::RoomId;
use serde::Deserialize;

/// Why no upstream could be named for a room.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The routing file could not be read.
    #[error("reading the routing table {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The routing file is not a routing table.
    #[error("the routing table {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// No shard of the table owns the room.
    #[error("no shard in the routing table serves room {0}")]
    NoShard(RoomId),
}

/// How an edge finds the shard of a room.
#[derive(Debug, Clone)]
pub enum Routes {
    /// One subscribe URL template (`{roomId}` replaced) for every room: a single consumer.
    Template(String),
    /// The routing table the operator writes (`routing.json` of the set's ConfigMap).
    File(TableFile),
}

impl Routes {
    /// The routing table at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Routes::File(TableFile {
            path: path.into(),
            cache: Arc::default(),
        })
    }
}

/// A routing table file, parsed again only when it changed: after a reshard every relayed room
/// reconnects at once, and a table of a thousand shards is a few hundred kilobytes.
#[derive(Debug, Clone)]
pub struct TableFile {
    path: PathBuf,
    cache: Arc<Mutex<Option<Cached>>>,
}

#[derive(Debug)]
struct Cached {
    /// Modification time and length of the file parsed.
    stamp: (SystemTime, u64),
    table: Arc<Table>,
}

#[derive(Debug, Deserialize)]
struct Table {
    shards: Vec<Shard>,
}

#[derive(Debug, Deserialize)]
struct Shard {
    start: RoomId,
    end: RoomId,
    subscribe: String,
}

impl Routes {
    /// The subscribe URL of `room`'s shard, as the table says now.
    pub async fn resolve(&self, room: RoomId) -> Result<String, RouteError> {
        let template = match self {
            Routes::Template(t) => t.clone(),
            Routes::File(file) => file
                .table()
                .await?
                .shards
                .iter()
                .find(|s| (s.start..=s.end).contains(&room))
                .map(|s| s.subscribe.clone())
                .ok_or(RouteError::NoShard(room))?,
        };
        Ok(template.replace("{roomId}", &room.to_string()))
    }
}

impl TableFile {
    async fn table(&self) -> Result<Arc<Table>, RouteError> {
        let read_error = |source| RouteError::Read {
            path: self.path.clone(),
            source,
        };
        // The kubelet swaps the whole directory behind a symlink: metadata follows it to the
        // current file.
        let meta = tokio::fs::metadata(&self.path).await.map_err(read_error)?;
        let stamp = (meta.modified().map_err(read_error)?, meta.len());
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && c.stamp == stamp
        {
            return Ok(c.table.clone());
        }
        let text = tokio::fs::read(&self.path).await.map_err(read_error)?;
        let table: Arc<Table> =
            Arc::new(
                serde_json::from_slice(&text).map_err(|source| RouteError::Parse {
                    path: self.path.clone(),
                    source,
                })?,
            );
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            stamp,
            table: table.clone(),
        });
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"{"rooms":"1-10","ingest":"ws://p/chat/{roomId}","shards":[
        {"rooms":"1-5","start":1,"end":5,"service":"a","subscribe":"ws://a:8081/subscribe/{roomId}"},
        {"rooms":"6-10","start":6,"end":10,"service":"b","subscribe":"ws://b:8081/subscribe/{roomId}"}]}"#;

    #[tokio::test]
    async fn a_room_goes_to_the_shard_the_table_names_and_a_changed_table_is_followed() {
        let dir = std::env::temp_dir().join(format!("chatflow-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routing.json");
        std::fs::write(&path, TABLE).unwrap();
        let routes = Routes::file(path.clone());
        assert_eq!(routes.resolve(5).await.unwrap(), "ws://a:8081/subscribe/5");
        assert_eq!(routes.resolve(6).await.unwrap(), "ws://b:8081/subscribe/6");
        assert!(matches!(
            routes.resolve(11).await,
            Err(RouteError::NoShard(11))
        ));
        // A new file of the same length, as the kubelet writes it: a new modification time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, TABLE.replace("ws://a:", "ws://c:")).unwrap();
        assert_eq!(routes.resolve(5).await.unwrap(), "ws://c:8081/subscribe/5");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            routes.resolve(5).await,
            Err(RouteError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_template_serves_every_room() {
        let routes = Routes::Template("ws://c:8081/subscribe/{roomId}".into());
        assert_eq!(
            routes.resolve(42).await.unwrap(),
            "ws://c:8081/subscribe/42"
        );
    }
}
