//! A subscriber connection: records which messages of this run arrive, and when; when the
//! server goes away it reconnects and resumes after the last position it saw, as a chat client
//! would.

use chatflow::retry::Backoff;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatflow::protocol::{Position, SubscriberFrame};
use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientReader, ConnectError, connect_reader_with};

use crate::credentials::Credentials;
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
    /// Times the connection was lost and made again.
    pub reconnects: u32,
    /// Resumes the server said it could not fully cover.
    pub partial_resumes: u32,
    /// Longest time from losing the connection to being subscribed again, µs.
    pub longest_outage_us: u64,
}

/// How a subscriber behaves beyond reading.
#[derive(Debug, Clone)]
pub struct Resume {
    /// Subscribe URL of its room, without query.
    pub url: String,
    /// Whether it reconnects after losing the connection, and for how long it keeps trying.
    pub give_up_after: Option<Duration>,
    /// Tokens, when the servers check them.
    pub credentials: Option<Arc<Credentials>>,
}

/// Connects a subscriber, which answers the server's pings; reading starts with [`listen`].
pub async fn connect(
    url: &str,
    timeout: Duration,
    credentials: Option<&Credentials>,
) -> Result<ClientReader, ConnectError> {
    let auth = credentials.map(Credentials::subscriber_header);
    let headers = crate::credentials::headers(auth.as_deref());
    connect_reader_with(url, timeout, &headers).await
}

/// The URL that resumes after `last`, or the plain one before any message was seen.
fn resume_url(url: &str, last: Option<Position>) -> String {
    match last {
        Some(p) => format!("{url}?after={p}"),
        None => url.to_owned(),
    }
}

/// Reads events until `stop` fires, counting each into `counter`; reconnects when the
/// connection is lost, if `resume` allows.
pub async fn listen(
    mut reader: ClientReader,
    room: RoomId,
    run: Arc<str>,
    t0: Instant,
    counter: Arc<AtomicU64>,
    stop: CancellationToken,
    resume: Resume,
) -> Received {
    let mut out = Received {
        room,
        ..Default::default()
    };
    let mut last: Option<Position> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return out,
            ev = reader.next() => ev,
        };
        let lost = match ev {
            Ok(ClientEvent::Text(b)) => {
                let e = match serde_json::from_slice::<SubscriberFrame>(&b) {
                    Ok(SubscriberFrame::Event(e)) => e,
                    Ok(SubscriberFrame::Recovery(notice)) => {
                        if !notice.recovered {
                            out.partial_resumes += 1;
                        }
                        continue;
                    }
                    Ok(SubscriberFrame::Presence(_)) | Err(_) => continue,
                };
                last = e.position.or(last);
                if let Some(seq) = e.client_message_id.and_then(|id| seq_of(&run, &id)) {
                    out.seqs.push(seq);
                    out.at_us.push(t0.elapsed().as_micros() as u64);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Ok(ClientEvent::Binary(_)) => continue,
            Ok(ClientEvent::Closed(code, reason)) => {
                format!("closed by the server ({code:?}): {reason}")
            }
            Err(e) => e.to_string(),
        };
        let Some(limit) = resume.give_up_after else {
            out.ended = Some(lost);
            return out;
        };
        let down = Instant::now();
        let mut pause = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        reader = loop {
            tokio::select! {
                _ = stop.cancelled() => return out,
                _ = tokio::time::sleep(pause.next_delay()) => {}
            }
            let url = resume_url(&resume.url, last);
            match connect(&url, Duration::from_secs(5), resume.credentials.as_deref()).await {
                Ok(r) => break r,
                Err(e) if down.elapsed() > limit => {
                    out.ended = Some(format!("{lost}; gave up reconnecting: {e}"));
                    return out;
                }
                Err(_) => {}
            }
        };
        out.reconnects += 1;
        out.longest_outage_us = out.longest_outage_us.max(down.elapsed().as_micros() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_names_the_last_position_seen() {
        let url = "ws://h:8081/subscribe/3";
        assert_eq!(resume_url(url, None), url);
        let p = Position {
            sequence: 42,
            index: 7,
        };
        assert_eq!(
            resume_url(url, Some(p)),
            "ws://h:8081/subscribe/3?after=42-7"
        );
    }
}
