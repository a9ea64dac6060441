//! The `ChatRoomSet` custom resource: a range of chat rooms with their queues and workloads.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A set of chat rooms: one SQS FIFO queue per room, an ingest tier, and fan-out shards.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "chatflow.dev",
    version = "v1alpha1",
    kind = "ChatRoomSet",
    namespaced,
    shortname = "crs",
    status = "ChatRoomSetStatus",
    // `kubectl scale crs/NAME --replicas=N`, an HPA or a KEDA ScaledObject size the producer tier.
    scale(
        spec_replicas_path = ".spec.producer.replicas",
        status_replicas_path = ".status.producer.replicas",
        label_selector_path = ".status.producer.selector"
    ),
    printcolumn = r#"{"name":"Rooms","type":"string","jsonPath":".status.rooms"}"#,
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".status.shardCount"}"#,
    printcolumn = r#"{"name":"Queues","type":"integer","jsonPath":".status.queues.ready"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Anonymous","type":"boolean","jsonPath":".spec.auth.anonymous"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ChatRoomSetSpec {
    /// The rooms this set serves, inclusive; each gets its own FIFO queue.
    pub rooms: RoomsSpec,
    /// How the room queues are named, where they live and how they behave.
    #[serde(default)]
    pub queues: QueuesSpec,
    /// The ingest tier (WebSocket producer).
    pub producer: ProducerSpec,
    /// The fan-out tier (one consumer Deployment per shard of rooms).
    pub consumer: ConsumerSpec,
    /// Prefix of the SERVER_ID given to each workload; defaults to the set's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub server_id_prefix: Option<String>,
    /// One public address for sending and subscribing: an Ingress in front of the producer
    /// Service, whose pods serve both `/chat/{roomId}` and `/subscribe/{roomId}` (the edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Who may send and subscribe: the keys tokens are checked with, or `anonymous: true`.
    /// Required, so that a set is never open to everyone by omission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Where room history for resumes is kept: each shard's memory (the default), or a Redis
    /// store outside the pods that outlives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistorySpec>,
}

/// Room history: what a subscriber that reconnects with `?after=` gets back.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistorySpec {
    /// `memory`: each shard keeps its rooms' recent events, lost with the pod; `redis`: the
    /// shards append every batch to a Redis (or Valkey, ElastiCache, MemoryDB) stream per room
    /// before deleting it from the queue, and answer resumes from it after any restart.
    #[serde(default)]
    pub store: HistoryStore,
    /// The store's URL, `redis://HOST:PORT` or `rediss://HOST:PORT` (TLS), without a password;
    /// a URL with credentials belongs in a Secret (`urlSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret key holding the store's URL (`rediss://:PASSWORD@HOST:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<KeyRef>,
    /// Events kept per room in the store (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_length: Option<u32>,
    /// Seconds an event is kept in the store (default 86400); a room quiet for longer is
    /// forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2592000))]
    pub max_age_seconds: Option<u32>,
}

/// Where room history lives.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStore {
    /// Each shard's memory.
    #[default]
    Memory,
    /// A Redis-protocol store.
    Redis,
}

/// Token checking on the public routes (the producer pods: `/chat` and the edge's
/// `/subscribe`). Keys come from a Secret or ConfigMap in the set's namespace, mounted into the
/// pods, never from the spec itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Serve without identity: anyone who reaches the Services may send as any user and read
    /// any room. Only with no keys.
    #[serde(default)]
    pub anonymous: bool,
    /// Secret key holding the HS256 secret tokens are signed with (at least 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<KeyRef>,
    /// ConfigMap key holding a JWKS document (RS256/ES256 public keys); the pods re-read it as
    /// the kubelet updates it, so keys rotate without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_config_map_ref: Option<KeyRef>,
    /// The `iss` tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The `aud` tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Origins browser pages may connect from (`https://chat.example.com`); none: only pages
    /// served from the host they connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

/// One key of a Secret or ConfigMap in the set's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct KeyRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The Ingress in front of the edge (producer) Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name clients use (one rule, every room under it).
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// IngressClass (for example `alb` or `nginx`); the cluster's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret with the host's TLS certificate; clients then use wss://.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Annotations for the ingress controller: WebSocket idle timeouts, stickiness, scheme.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// An inclusive range of room ids.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RoomsSpec {
    /// First room id (at least 1).
    #[schemars(range(min = 1))]
    pub start: u32,
    /// Last room id (at least start).
    #[schemars(range(min = 1))]
    pub end: u32,
}

/// What happens to the queues when the set is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the queues and their messages.
    #[default]
    Retain,
    /// Delete the queues.
    Delete,
}

/// How producers lay chat messages into SQS messages.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// One TaskMessage per SQS message, the original format.
    Single,
    /// Consecutive messages of a room share an SQS message: fewer requests, more throughput.
    #[default]
    Envelope,
}

/// How a set's rooms are laid onto SQS FIFO queues.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum QueueLayout {
    /// A queue per room: a busy room's throughput is its queue's alone.
    #[default]
    PerRoom,
    /// Blocks of `roomsPerBucket` consecutive rooms share a queue, a bucket one message group:
    /// quiet rooms share envelopes, sends, receives and deletes.
    Buckets,
}

impl From<Packing> for chatflow::envelope::Packing {
    fn from(p: Packing) -> Self {
        match p {
            Packing::Single => chatflow::envelope::Packing::Single,
            Packing::Envelope => chatflow::envelope::Packing::Envelope,
        }
    }
}

/// Queue settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuesSpec {
    /// Queue-name prefix; queues are named {prefix}room-{id}.fifo, or
    /// {prefix}rooms-{first}-{last}.fifo with buckets (at most 80 characters).
    /// Default: derived from the set's namespace and name ({namespace}_{name}_), so sets never
    /// share queues by accident. A queue is tagged with the set that created it, and a set never
    /// adopts, changes or deletes a queue tagged for another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// AWS region of the queues; the operator's AWS_REGION when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// SQS endpoint override (LocalStack); the operator's AWS_ENDPOINT_URL or AWS when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// SQS high-throughput FIFO mode (per-group deduplication and throughput limits).
    #[serde(default)]
    pub high_throughput: bool,
    /// Seconds a received message stays hidden before it is redelivered.
    #[serde(default = "default_visibility")]
    #[schemars(range(min = 0, max = 43200))]
    pub visibility_timeout_seconds: u32,
    /// Seconds an unconsumed message is kept.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 60, max = 1209600))]
    pub retention_seconds: u32,
    /// Retain (default) keeps the queues when the set is deleted; Delete removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// envelope (default) packs consecutive messages of a room into one SQS message; single
    /// sends one TaskMessage per SQS message. Consumers read both.
    #[serde(default)]
    pub packing: Packing,
    /// perRoom (default) gives every room a queue of its own; buckets lays blocks of
    /// `roomsPerBucket` consecutive rooms, counted from `rooms.start`, onto one queue each
    /// ({prefix}rooms-{first}-{last}.fifo), a bucket one message group: each room keeps its
    /// order (the bucket's) and deduplication while quiet rooms share envelopes and requests,
    /// and a bucket delivers one batch at a time. Shards own whole buckets: roomsPerShard is
    /// rounded up to a multiple of roomsPerBucket. Growing `rooms.end` adds buckets; changing
    /// the layout, roomsPerBucket or `rooms.start` moves rooms to other queues.
    #[serde(default)]
    pub layout: QueueLayout,
    /// With layout buckets: consecutive rooms per queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 100000))]
    pub rooms_per_bucket: Option<u32>,
    /// Take a queue that exists without an owner tag (made by hand, or by another tool) as this
    /// set's: it is then tagged, reconfigured and, under Delete, deleted with the set. Off, such
    /// a queue is reported in status and left alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_untagged: bool,
}

impl Default for QueuesSpec {
    fn default() -> Self {
        QueuesSpec {
            prefix: None,
            region: None,
            endpoint: None,
            high_throughput: false,
            visibility_timeout_seconds: default_visibility(),
            retention_seconds: default_retention(),
            deletion_policy: DeletionPolicy::Retain,
            packing: Packing::Envelope,
            layout: QueueLayout::PerRoom,
            rooms_per_bucket: None,
            adopt_untagged: false,
        }
    }
}

fn default_visibility() -> u32 {
    30
}
fn default_retention() -> u32 {
    3600
}
fn default_producer_replicas() -> i32 {
    2
}
fn default_rooms_per_shard() -> u32 {
    10
}
fn default_pollers() -> u32 {
    20
}

/// The ingest tier.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerSpec {
    /// Container image of chatflow-producer.
    pub image: String,
    /// Producer replicas (stateless; any number serves every room).
    #[serde(default = "default_producer_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Compute resources of each producer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables (for example MAX_CONNECTIONS or BATCH_LINGER_US).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Size the tier from the connections and publish rate its pods report, between a minimum
    /// and a maximum, instead of from replicas (leave an HPA or KEDA off the set then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ProducerAutoscaling>,
}

/// How the operator sizes the producer tier from load.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerAutoscaling {
    /// Fewest producer pods.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most producer pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Open WebSockets (senders and edge subscribers) one pod is sized for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_connections_per_pod: Option<u64>,
    /// Chat messages per second one pod is sized to publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_messages_per_second_per_pod: Option<u64>,
    /// Seconds the load must fit fewer pods before the tier scales down.
    #[serde(default = "default_scale_down_cooldown")]
    #[schemars(range(max = 86400))]
    pub scale_down_cooldown_seconds: u32,
}

/// What the producer autoscaler decided last, and why.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerAutoscalingStatus {
    /// Producer pods the autoscaler wants.
    pub replicas: i32,
    /// The measurement and targets behind the last change, or why nothing changes.
    pub reason: String,
    /// When the pod count last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Since when the load fits fewer pods (RFC 3339), while the cooldown runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_since: Option<String>,
}

/// The fan-out tier.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Container image of chatflow-consumer.
    pub image: String,
    /// Rooms per consumer shard; each shard is one Deployment of one replica.
    #[serde(default = "default_rooms_per_shard")]
    #[schemars(range(min = 1))]
    pub rooms_per_shard: u32,
    /// Concurrent long polls per shard (CONSUMER_POLLERS); 0 gives every room its own.
    #[serde(default = "default_pollers")]
    #[schemars(range(min = 0))]
    pub pollers: u32,
    /// Compute resources of each consumer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Size and place the shards from measured load (each room's backlog and broadcast rate),
    /// between a minimum and a maximum, instead of from roomsPerShard: a room hotter than a
    /// shard's headroom gets a shard of its own, quiet rooms share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ShardAutoscaling>,
}

/// How the operator sizes the fan-out tier from load.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardAutoscaling {
    /// Fewest shards.
    #[schemars(range(min = 1, max = 1000))]
    pub min_shards: u32,
    /// Most shards.
    #[schemars(range(min = 1, max = 1000))]
    pub max_shards: u32,
    /// Messages waiting in one shard's queues (visible and in flight) that make a full shard:
    /// past it the set scales up, to the shards the whole backlog needs at this much each.
    #[serde(default = "default_target_backlog")]
    #[schemars(range(min = 1))]
    pub target_backlog_per_shard: u64,
    /// Chat messages per second one shard's rooms may broadcast, measured from the shards'
    /// counters; unset, only the backlog counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_messages_per_second_per_shard: Option<u64>,
    /// Seconds a shard must stay past its target before the set is placed anew: a shard
    /// catching up after a stall broadcasts a burst that is not load.
    #[serde(default = "default_scale_up_stabilization")]
    #[schemars(range(max = 3600))]
    pub scale_up_stabilization_seconds: u32,
    /// Seconds after a scale-up before the next: new shards hold a room's backlog for their
    /// subscribers (RESUME_HOLD_SECS, 120 in operator-written pods) before they drain it.
    #[serde(default = "default_scale_up_interval")]
    #[schemars(range(max = 86400))]
    pub scale_up_interval_seconds: u32,
    /// Seconds the load must fit fewer shards before the set scales down.
    #[serde(default = "default_scale_down_cooldown")]
    #[schemars(range(max = 86400))]
    pub scale_down_cooldown_seconds: u32,
}

fn default_target_backlog() -> u64 {
    1_000
}
fn default_scale_up_stabilization() -> u32 {
    30
}
fn default_scale_up_interval() -> u32 {
    180
}
fn default_scale_down_cooldown() -> u32 {
    300
}

/// What the shard autoscaler decided last, and why.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Shards the autoscaler wants.
    pub shards: u32,
    /// The rooms of each shard wanted, as START-END in room order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<String>,
    /// The measurement and target behind the last change, or why nothing changes.
    pub reason: String,
    /// When the shard count last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Since when the load fits fewer shards (RFC 3339), while the cooldown runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_since: Option<String>,
    /// Since when a shard is past its target (RFC 3339), while the stabilization runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_since: Option<String>,
}

/// What the operator observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatRoomSetStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, QueuesReady, ProducerReady, ConsumersReady.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The room range, as START-END.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<String>,
    /// Queues wanted and ready.
    #[serde(default)]
    pub queues: QueueCounts,
    /// Number of consumer shards.
    #[serde(default)]
    pub shard_count: u32,
    /// The consumer shards.
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
    /// The producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerStatus>,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// The shard autoscaler's last decision, with spec.consumer.autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// Queue counts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct QueueCounts {
    /// Queues the spec asks for.
    pub desired: u32,
    /// Queues that exist with the wanted attributes.
    pub ready: u32,
}

/// One consumer shard.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Deployment name.
    pub name: String,
    /// Rooms owned, as START-END.
    pub rooms: String,
    /// Service subscribers connect to.
    pub service: String,
    /// Ready replicas of the Deployment.
    pub ready_replicas: i32,
    /// Messages waiting or in flight in the shard's queues, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Chat messages per second the shard broadcast over the last measurement, when known
    /// (sets with spec.consumer.autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_second: Option<u64>,
}

/// The producer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStatus {
    /// Service clients send to.
    pub service: String,
    /// Ready replicas of the Deployment.
    pub ready_replicas: i32,
    /// Replicas of the Deployment, ready or not (the scale subresource's current count).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the producer pods, for autoscalers reading the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The producer autoscaler's last decision, with spec.producer.autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ProducerAutoscalingStatus>,
}

/// Connection templates; `{roomId}` is the room.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Endpoints {
    /// WebSocket URL to send messages to.
    pub ingest: String,
    /// WebSocket URL to subscribe to, where `{shardService}` is the room's shard service
    /// (see shards, or the routing ConfigMap).
    pub subscribe: String,
    /// WebSocket URL to subscribe to any room through the edge (the producer Service), which
    /// follows the routing table itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub edge: String,
    /// Public URLs through the Ingress, when the spec asks for one: sending, then subscribing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public: Vec<String>,
}
