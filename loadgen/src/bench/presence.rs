//! `bench presence`: one room of many members (100,000 by default) entered through several
//! presence instances sharing one Redis, as producer pods would: how fast joins and leaves
//! reach the store's roster, what the room costs the store, and how long a roster page takes
//! to read, each beside the cheapest raw Redis writes and reads of the same users in the same
//! run. A watcher on one instance counts the presence frames the storm costs a subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chatflow_fanout::presence::{Presence, PresenceOptions};
use clap::Args;
use hdrhistogram::Histogram;
use prometheus_client::registry::Registry;
use rand::Rng;

use super::figure;

/// The room the members enter.
const ROOM: u32 = 1;

/// Options of `bench presence`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Members of the room, one connection each.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Presence instances (pods) the members are spread over.
    #[arg(long, default_value_t = 4)]
    pub pods: usize,
    /// Roster pages read for the latency figures.
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    /// Users per roster page.
    #[arg(long, default_value_t = 100)]
    pub page: u64,
    /// Seconds a member lasts without a refresh (PRESENCE_TTL_SECS); instances refresh every
    /// quarter of it.
    #[arg(long, default_value_t = 20)]
    pub ttl_secs: u64,
    /// Seconds the store's CPU is measured for while the members stay and nothing changes.
    #[arg(long, default_value_t = 10)]
    pub idle_seconds: u64,
    /// The Redis to measure against (its keys are removed afterwards).
    #[arg(long, env = "CHATFLOW_REDIS_URL")]
    pub store_url: Option<String>,
}

/// Type of the store connection the benchmark reads and cleans up with.
type Conn = redis::aio::MultiplexedConnection;

/// The raw Redis figures: the same users written and read as plainly as Redis allows.
struct Baseline {
    writes_per_sec: f64,
    bytes: u64,
    query_us: Histogram<u64>,
}

/// The presence figures.
struct Measured {
    joins_per_sec: f64,
    leaves_per_sec: f64,
    bytes: u64,
    idle_cpu: f64,
    query_us: Histogram<u64>,
    frames: u64,
    largest_frame: u64,
}

/// Runs the benchmark.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let Some(url) = o.store_url.clone() else {
        bail!(
            "bench presence needs a Redis: --store-url redis://HOST:PORT (or CHATFLOW_REDIS_URL)"
        );
    };
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to the store")?;
    println!(
        "bench presence: {} members in one room over {} instances, store {url}",
        o.members, o.pods
    );
    let base = baseline(&o, &mut conn).await?;
    let m = measure(&o, &url, &mut conn).await?;
    report(&o, &base, &m);
    Ok(())
}

/// A sorted set of users and a hash of names, pipelined a thousand at a time, and pages of them
/// read back.
async fn baseline(o: &Options, conn: &mut Conn) -> anyhow::Result<Baseline> {
    let raw = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let (users, names) = (format!("{raw}:users"), format!("{raw}:names"));
    let started = Instant::now();
    for chunk in (0..o.members).collect::<Vec<_>>().chunks(1_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("ZADD")
                .arg(&users)
                .arg(*i)
                .arg(format!("member-{i}"))
                .ignore();
            pipe.cmd("HSET")
                .arg(&names)
                .arg(format!("member-{i}"))
                .arg(format!("Member {i}"))
                .ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    let writes_per_sec = o.members as f64 / started.elapsed().as_secs_f64();
    let bytes = memory(conn, &[&users, &names]).await?;
    let mut query_us = histogram();
    let mut rng = rand::rng();
    for _ in 0..o.queries {
        let offset = rng.random_range(0..o.members.max(1));
        let asked = Instant::now();
        let page: Vec<String> = redis::cmd("ZRANGE")
            .arg(&users)
            .arg(offset)
            .arg(offset + o.page - 1)
            .query_async(conn)
            .await?;
        if !page.is_empty() {
            let _: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&names)
                .arg(&page)
                .query_async(conn)
                .await?;
        }
        query_us.record(asked.elapsed().as_micros() as u64)?;
    }
    let () = redis::cmd("DEL")
        .arg(&users)
        .arg(&names)
        .query_async(conn)
        .await?;
    Ok(Baseline {
        writes_per_sec,
        bytes,
        query_us,
    })
}

/// The members entered through the instances (as pods would), kept, queried and let go.
async fn measure(o: &Options, url: &str, conn: &mut Conn) -> anyhow::Result<Measured> {
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let opts = PresenceOptions {
        url: Some(url.to_owned()),
        ttl_secs: o.ttl_secs,
        key_prefix: prefix.clone(),
        timeout_ms: 10_000,
        ..PresenceOptions::default()
    };
    let pods: Vec<Presence> = (0..o.pods.max(1))
        .map(|_| {
            Presence::start(&opts, &mut Registry::default()).map(|p| p.expect("presence is on"))
        })
        .collect::<Result<_, _>>()?;
    let mut feed = pods[0].watch(ROOM);
    let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let frames = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(f) = feed.next().await {
                seen.0.fetch_add(1, Ordering::Relaxed);
                seen.1.fetch_max(f.len() as u64, Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let here: Vec<_> = (0..o.members)
        .map(|i| {
            let pod = &pods[i as usize % pods.len()];
            pod.enter(ROOM, format!("member-{i}"), Some(format!("Member {i}")))
        })
        .collect();
    reach(&pods[0], o.members).await?;
    let joins_per_sec = o.members as f64 / started.elapsed().as_secs_f64();

    let keys: Vec<String> = ["conns", "owner", "refs", "users", "names"]
        .iter()
        .map(|k| format!("{prefix}:{{{ROOM}}}:presence:{k}"))
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let bytes = memory(conn, &key_refs).await?;

    // What keeping the members costs the store while nothing changes: each instance refreshes
    // its connections every quarter of the expiry.
    let cpu_before = store_cpu(conn).await?;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let idle_cpu = (store_cpu(conn).await? - cpu_before) / o.idle_seconds as f64;

    let mut query_us = histogram();
    let mut rng = rand::rng();
    for _ in 0..o.queries {
        let offset = rng.random_range(0..o.members.max(1));
        let asked = Instant::now();
        let roster = pods[1 % pods.len()].roster(ROOM, offset, o.page).await?;
        query_us.record(asked.elapsed().as_micros() as u64)?;
        if roster.count != o.members {
            bail!(
                "the roster counted {} of {} members",
                roster.count,
                o.members
            );
        }
    }

    let started = Instant::now();
    drop(here);
    reach(&pods[0], 0).await?;
    let leaves_per_sec = o.members as f64 / started.elapsed().as_secs_f64();
    // One more interval, for the frame of the last leaves.
    tokio::time::sleep(Duration::from_millis(opts.diff_interval_ms + 200)).await;
    for p in &pods {
        p.close().await;
    }
    frames.abort();
    let () = redis::cmd("DEL").arg(&keys).query_async(conn).await?;
    Ok(Measured {
        joins_per_sec,
        leaves_per_sec,
        bytes,
        idle_cpu,
        query_us,
        frames: seen.0.load(Ordering::Relaxed),
        largest_frame: seen.1.load(Ordering::Relaxed),
    })
}

fn report(o: &Options, base: &Baseline, m: &Measured) {
    let raw = Some(("raw writes", base.writes_per_sec));
    println!("  members reaching and leaving the roster (baseline: raw pipelined ZADD+HSET):");
    figure("joins per second", m.joins_per_sec, "/s", raw);
    figure("leaves per second", m.leaves_per_sec, "/s", raw);
    let per = |bytes: u64| bytes as f64 / o.members.max(1) as f64;
    println!("  store memory for the room:");
    figure(
        "bytes per member",
        per(m.bytes),
        "B",
        Some(("raw users+names", per(base.bytes))),
    );
    println!(
        "    {:.1} MiB for {} members (raw: {:.1} MiB)",
        m.bytes as f64 / 1_048_576.0,
        o.members,
        base.bytes as f64 / 1_048_576.0
    );
    println!(
        "  store CPU keeping them (refreshed every {} s, nothing changing): {:.1}% of a core",
        o.ttl_secs / 4,
        m.idle_cpu * 100.0
    );
    println!(
        "  roster page of {} at a random offset (count included):",
        o.page
    );
    for (name, q) in [("p50", 50.0), ("p99", 99.0)] {
        figure(
            &format!("latency {name}"),
            m.query_us.value_at_percentile(q) as f64,
            "us",
            Some((
                "raw ZRANGE+HMGET",
                base.query_us.value_at_percentile(q) as f64,
            )),
        );
    }
    println!(
        "  a watcher's presence frames over the whole run: {} (largest {} bytes), for {} joins and {} leaves",
        m.frames, m.largest_frame, o.members, o.members
    );
}

/// CPU seconds the store has used (user and system).
async fn store_cpu(conn: &mut Conn) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_sys") + field("used_cpu_user"))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// Waits until the roster counts `n`.
async fn reach(p: &Presence, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if p.roster(ROOM, 0, 1).await?.count == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the roster did not reach {n} members in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes the store holds for `keys`.
async fn memory(conn: &mut Conn, keys: &[&str]) -> anyhow::Result<u64> {
    let mut total = 0;
    for key in keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(conn)
            .await?;
        total += used.unwrap_or(0);
    }
    Ok(total)
}
