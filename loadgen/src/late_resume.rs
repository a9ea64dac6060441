//! `late-resume`: the history a room keeps when nobody listens. A subscriber sees one message
//! and leaves; a burst is sent to the room with nobody subscribed; after a wait (long enough for
//! the shard to be restarted meanwhile) the subscriber resumes after the message it saw and must
//! get the whole burst, in order, with `recovered: true`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chatflow::protocol::{BroadcastEvent, ErrorCode, RecoveryNotice, Reply};
use chatflow::rooms::RoomId;
use chatflow::ws::{
    ClientEvent, ClientReader, ClientWriter, connect_reader_with, connect_split_with,
};
use clap::Args;

use crate::credentials::{Credentials, headers};

const CONNECT: Duration = Duration::from_secs(10);
const READ: Duration = Duration::from_secs(30);

/// Options of `late-resume`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Ingest URL template, e.g. ws://producer:8080/chat/{roomId}.
    #[arg(long)]
    pub ingest_url: String,
    /// Subscribe URL template, e.g. ws://producer:8080/subscribe/{roomId} (the edge).
    #[arg(long)]
    pub subscribe_url: String,
    /// Subscribe URL template of the resume (default: --subscribe-url), e.g. another edge pod
    /// than the first subscriber's, whose relay never held the room.
    #[arg(long)]
    pub resume_url: Option<String>,
    /// The room, one nobody else subscribes to during the check.
    #[arg(long)]
    pub room: RoomId,
    /// Messages in the burst.
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Seconds between the burst's last acknowledgement and the resume.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
    /// File with the HS256 secret the servers check tokens with.
    #[arg(long, env = "LOADGEN_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

/// Runs the check; an error says what the resume got wrong.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let creds = o
        .jwt_secret_file
        .as_deref()
        .map(Credentials::from_file)
        .transpose()
        .context("reading --jwt-secret-file")?;
    let sender_auth = creds.as_ref().map(|c| c.sender_header(0));
    let reader_auth = creds.as_ref().map(|c| c.subscriber_header());
    let user = Credentials::user_of(0);
    let room = o.room.to_string();
    let ingest = o.ingest_url.replace("{roomId}", &room);
    let subscribe = o.subscribe_url.replace("{roomId}", &room);
    let run = format!("late-{}", uuid::Uuid::new_v4().simple());

    let mut first = connect_reader_with(&subscribe, CONNECT, &headers(reader_auth.as_deref()))
        .await
        .context("subscribing")?;
    // The subscriber is in the room once its connection is up; a message sent now reaches it.
    let (mut replies, mut sender) =
        connect_split_with(&ingest, CONNECT, &headers(sender_auth.as_deref()))
            .await
            .context("connecting to the producer")?;
    let frame = |text: String, id: String| {
        serde_json::json!({
            "userId": user.to_string(),
            "username": format!("user{user}"),
            "message": text,
            "timestamp": chatflow::protocol::now_rfc3339(),
            "messageType": "TEXT",
            "clientMessageId": id,
        })
        .to_string()
    };
    // The subscriber is in its room from the 101 on; markers go until one reaches it (each
    // given 2 s), and its position is where the resume starts.
    let mut after = None;
    for k in 0..10 {
        let f = frame(format!("{run} marker {k}"), format!("{run}-m{k}"));
        send(&mut sender, &mut replies, &f).await?;
        if let Ok(seen) = tokio::time::timeout(Duration::from_secs(2), event(&mut first)).await {
            after = Some(seen?.position.context(
                "the event carries no position: the room is not on a queue with positions",
            )?);
            break;
        }
    }
    let after = after.context("no marker reached the subscriber")?;
    drop(first);
    println!("saw a marker at position {after}; the subscriber left");

    for seq in 1..=o.messages {
        let f = frame(format!("{run} {seq:06}"), format!("{run}-{seq}"));
        send(&mut sender, &mut replies, &f).await?;
    }
    drop((replies, sender));
    println!(
        "burst of {} acknowledged with nobody subscribed; resuming in {} s",
        o.messages, o.wait_secs
    );
    tokio::time::sleep(Duration::from_secs(o.wait_secs)).await;

    let resume = o
        .resume_url
        .as_deref()
        .map_or(subscribe.clone(), |u| u.replace("{roomId}", &room));
    let url = format!("{resume}?after={after}");
    let mut back = connect_reader_with(&url, CONNECT, &headers(reader_auth.as_deref()))
        .await
        .context("resuming")?;
    let notice: RecoveryNotice = serde_json::from_slice(&text(&mut back).await?)
        .context("the first frame of a resume is its recovery notice")?;
    println!(
        "resume after {after}: recovered {}, replayed {}",
        notice.recovered, notice.replayed
    );
    ensure!(notice.recovered, "the resume was answered recovered: false");
    let mut expect = 1;
    let mut last = after;
    while expect <= o.messages {
        let ev = event(&mut back).await?;
        let position = ev.position.context("a replayed event without a position")?;
        ensure!(
            position > last,
            "event at {position} after {last}: out of order"
        );
        last = position;
        if ev.message.starts_with(&format!("{run} marker")) {
            continue;
        }
        let seq = ev
            .message
            .strip_prefix(&format!("{run} "))
            .and_then(|s| s.parse::<u64>().ok())
            .with_context(|| format!("an event of another run: {:?}", ev.message))?;
        ensure!(seq == expect, "got message {seq} where {expect} was due");
        expect += 1;
    }
    println!(
        "late resume: all {} messages of the burst, in order",
        o.messages
    );
    Ok(())
}

/// Sends one message and waits for its acknowledgement, again after a rate limit.
async fn send(
    sender: &mut ClientWriter,
    replies: &mut ClientReader,
    frame: &str,
) -> anyhow::Result<()> {
    loop {
        sender.text(frame.as_bytes()).await?;
        sender.flush().await?;
        match serde_json::from_slice::<Reply>(&text(replies).await?)? {
            Reply::Ok(_) => return Ok(()),
            Reply::Error(e) if e.error_code == ErrorCode::RateLimited => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Reply::Error(e) => bail!("the producer refused a message: {e:?}"),
        }
    }
}

async fn event(r: &mut ClientReader) -> anyhow::Result<BroadcastEvent> {
    serde_json::from_slice(&text(r).await?).context("an event that is not a broadcast")
}

async fn text(r: &mut ClientReader) -> anyhow::Result<bytes::Bytes> {
    loop {
        match tokio::time::timeout(READ, r.next()).await {
            Err(_) => bail!("nothing arrived for {} s", READ.as_secs()),
            Ok(Ok(ClientEvent::Text(b))) => return Ok(b),
            Ok(Ok(ClientEvent::Binary(_))) => {}
            Ok(Ok(ClientEvent::Closed(code, why))) => bail!("closed ({code:?}): {why}"),
            Ok(Err(e)) => bail!("{e}"),
        }
    }
}
