//! A local resume from a position this edge's relay of the room does not reach back to (a room
//! new to this edge, or one it began relaying later): the shard's history may still hold the
//! gap, so the edge asks it once, as the client would have, and hands the answer on before its
//! own relay.

use std::time::Duration;

use bytes::Bytes;
use chatflow::protocol::{Position, RecoveryNotice};
use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientReader, connect_reader};
use serde::Deserialize;

use super::routes::Routes;
use crate::resume::Fetched;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for each frame of the replay: the shard writes it at once.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Positioned {
    position: Option<Position>,
}

/// What the shard holds after `after`, and the position those events reach; `generation` is
/// the room's history generation, read before the fetch.
pub(super) async fn fetch(
    routes: &Routes,
    room: RoomId,
    after: Position,
    generation: u64,
) -> Result<(Fetched, Position), String> {
    let url = routes.resolve(room).await.map_err(|e| e.to_string())?;
    let mut reader = connect_reader(&format!("{url}?after={after}"), CONNECT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let notice: RecoveryNotice = serde_json::from_slice(&text(&mut reader).await?)
        .map_err(|e| format!("the shard's first frame is not a recovery notice: {e}"))?;
    let mut events = Vec::with_capacity(notice.replayed.min(100_000) as usize);
    let mut reached = after;
    for _ in 0..notice.replayed {
        let event = text(&mut reader).await?;
        if let Ok(Positioned { position: Some(p) }) = serde_json::from_slice(&event) {
            reached = reached.max(p);
        }
        events.push(event);
    }
    Ok((
        Fetched {
            from: after,
            recovered: notice.recovered,
            events,
            generation,
        },
        reached,
    ))
}

async fn text(reader: &mut ClientReader) -> Result<Bytes, String> {
    loop {
        match tokio::time::timeout(FRAME_TIMEOUT, reader.next()).await {
            Err(_) => return Err("the shard's replay stalled".into()),
            Ok(Ok(ClientEvent::Text(b))) => return Ok(b),
            Ok(Ok(ClientEvent::Binary(_))) => {}
            Ok(Ok(ClientEvent::Closed(code, why))) => {
                return Err(format!("the shard closed the replay ({code:?}): {why}"));
            }
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}
