//! A subscriber connection: records which messages of this run arrive, and when.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientReader, ConnectError, connect_split};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::workload::seq_of;

/// What a subscriber saw.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Room.
    pub room: RoomId,
    /// Sequence numbers in arrival order.
    pub seqs: Vec<u64>,
    /// Arrival times, µs since the run's start, aligned with `seqs`.
    pub at_us: Vec<u64>,
    /// How the stream ended early, if it did.
    pub ended: Option<String>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "clientMessageId", borrow)]
    client_message_id: Option<&'a str>,
}

/// Connects a subscriber; reading starts with [`listen`].
pub async fn connect(url: &str, timeout: Duration) -> Result<ClientReader, ConnectError> {
    Ok(connect_split(url, timeout).await?.0)
}

/// Reads events until `stop` fires or the server closes, counting each into `counter`.
pub async fn listen(
    mut reader: ClientReader,
    room: RoomId,
    run: Arc<str>,
    t0: Instant,
    counter: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Received {
    let mut out = Received {
        room,
        ..Default::default()
    };
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return out,
            ev = reader.next() => ev,
        };
        match ev {
            Ok(ClientEvent::Text(b)) => {
                let seq = serde_json::from_slice::<Event>(&b)
                    .ok()
                    .and_then(|e| e.client_message_id.and_then(|id| seq_of(&run, id)));
                if let Some(seq) = seq {
                    out.seqs.push(seq);
                    out.at_us.push(t0.elapsed().as_micros() as u64);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(ClientEvent::Binary(_)) => {}
            Ok(ClientEvent::Closed(code, reason)) => {
                out.ended = Some(format!("closed by the server ({code:?}): {reason}"));
                return out;
            }
            Err(e) => {
                out.ended = Some(e.to_string());
                return out;
            }
        }
    }
}
