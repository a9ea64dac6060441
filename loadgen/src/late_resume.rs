//! `late-resume`: the history a room keeps when nobody listens. A subscriber sees one message
//! and leaves; a burst is sent to the room with nobody subscribed; after a wait (long enough for
//! the shard to be restarted meanwhile) the subscriber resumes after the message it saw and must
//! get the whole burst, in order, with `recovered: true`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chatflow::protocol::{BroadcastEvent, ErrorCode, Position, Reply, SubscriberFrame};
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

/// One run of the check: who it is, where it sends and subscribes.
struct Check {
    run: String,
    user: u32,
    ingest: String,
    subscribe: String,
    sender_auth: Option<String>,
    reader_auth: Option<String>,
}

impl Check {
    /// A chat message of this run.
    fn frame(&self, text: String, id: String) -> String {
        serde_json::json!({
            "userId": self.user.to_string(),
            "username": format!("user{}", self.user),
            "message": text,
            "timestamp": chatflow::protocol::now_rfc3339(),
            "messageType": "TEXT",
            "clientMessageId": id,
        })
        .to_string()
    }

    async fn sender(&self) -> anyhow::Result<(ClientReader, ClientWriter)> {
        connect_split_with(&self.ingest, CONNECT, &headers(self.sender_auth.as_deref()))
            .await
            .context("connecting to the producer")
    }

    async fn subscriber(&self, url: &str) -> anyhow::Result<ClientReader> {
        Ok(connect_reader_with(url, CONNECT, &headers(self.reader_auth.as_deref())).await?)
    }

    /// A subscriber sees one marker and leaves; its position is where the resume starts.
    async fn mark(&self) -> anyhow::Result<Position> {
        let mut first = self
            .subscriber(&self.subscribe)
            .await
            .context("subscribing")?;
        let (mut replies, mut sender) = self.sender().await?;
        // The subscriber is in its room from the 101 on; markers go until one reaches it (each
        // given 2 s).
        for k in 0..10 {
            let run = &self.run;
            let f = self.frame(format!("{run} marker {k}"), format!("{run}-m{k}"));
            send(&mut sender, &mut replies, &f).await?;
            if let Ok(seen) = tokio::time::timeout(Duration::from_secs(2), event(&mut first)).await
            {
                return seen?.position.context(
                    "the event carries no position: the room is not on a queue with positions",
                );
            }
        }
        bail!("no marker reached the subscriber")
    }

    /// Sends the burst, every message acknowledged, with nobody subscribed.
    async fn burst(&self, messages: u64) -> anyhow::Result<()> {
        let (mut replies, mut sender) = self.sender().await?;
        for seq in 1..=messages {
            let run = &self.run;
            let f = self.frame(format!("{run} {seq:06}"), format!("{run}-{seq}"));
            send(&mut sender, &mut replies, &f).await?;
        }
        Ok(())
    }

    /// Resumes after `after` at `url`: recovered, then the whole burst in order.
    async fn resume(&self, url: &str, after: Position, messages: u64) -> anyhow::Result<()> {
        let mut back = self
            .subscriber(&format!("{url}?after={after}"))
            .await
            .context("resuming")?;
        let SubscriberFrame::Recovery(notice) = serde_json::from_slice(&text(&mut back).await?)?
        else {
            bail!("the first frame of a resume is not its recovery notice");
        };
        println!(
            "resume after {after}: recovered {}, replayed {}",
            notice.recovered, notice.replayed
        );
        ensure!(notice.recovered, "the resume was answered recovered: false");
        let (mut expect, mut last) = (1, after);
        while expect <= messages {
            let ev = event(&mut back).await?;
            let position = ev.position.context("a replayed event without a position")?;
            ensure!(
                position > last,
                "event at {position} after {last}: out of order"
            );
            last = position;
            let run = &self.run;
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
        Ok(())
    }
}

/// Runs the check; an error says what the resume got wrong.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let creds = o
        .jwt_secret_file
        .as_deref()
        .map(Credentials::from_file)
        .transpose()
        .context("reading --jwt-secret-file")?;
    let room = o.room.to_string();
    let check = Check {
        run: format!("late-{}", uuid::Uuid::new_v4().simple()),
        user: Credentials::user_of(0),
        ingest: o.ingest_url.replace("{roomId}", &room),
        subscribe: o.subscribe_url.replace("{roomId}", &room),
        sender_auth: creds.as_ref().map(|c| c.sender_header(0)),
        reader_auth: creds.as_ref().map(|c| c.subscriber_header()),
    };
    let after = check.mark().await?;
    println!("saw a marker at position {after}; the subscriber left");
    check.burst(o.messages).await?;
    println!(
        "burst of {} acknowledged with nobody subscribed; resuming in {} s",
        o.messages, o.wait_secs
    );
    tokio::time::sleep(Duration::from_secs(o.wait_secs)).await;
    let resume = o
        .resume_url
        .as_deref()
        .map_or(check.subscribe.clone(), |u| u.replace("{roomId}", &room));
    check.resume(&resume, after, o.messages).await?;
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
    match serde_json::from_slice(&text(r).await?).context("a frame that is not a subscriber's")? {
        SubscriberFrame::Event(e) => Ok(e),
        SubscriberFrame::Recovery(_) => bail!("a recovery notice where an event was due"),
        SubscriberFrame::Presence(_) => bail!("a presence frame it did not ask for"),
    }
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
