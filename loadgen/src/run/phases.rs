//! A run's two sending phases: a fixed warm-up, then the measured phase, closed loop (a window
//! per connection) or open loop (a schedule per connection).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatflow::rooms::{RoomId, RoomRange};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;

use super::{CONNECT_TIMEOUT, Run, RunError, fill};
use crate::sender::{self, Schedule, SendRecord, SenderSpec};
use crate::workload;

/// Open loop: the first message is due this long after every connection is open, so starting the
/// senders' tasks is not charged to it.
const OPEN_LOOP_LEAD: Duration = Duration::from_millis(200);

/// Sender ids of the warm-up connections start here, apart from the measured ones.
const WARMUP_SENDER_IDS: u32 = 100_000;

/// What the measured phase sent and how long it took.
pub(super) struct Measured {
    /// One record per message.
    pub records: Vec<SendRecord>,
    /// First send to last answer.
    pub wall: Duration,
    /// Start, µs since the run's t0.
    pub start_us: u64,
}

/// Fixed connections, each with its own room and message count. Returns their records and the
/// last sequence number used.
pub(super) async fn warm_up(run: &Run<'_>) -> Result<(Vec<SendRecord>, u64), RunError> {
    let w = run.workload;
    let rooms = w.rooms;
    let mut rng = SmallRng::seed_from_u64(w.seed);
    let mut next_seq = 0u64;
    let mut plan = Vec::new();
    for c in 0..w.warmup_connections {
        let room = rooms.start() + (c % rooms.len()) as u32;
        let msgs: Vec<_> = (0..w.warmup_messages)
            .map(|_| {
                next_seq += 1;
                workload::make(&run.id, next_seq, room, &mut rng)
            })
            .collect();
        plan.push((room, msgs));
    }
    run.progress
        .phase("warm-up", w.warmup_connections as u64 * w.warmup_messages);
    let mut tasks = Vec::new();
    for (c, (room, msgs)) in plan.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(msgs.len().max(1));
        for m in msgs {
            let _ = tx.try_send(m);
        }
        drop(tx);
        let spec = spec(run, room, WARMUP_SENDER_IDS + c as u32, None);
        tasks.push(tokio::spawn(sender::run(spec, rx)));
    }
    Ok((gather(tasks).await?, next_seq))
}

/// The measured phase: one generator feeding bounded per-connection channels (closed loop), or
/// one per connection (open loop). Every connection is open before the first message is due, so
/// no message is charged for connecting. Sequence numbers continue after `last_seq`.
pub(super) async fn measured(run: &Run<'_>, last_seq: u64) -> Result<Measured, RunError> {
    let w = run.workload;
    let rooms = w.rooms;
    let per_room = w.connections_per_room.max(1);
    let senders = (rooms.len() * per_room) as u64;
    let slots: Vec<(RoomId, u64)> = rooms
        .iter()
        .flat_map(|room| std::iter::repeat_n(room, per_room))
        .zip(0..)
        .collect();
    let connected = futures::future::try_join_all(
        slots
            .iter()
            .map(|&(room, id)| sender::connect(spec(run, room, id as u32, None))),
    )
    .await
    .map_err(|e| RunError::Sender(e.to_string()))?;
    let start_us = run.t0.elapsed().as_micros() as u64
        + if w.rate.is_some() {
            OPEN_LOOP_LEAD.as_micros() as u64
        } else {
            0
        };
    run.progress.phase("main", w.messages);
    let mut txs: HashMap<RoomId, Vec<mpsc::Sender<workload::Outgoing>>> = HashMap::new();
    let mut tasks = Vec::new();
    let mut generators = Vec::new();
    for (&(room, id), mut sender) in slots.iter().zip(connected) {
        let (tx, rx) = mpsc::channel(w.window * 4);
        if let Some(rate) = w.rate {
            let schedule = Schedule {
                start_us,
                rate,
                senders,
                index: id,
            };
            sender.schedule(schedule);
            generators.push(tokio::spawn(generate_for(
                run.id.clone(),
                last_seq + 1,
                w.messages,
                schedule,
                room,
                w.seed ^ 0x5eed ^ id.rotate_left(32),
                tx,
            )));
        } else {
            txs.entry(room).or_default().push(tx);
        }
        tasks.push(tokio::spawn(async move { Ok(sender.run(rx).await) }));
    }
    let generator = w.rate.is_none().then(|| {
        tokio::spawn(generate_closed(
            run.id.clone(),
            w.messages,
            last_seq + 1,
            w.seed ^ 0x5eed,
            rooms,
            txs,
        ))
    });
    let records = gather(tasks).await?;
    if let Some(g) = generator {
        let _ = g.await;
    }
    for g in generators {
        let _ = g.await;
    }
    let end_us = records
        .iter()
        .map(|r| r.sent_us + r.latency_us)
        .max()
        .unwrap_or(start_us);
    Ok(Measured {
        records,
        wall: Duration::from_micros(end_us.saturating_sub(start_us)),
        start_us,
    })
}

/// Closed loop: draws each message's room and hands it to that room's senders in turn, each
/// channel's bound holding the generator back while the senders' windows are full.
async fn generate_closed(
    run_id: Arc<str>,
    messages: u64,
    first_seq: u64,
    seed: u64,
    rooms: RoomRange,
    txs: HashMap<RoomId, Vec<mpsc::Sender<workload::Outgoing>>>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut turn: HashMap<RoomId, usize> = HashMap::new();
    for i in 0..messages {
        let room = workload::draw_room(rooms, &mut rng);
        let msg = workload::make(&run_id, first_seq + i, room, &mut rng);
        let t = turn.entry(room).or_default();
        let senders = &txs[&room];
        *t = (*t + 1) % senders.len();
        if senders[*t].send(msg).await.is_err() {
            return;
        }
    }
}

fn spec(run: &Run<'_>, room: RoomId, id: u32, schedule: Option<Schedule>) -> SenderSpec {
    SenderSpec {
        done: run.progress.counter(),
        id,
        url: fill(&run.targets.ingest, room),
        window: run.workload.window,
        max_retries: run.workload.max_retries,
        t0: run.t0,
        connect_timeout: CONNECT_TIMEOUT,
        schedule,
        credentials: run.targets.credentials.clone(),
    }
}

/// Open loop: feeds one sender the run-wide messages g = index, index + senders, ... below
/// `messages` (sequence number `first_seq + g`), so every sender gets an equal share and a sender
/// held back by a full window never stalls the others' sources.
async fn generate_for(
    run: Arc<str>,
    first_seq: u64,
    messages: u64,
    schedule: Schedule,
    room: RoomId,
    seed: u64,
    tx: mpsc::Sender<workload::Outgoing>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let step = schedule.senders.max(1) as usize;
    for g in (schedule.index..messages).step_by(step) {
        if tx
            .send(workload::make(&run, first_seq + g, room, &mut rng))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<SendRecord>, chatflow::ws::ConnectError>>>,
) -> Result<Vec<SendRecord>, RunError> {
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(records)) => all.extend(records),
            Ok(Err(e)) => return Err(RunError::Sender(e.to_string())),
            Err(e) => return Err(RunError::Sender(e.to_string())),
        }
    }
    Ok(all)
}
