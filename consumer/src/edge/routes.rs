//! Where a room's events come from: the shard that owns it, by the set's routing table (a
//! mounted ConfigMap, read again on every connect so a reshard is followed) or by one template.

use std::path::PathBuf;

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
    File(PathBuf),
}

#[derive(Deserialize)]
struct Table {
    shards: Vec<Shard>,
}

#[derive(Deserialize)]
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
            Routes::File(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|source| RouteError::Read {
                        path: path.clone(),
                        source,
                    })?;
                lookup(&text, room).map_err(|e| match e {
                    Lookup::Parse(source) => RouteError::Parse {
                        path: path.clone(),
                        source,
                    },
                    Lookup::NoShard => RouteError::NoShard(room),
                })?
            }
        };
        Ok(template.replace("{roomId}", &room.to_string()))
    }
}

enum Lookup {
    Parse(serde_json::Error),
    NoShard,
}

fn lookup(text: &[u8], room: RoomId) -> Result<String, Lookup> {
    let table: Table = serde_json::from_slice(text).map_err(Lookup::Parse)?;
    table
        .shards
        .into_iter()
        .find(|s| (s.start..=s.end).contains(&room))
        .map(|s| s.subscribe)
        .ok_or(Lookup::NoShard)
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
        let routes = Routes::File(path.clone());
        assert_eq!(routes.resolve(5).await.unwrap(), "ws://a:8081/subscribe/5");
        assert_eq!(routes.resolve(6).await.unwrap(), "ws://b:8081/subscribe/6");
        assert!(matches!(
            routes.resolve(11).await,
            Err(RouteError::NoShard(11))
        ));
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
