//! What the autoscalers measure on the pods themselves, from their metrics port: the chat
//! messages per second each room broadcasts (every Ready shard pod's
//! `chatflow_consumer_room_broadcasts_total`), and the producer pods' open connections and
//! publish rate (`chatflow_producer_connections` plus `chatflow_edge_subscribers`,
//! `chatflow_producer_published_total`). A rate is
//! the growth since the reading kept from an earlier measurement of the same pod; a pod read for
//! the first time, or not answering, gives no rate yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chatflow::rooms::RoomId;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::autoscale::producers::ProducerLoad;
use crate::crd::ChatRoomSet;
use crate::desired::{METRICS_PORT, Plan, consumer_selector, producer_selector};

/// The per-room counter of chat messages a shard broadcast.
const METRIC: &str = "chatflow_consumer_room_broadcasts_total";
/// A producer pod's open WebSockets of senders.
const CONNECTIONS: &str = "chatflow_producer_connections";
/// A producer pod's subscribers on its edge.
const EDGE_SUBSCRIBERS: &str = "chatflow_edge_subscribers";
/// A producer pod's chat messages published.
const PUBLISHED: &str = "chatflow_producer_published_total";
/// How long a shard pod's metrics may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest metrics page read: a shard's page grows by a few lines per room.
const SCRAPE_MAX_BYTES: usize = 8 << 20;
/// Shortest window a rate is taken over: a reading younger than this is kept for the next one,
/// so reconciles close together do not measure a second's noise.
const MIN_WINDOW: Duration = Duration::from_secs(5);

/// The last reading of each set's shard pods, and of its producer pods' publish counters.
#[derive(Default)]
pub struct Rates {
    readings: Mutex<HashMap<String, HashMap<String, Reading>>>,
    published: Mutex<HashMap<String, Published>>,
}

/// When each producer pod was read last, by uid, and its publish counter then.
type Published = HashMap<String, (Instant, u64)>;

#[derive(Clone)]
struct Reading {
    at: Instant,
    counts: HashMap<RoomId, u64>,
}

/// One pod to read, with the index of its shard (0 for producer pods).
struct Target {
    uid: String,
    ip: String,
    shard: usize,
}

impl Rates {
    /// Each room of `plan` with its rate, None where it is not measured. A shard without a
    /// Ready pod broadcasts nothing: its rooms measure 0.
    pub async fn measure(
        &self,
        client: &Client,
        crs: &ChatRoomSet,
        plan: &Plan,
        concurrency: usize,
    ) -> HashMap<RoomId, Option<f64>> {
        let mut rates: HashMap<RoomId, Option<f64>> =
            plan.rooms.iter().map(|r| (r, None)).collect();
        let set = &super::key(crs);
        let selector = consumer_selector(&crs.name_any());
        let which = |w: &str| plan.shards.iter().position(|s| s.name == w);
        let Some(read) = read_pods(client, crs, &selector, which, concurrency).await else {
            return rates;
        };
        for (i, shard) in plan.shards.iter().enumerate() {
            if !read.iter().any(|(t, _)| t.shard == i) {
                rates.extend(shard.rooms.iter().map(|r| (r, Some(0.0))));
            }
        }
        let read = read.into_iter().map(|(t, page)| {
            let reading = page.map(|(at, page)| Reading {
                at,
                counts: parse(&page),
            });
            (t, reading)
        });
        let mut readings = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        let before = readings.remove(set).unwrap_or_default();
        let mut kept = HashMap::new();
        let mut sums: HashMap<usize, Option<HashMap<RoomId, f64>>> = HashMap::new();
        for (t, now) in read {
            let earlier = before.get(&t.uid);
            let rate = match (&now, earlier) {
                (Some(now), Some(earlier)) => per_second(earlier, now),
                _ => None,
            };
            let sum = sums.entry(t.shard).or_insert_with(|| Some(HashMap::new()));
            match (rate, sum.as_mut()) {
                (Some(rate), Some(sum)) => {
                    for (room, r) in rate {
                        *sum.entry(room).or_default() += r;
                    }
                }
                _ => *sum = None,
            }
            let keep = match (now, earlier) {
                (Some(now), Some(earlier)) if now.at.duration_since(earlier.at) < MIN_WINDOW => {
                    Some(earlier.clone())
                }
                (now, _) => now,
            };
            if let Some(k) = keep {
                kept.insert(t.uid, k);
            }
        }
        readings.insert(set.to_owned(), kept);
        for (shard, sum) in sums {
            let Some(sum) = sum else { continue };
            for room in plan.shards[shard].rooms.iter() {
                rates.insert(room, Some(sum.get(&room).copied().unwrap_or(0.0)));
            }
        }
        rates
    }

    /// The producer pods' open connections and publish rate. No Ready pod carries nothing.
    pub async fn measure_producers(
        &self,
        client: &Client,
        crs: &ChatRoomSet,
        plan: &Plan,
        concurrency: usize,
    ) -> ProducerLoad {
        let set = &super::key(crs);
        let unknown = ProducerLoad {
            connections: None,
            rate: None,
        };
        let selector = producer_selector(&crs.name_any(), &plan.producer);
        let Some(read) = read_pods(client, crs, &selector, |_| Some(0), concurrency).await else {
            return unknown;
        };
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let before = published.remove(set).unwrap_or_default();
        let mut kept = HashMap::new();
        let mut load = ProducerLoad {
            connections: Some(0),
            rate: Some(0.0),
        };
        for (t, page) in read {
            let Some((at, page)) = page else {
                load = unknown;
                continue;
            };
            // Senders and edge subscribers alike hold a socket and a task; a pod without the
            // edge has no subscriber series.
            let connections = sample(&page, CONNECTIONS)
                .map(|c| c + sample(&page, EDGE_SUBSCRIBERS).unwrap_or(0));
            let count = sample(&page, PUBLISHED);
            load.connections = load.connections.zip(connections).map(|(a, b)| a + b);
            let rate = match (count, before.get(&t.uid)) {
                (Some(now), Some(&(then, was))) if at > then && now >= was => {
                    Some((now - was) as f64 / at.duration_since(then).as_secs_f64())
                }
                _ => None,
            };
            load.rate = load.rate.zip(rate).map(|(a, b)| a + b);
            let keep = match before.get(&t.uid) {
                Some(&(then, was)) if at.duration_since(then) < MIN_WINDOW => Some((then, was)),
                _ => count.map(|c| (at, c)),
            };
            if let Some(k) = keep {
                kept.insert(t.uid, k);
            }
        }
        published.insert(set.to_owned(), kept);
        load
    }

    /// Drops what is kept of `set`'s pods.
    pub fn forget(&self, set: &str) {
        self.readings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(set);
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(set);
    }
}

/// Each Ready pod matching `selector` whose workload `which` places, with its metrics page and
/// when it was asked for (None where it did not answer); None when the pods cannot be listed.
async fn read_pods(
    client: &Client,
    crs: &ChatRoomSet,
    selector: &str,
    which: impl Fn(&str) -> Option<usize>,
    concurrency: usize,
) -> Option<Vec<(Target, Option<(Instant, String)>)>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &crs.namespace().unwrap_or_default());
    let pods = match api.list(&ListParams::default().labels(selector)).await {
        Ok(pods) => pods.items,
        Err(e) => {
            let set = super::key(crs);
            tracing::warn!(set, selector, error = %e, "pods not listed: their load is not measured");
            return None;
        }
    };
    let targets: Vec<Target> = pods.iter().filter_map(|p| target(p, &which)).collect();
    let read = futures::stream::iter(targets)
        .map(|t| async move {
            let at = Instant::now();
            let page = scrape(&t.ip).await.map(|page| (at, page));
            (t, page)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    Some(read)
}

/// The pod to read, if it is Ready and `which` places its workload (a shard's index).
fn target(pod: &Pod, which: impl Fn(&str) -> Option<usize>) -> Option<Target> {
    let workload = pod.labels().get("chatflow.dev/workload")?;
    let shard = which(workload)?;
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(Target {
        uid: pod.uid()?,
        ip: status.pod_ip.clone()?,
        shard,
    })
}

/// Each room's rate between two readings of one pod; None when a counter went back (the
/// container restarted) or the readings are at the same instant.
fn per_second(earlier: &Reading, now: &Reading) -> Option<HashMap<RoomId, f64>> {
    let secs = now.at.duration_since(earlier.at).as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    now.counts
        .iter()
        .map(|(&room, &count)| {
            let was = earlier.counts.get(&room).copied().unwrap_or(0);
            let grew = count.checked_sub(was)?;
            Some((room, grew as f64 / secs))
        })
        .collect()
}

/// A pod's metrics page, or None when it does not answer in time.
async fn scrape(ip: &str) -> Option<String> {
    let authority = if ip.contains(':') {
        format!("[{ip}]:{METRICS_PORT}")
    } else {
        format!("{ip}:{METRICS_PORT}")
    };
    match chatflow::http::get(&authority, "/metrics", SCRAPE_TIMEOUT, SCRAPE_MAX_BYTES).await {
        Ok(r) if r.status().is_success() => Some(String::from_utf8_lossy(r.body()).into_owned()),
        Ok(r) => {
            tracing::debug!(%authority, status = %r.status(), "shard metrics refused");
            None
        }
        Err(e) => {
            tracing::debug!(%authority, error = %e, "shard metrics not read");
            None
        }
    }
}

/// The value of an unlabelled series of a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        Some(v as u64)
    })
}

/// The per-room counters of a Prometheus text page.
fn parse(page: &str) -> HashMap<RoomId, u64> {
    page.lines()
        .filter_map(|line| {
            let labels = line.strip_prefix(METRIC)?.strip_prefix('{')?;
            let (labels, value) = labels.split_once('}')?;
            let room = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("room=\""))?
                .strip_suffix('"')?
                .parse()
                .ok()?;
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some((room, value as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_room_counters_are_read_from_a_metrics_page() {
        let page = "# HELP chatflow_consumer_room_broadcasts Chat messages broadcast, per room\n\
            # TYPE chatflow_consumer_room_broadcasts counter\n\
            chatflow_consumer_room_broadcasts_total{room=\"7\"} 1500\n\
            chatflow_consumer_room_broadcasts_total{room=\"8\"} 0\n\
            chatflow_consumer_broadcasts_total 1500\n";
        assert_eq!(parse(page), HashMap::from([(7, 1500), (8, 0)]));
        let producer = "chatflow_producer_connections 42\n\
            chatflow_producer_connections_refused_total 3\n\
            chatflow_producer_published_total 1.2e3\n";
        assert_eq!(sample(producer, CONNECTIONS), Some(42));
        assert_eq!(sample(producer, PUBLISHED), Some(1_200));
        assert_eq!(sample(producer, "chatflow_producer_missing"), None);
    }

    #[test]
    fn a_rate_is_the_growth_over_the_window_and_a_restart_measures_nothing() {
        let t0 = Instant::now();
        let earlier = Reading {
            at: t0,
            counts: HashMap::from([(7, 100)]),
        };
        let now = Reading {
            at: t0 + Duration::from_secs(10),
            counts: HashMap::from([(7, 1_100), (8, 50)]),
        };
        let r = per_second(&earlier, &now).unwrap();
        assert_eq!((r[&7], r[&8]), (100.0, 5.0));
        let restarted = Reading {
            at: t0 + Duration::from_secs(10),
            counts: HashMap::from([(7, 3)]),
        };
        assert!(per_second(&earlier, &restarted).is_none());
    }
}
