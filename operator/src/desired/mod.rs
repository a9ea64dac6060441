//! What a ChatRoomSet asks for: the checks the schema cannot express, and the objects and
//! queues that should exist. Pure functions, no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use chatflow::queue::QueueAttributes;
use chatflow::rooms::{Layout, QueueNaming, RoomId, RoomRange};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{ChatRoomSet, QueueLayout};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "chatflow-operator";
/// Most rooms one set may hold; a typo like end 1000000 should not create a million queues.
pub const MAX_ROOMS: usize = 10_000;
/// Most consumer shards one set may have.
pub const MAX_SHARDS: usize = 1_000;
/// Producer port.
pub const PRODUCER_PORT: i32 = 8080;
/// Consumer port.
pub const CONSUMER_PORT: i32 = 8081;
/// Metrics port of producer and consumer pods: not in their Services, which clients reach.
pub const METRICS_PORT: i32 = 9090;
/// Kubernetes object names used as DNS labels (Services) must fit in 63 characters.
const DNS_LABEL_MAX: usize = 63;

/// A consumer shard: its object name and rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Deployment and Service name.
    pub name: String,
    /// Rooms owned.
    pub rooms: RoomRange,
}

/// Everything a valid spec resolves to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rooms.
    pub rooms: RoomRange,
    /// Queue naming, with the layout.
    pub naming: QueueNaming,
    /// The queue keys (each queue's first room), in room order.
    pub queues: Vec<RoomId>,
    /// Queue attributes.
    pub attrs: QueueAttributes,
    /// Consumer shards in room order.
    pub shards: Vec<Shard>,
    /// Producer Deployment and Service name.
    pub producer: String,
    /// Producer pods: the spec's replicas, or the producer autoscaler's decision.
    pub producer_replicas: i32,
    /// Routing ConfigMap name.
    pub routing: String,
    /// NetworkPolicy of the set's pods.
    pub network_policy: String,
    /// PodDisruptionBudget of the set's consumer shards (the producer's has its name).
    pub shards_budget: String,
    /// Whether queues without an owner tag are taken as the set's.
    pub adopt_untagged: bool,
}

/// Longest derived prefix: leaves room for `room-{id}.fifo` with any room id in SQS's 80.
const DERIVED_PREFIX_MAX: usize = 40;

/// Namespace of the hash that keeps shortened derived prefixes apart.
const PREFIX_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6368_6174_666c_6f77_2d70_7265_6669_7801);

/// The set's queue-name prefix: the spec's, or one derived from namespace and name.
pub fn queue_prefix(crs: &ChatRoomSet) -> String {
    match &crs.spec.queues.prefix {
        Some(p) => p.clone(),
        None => derived_prefix(&crs.namespace().unwrap_or_default(), &crs.name_any()),
    }
}

/// `{namespace}_{name}_`: `_` cannot occur in either, so no two sets share it. A name with `.`
/// (not allowed in queue names) or a pair too long is shortened and given a hash of both.
pub fn derived_prefix(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}_{name}_");
    if plain.len() <= DERIVED_PREFIX_MAX && !name.contains('.') {
        return plain;
    }
    let hash = uuid::Uuid::new_v5(&PREFIX_NAMESPACE, format!("{namespace}/{name}").as_bytes())
        .simple()
        .to_string();
    let kept: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(DERIVED_PREFIX_MAX - 10)
        .collect();
    format!("{kept}_{}_", &hash[..8])
}

/// The owner a set's queues are tagged with: stable across deleting and re-creating the set,
/// so a set created again under the same name finds its retained queues.
pub fn queue_owner(crs: &ChatRoomSet) -> String {
    format!("{}/{}", crs.namespace().unwrap_or_default(), crs.name_any())
}

/// How the set's rooms are laid onto queues: a queue per room, or blocks of `roomsPerBucket`
/// consecutive rooms counted from the set's first room. The bucket size is the spec's, not
/// derived from the room count, so growing the set adds buckets and moves no room.
pub fn queue_layout(crs: &ChatRoomSet) -> Result<Layout, String> {
    let q = &crs.spec.queues;
    match (q.layout, q.rooms_per_bucket) {
        (QueueLayout::PerRoom, None) => Ok(Layout::PerRoom),
        (QueueLayout::PerRoom, Some(_)) => Err(
            "spec.queues.roomsPerBucket applies to layout buckets; set spec.queues.layout: buckets or leave it out".into(),
        ),
        (QueueLayout::Buckets, Some(k)) if k >= 2 => Ok(Layout::Buckets { rooms: k }),
        (QueueLayout::Buckets, Some(k)) => Err(format!(
            "spec.queues.roomsPerBucket is {k}; a bucket holds at least 2 rooms (layout perRoom gives each room its own queue)"
        )),
        (QueueLayout::Buckets, None) => {
            Err("spec.queues.layout buckets needs spec.queues.roomsPerBucket".into())
        }
    }
}

/// The shards' rooms: blocks of roomsPerShard (rounded up to whole queues), or with
/// autoscaling the autoscaler's placement.
fn shard_ranges(
    crs: &ChatRoomSet,
    rooms: RoomRange,
    naming: &QueueNaming,
) -> Result<Vec<RoomRange>, String> {
    let consumer = &crs.spec.consumer;
    if let Some(a) = &consumer.autoscaling {
        crate::autoscale::check(a)?;
        let decided = crs.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        return Ok(crate::autoscale::placement(
            a,
            decided,
            &queue_ranges(naming, rooms),
        ));
    }
    if consumer.rooms_per_shard == 0 {
        return Err("spec.consumer.roomsPerShard must be at least 1".into());
    }
    // A shard owns whole buckets: a bucket's rooms are one queue, which one poller reads.
    let per_queue = naming.layout().rooms_per_queue();
    // Clamped to the set first: a huge roomsPerShard must not overflow when rounded up.
    let per_shard = consumer
        .rooms_per_shard
        .min(rooms.len() as u32)
        .div_ceil(per_queue)
        .saturating_mul(per_queue);
    rooms.shards(per_shard).map_err(|e| e.to_string())
}

/// Producer pods: the spec's replicas, or with autoscaling the autoscaler's last decision.
fn producer_replicas(crs: &ChatRoomSet) -> Result<i32, String> {
    let producer = &crs.spec.producer;
    let Some(a) = &producer.autoscaling else {
        return Ok(producer.replicas);
    };
    crate::autoscale::producers::check(a)?;
    let decided = crs
        .status
        .as_ref()
        .and_then(|s| s.producer.as_ref())
        .and_then(|p| p.autoscaling.as_ref());
    Ok(crate::autoscale::producers::replicas(a, decided))
}

/// Each queue's rooms, in room order: a room, or a bucket's rooms within the set.
pub fn queue_ranges(naming: &QueueNaming, rooms: RoomRange) -> Vec<RoomRange> {
    let keys = naming.queue_keys(rooms);
    keys.iter()
        .enumerate()
        .map(|(i, &key)| {
            let end = keys.get(i + 1).map_or(rooms.end(), |next| next - 1);
            RoomRange::new(key.max(rooms.start()), end).expect("queue keys are in room order")
        })
        .collect()
}

/// Resolves a spec, or says in one readable sentence why it cannot be served.
pub fn plan(crs: &ChatRoomSet) -> Result<Plan, String> {
    let name = crs.name_any();
    let spec = &crs.spec;
    let rooms =
        RoomRange::new(spec.rooms.start, spec.rooms.end).map_err(|e| format!("spec.rooms: {e}"))?;
    if rooms.len() > MAX_ROOMS {
        return Err(format!(
            "spec.rooms holds {} rooms; at most {MAX_ROOMS} per ChatRoomSet",
            rooms.len()
        ));
    }
    let layout = queue_layout(crs)?;
    let naming = QueueNaming::parse(&queue_prefix(crs))
        .map_err(|e| format!("spec.queues.prefix: {e}"))?
        .with_layout(layout, rooms.start());
    naming
        .check_range(rooms)
        .map_err(|e| format!("spec.queues.prefix: {e}"))?;
    let ranges = shard_ranges(crs, rooms, &naming)?;
    if ranges.len() > MAX_SHARDS {
        return Err(format!(
            "{} rooms make {} shards; at most {MAX_SHARDS}: raise spec.consumer.roomsPerShard",
            rooms.len(),
            ranges.len()
        ));
    }
    if let Some(ingress) = &spec.ingress {
        ingress::check(ingress)?;
    }
    auth::check(spec.auth.as_ref())?;
    history::check(spec.history.as_ref())?;
    if spec.producer.image.trim().is_empty() || spec.consumer.image.trim().is_empty() {
        return Err(
            "spec.producer.image and spec.consumer.image must name container images".into(),
        );
    }
    let shards: Vec<Shard> = ranges
        .into_iter()
        .map(|r| Shard {
            name: format!("{name}-consumer-{}-{}", r.start(), r.end()),
            rooms: r,
        })
        .collect();
    if let Some(long) = shards
        .iter()
        .map(|s| &s.name)
        .find(|n| n.len() > DNS_LABEL_MAX)
    {
        return Err(format!(
            "shard name {long:?} exceeds {DNS_LABEL_MAX} characters: use a shorter ChatRoomSet name"
        ));
    }
    Ok(Plan {
        rooms,
        queues: naming.queue_keys(rooms),
        naming,
        attrs: QueueAttributes {
            visibility_timeout: Duration::from_secs(spec.queues.visibility_timeout_seconds.into()),
            retention: Duration::from_secs(spec.queues.retention_seconds.into()),
            receive_wait: Duration::from_secs(20),
            high_throughput: spec.queues.high_throughput,
        },
        shards,
        producer: format!("{name}-producer"),
        producer_replicas: producer_replicas(crs)?,
        routing: format!("{name}-routing"),
        network_policy: format!("{name}-workloads"),
        shards_budget: format!("{name}-shards"),
        adopt_untagged: spec.queues.adopt_untagged,
    })
}

/// The standard labels of an owned object.
pub fn labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "chatflow"),
        ("app.kubernetes.io/instance", instance),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/part-of", "chatflow"),
        ("app.kubernetes.io/managed-by", FIELD_MANAGER),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Label selector of a set's producer pods (`workload` is the producer Deployment's name).
pub fn producer_selector(instance: &str, workload: &str) -> String {
    format!(
        "app.kubernetes.io/instance={instance},app.kubernetes.io/component=producer,chatflow.dev/workload={workload}"
    )
}

/// Label selector of a set's consumer shards.
pub fn consumer_selector(instance: &str) -> String {
    format!(
        "app.kubernetes.io/instance={instance},app.kubernetes.io/component=consumer,app.kubernetes.io/managed-by={FIELD_MANAGER}"
    )
}

fn meta(crs: &ChatRoomSet, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: crs.namespace(),
        labels: Some(labels),
        owner_references: owner(crs).map(|o| vec![o]),
        ..Default::default()
    }
}

fn owner(crs: &ChatRoomSet) -> Option<OwnerReference> {
    crs.controller_owner_ref(&())
}

/// Where workloads reach SQS: the spec's settings, else the operator's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueLocation {
    /// Region.
    pub region: Option<String>,
    /// Endpoint override.
    pub endpoint: Option<String>,
}

impl QueueLocation {
    /// Resolves the spec's queue location over the operator's defaults.
    pub fn resolve(crs: &ChatRoomSet, defaults: &QueueLocation) -> QueueLocation {
        QueueLocation {
            region: crs
                .spec
                .queues
                .region
                .clone()
                .or_else(|| defaults.region.clone()),
            endpoint: crs
                .spec
                .queues
                .endpoint
                .clone()
                .or_else(|| defaults.endpoint.clone()),
        }
    }
}

/// Why the operator will not call the set's `spec.queues.endpoint`, if it will not. Whoever may
/// write a ChatRoomSet could otherwise make the operator call any URL with its AWS credentials
/// and read the answer in the status; only the operator's own endpoint and those its
/// administrator allowed are used.
pub fn endpoint_refusal(
    crs: &ChatRoomSet,
    defaults: &QueueLocation,
    allowed: &[String],
) -> Option<String> {
    let wanted = crs.spec.queues.endpoint.as_deref()?;
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    let ok = defaults
        .endpoint
        .iter()
        .chain(allowed)
        .any(|a| norm(a) == norm(wanted));
    (!ok).then(|| {
        format!(
            "spec.queues.endpoint {wanted:?} is not one the operator may call: \
             its administrator lists allowed endpoints in ALLOWED_SQS_ENDPOINTS \
             (chart value allowedSqsEndpoints); leave it out to use the operator's own"
        )
    })
}

/// The ingest URL template of a set.
pub fn ingest_template(crs: &ChatRoomSet, plan: &Plan) -> String {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    format!(
        "ws://{}.{ns}.svc:{PRODUCER_PORT}/chat/{{roomId}}",
        plan.producer
    )
}

/// The subscribe URL template of a set.
pub fn subscribe_template(crs: &ChatRoomSet) -> String {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    format!("ws://{{shardService}}.{ns}.svc:{CONSUMER_PORT}/subscribe/{{roomId}}")
}

/// The subscribe URL template through the edge (the producer Service), for every room.
pub fn edge_template(crs: &ChatRoomSet, plan: &Plan) -> String {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    format!(
        "ws://{}.{ns}.svc:{PRODUCER_PORT}/subscribe/{{roomId}}",
        plan.producer
    )
}

/// Where the edge reads the routing table in a producer pod.
pub const ROUTING_DIR: &str = "/etc/chatflow/routing";

pub mod auth;
pub mod disruption;
pub mod history;
pub mod ingress;
mod objects;
pub mod restricted;
pub mod sizing;

pub use objects::{
    consumer_deployment, network_policy, producer_deployment, routing_configmap, service,
};

#[cfg(test)]
pub(crate) mod tests;
