//! What a ChatRoomSet asks for: the checks the schema cannot express, and the objects and
//! queues that should exist. Pure functions, no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use chatflow::queue::QueueAttributes;
use chatflow::rooms::{QueueNaming, RoomRange};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SecurityContext,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{ChatRoomSet, ConsumerSpec};

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
    /// Queue naming.
    pub naming: QueueNaming,
    /// Queue attributes.
    pub attrs: QueueAttributes,
    /// Consumer shards in room order.
    pub shards: Vec<Shard>,
    /// Producer Deployment and Service name.
    pub producer: String,
    /// Routing ConfigMap name.
    pub routing: String,
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
    let naming =
        QueueNaming::parse(&spec.queues.prefix).map_err(|e| format!("spec.queues.prefix: {e}"))?;
    naming
        .check_range(rooms)
        .map_err(|e| format!("spec.queues.prefix: {e}"))?;
    if spec.consumer.rooms_per_shard == 0 {
        return Err("spec.consumer.roomsPerShard must be at least 1".into());
    }
    let ranges = rooms
        .shards(spec.consumer.rooms_per_shard)
        .map_err(|e| e.to_string())?;
    if ranges.len() > MAX_SHARDS {
        return Err(format!(
            "{} rooms in shards of {} make {} shards; at most {MAX_SHARDS}: raise spec.consumer.roomsPerShard",
            rooms.len(),
            spec.consumer.rooms_per_shard,
            ranges.len()
        ));
    }
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
        naming,
        attrs: QueueAttributes {
            visibility_timeout: Duration::from_secs(spec.queues.visibility_timeout_seconds.into()),
            retention: Duration::from_secs(spec.queues.retention_seconds.into()),
            receive_wait: Duration::from_secs(20),
            high_throughput: spec.queues.high_throughput,
        },
        shards,
        producer: format!("{name}-producer"),
        routing: format!("{name}-routing"),
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn common_env(crs: &ChatRoomSet, loc: &QueueLocation, rooms: RoomRange) -> Vec<EnvVar> {
    let prefix = crs
        .spec
        .server_id_prefix
        .clone()
        .unwrap_or_else(|| crs.name_any());
    let mut v = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
        env("SERVER_ID", format!("{prefix}-$(POD_NAME)")),
        env("QUEUE_BACKEND", "sqs"),
        env("SQS_QUEUE_URL_PREFIX", crs.spec.queues.prefix.clone()),
        env("ROOMS_START", rooms.start().to_string()),
        env("ROOMS_END", rooms.end().to_string()),
    ];
    if let Some(r) = &loc.region {
        v.push(env("AWS_REGION", r.clone()));
    }
    if let Some(e) = &loc.endpoint {
        v.push(env("AWS_ENDPOINT_URL", e.clone()));
    }
    v
}

fn container(
    name: &str,
    image: &str,
    port: i32,
    env: Vec<EnvVar>,
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) -> Container {
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            // Server-side apply keys ports by (port, protocol); leaving it out fails the merge.
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(env),
        resources,
        readiness_probe: Some(probe("/ready")),
        liveness_probe: Some(probe("/health")),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn deployment(
    crs: &ChatRoomSet,
    name: &str,
    component: &str,
    replicas: i32,
    recreate: bool,
    container: Container,
) -> Deployment {
    let mut pod_labels = labels(&crs.name_any(), component);
    let selector_labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/instance".to_owned(), crs.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        ("chatflow.dev/workload".to_owned(), name.to_owned()),
    ]
    .into();
    pod_labels.extend(selector_labels.clone());
    Deployment {
        metadata: meta(crs, name, pod_labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels),
                match_expressions: None,
            },
            // One poller per room: a rolling update would briefly run two and split the audience.
            strategy: recreate.then(|| DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The producer Deployment.
pub fn producer_deployment(crs: &ChatRoomSet, plan: &Plan, loc: &QueueLocation) -> Deployment {
    let p = &crs.spec.producer;
    let mut env = common_env(crs, loc, plan.rooms);
    env.extend(p.env.iter().cloned());
    let c = container(
        "producer",
        &p.image,
        PRODUCER_PORT,
        env,
        p.resources.clone(),
    );
    deployment(crs, &plan.producer, "producer", p.replicas, false, c)
}

/// The Deployment of one consumer shard.
pub fn consumer_deployment(crs: &ChatRoomSet, shard: &Shard, loc: &QueueLocation) -> Deployment {
    let c: &ConsumerSpec = &crs.spec.consumer;
    let mut env = common_env(crs, loc, shard.rooms);
    env.push(self::env("CONSUMER_POLLERS", c.pollers.to_string()));
    env.extend(c.env.iter().cloned());
    let container = container(
        "consumer",
        &c.image,
        CONSUMER_PORT,
        env,
        c.resources.clone(),
    );
    deployment(crs, &shard.name, "consumer", 1, true, container)
}

/// The Service in front of a workload.
pub fn service(crs: &ChatRoomSet, name: &str, component: &str, port: i32) -> Service {
    let selector: BTreeMap<String, String> = [
        ("app.kubernetes.io/instance".to_owned(), crs.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        ("chatflow.dev/workload".to_owned(), name.to_owned()),
    ]
    .into();
    Service {
        metadata: meta(crs, name, labels(&crs.name_any(), component)),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The routing table: which shard Service serves which rooms.
pub fn routing_configmap(crs: &ChatRoomSet, plan: &Plan) -> ConfigMap {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    let routes: Vec<serde_json::Value> = plan
        .shards
        .iter()
        .map(|s| {
            serde_json::json!({
                "rooms": s.rooms.to_string(),
                "start": s.rooms.start(),
                "end": s.rooms.end(),
                "service": s.name,
                "subscribe": format!("ws://{}.{ns}.svc:{CONSUMER_PORT}/subscribe/{{roomId}}", s.name),
            })
        })
        .collect();
    let table = serde_json::json!({
        "rooms": plan.rooms.to_string(),
        "ingest": ingest_template(crs, plan),
        "shards": routes,
    });
    ConfigMap {
        metadata: meta(crs, &plan.routing, labels(&crs.name_any(), "routing")),
        data: Some(
            [(
                "routing.json".to_owned(),
                serde_json::to_string_pretty(&table).expect("routing table serializes"),
            )]
            .into(),
        ),
        ..Default::default()
    }
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

#[cfg(test)]
pub(crate) mod tests;
