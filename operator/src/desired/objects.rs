//! The owned objects of a set, as server-side apply bodies: the Deployments and Services of the
//! producer and the consumer shards, and the routing ConfigMap.

use std::collections::BTreeMap;

use chatflow::rooms::{Layout, RoomRange};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    CONSUMER_PORT, FIELD_MANAGER, METRICS_PORT, PRODUCER_PORT, Plan, QueueLocation, ROUTING_DIR,
    Shard, auth, edge_template, history, ingest_template, labels, meta, sizing,
};
use crate::crd::{ChatRoomSet, ConsumerSpec};

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
        env("SQS_QUEUE_URL_PREFIX", super::queue_prefix(crs)),
        env("ROOMS_START", rooms.start().to_string()),
        env("ROOMS_END", rooms.end().to_string()),
        // One JSON object a line is what cluster log collectors parse; a person can still read it
        // with `kubectl logs`.
        env("LOG_FORMAT", "json"),
        // Metrics stay off the Services clients reach.
        env("METRICS_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
    ];
    // Validated with the plan; every process counts buckets from its first room, which for a
    // shard is a bucket boundary.
    if let Ok(Layout::Buckets { rooms }) = super::queue_layout(crs) {
        v.push(env("QUEUE_BUCKET_ROOMS", rooms.to_string()));
    }
    if let Some(r) = &loc.region {
        v.push(env("AWS_REGION", r.clone()));
    }
    if let Some(e) = &loc.endpoint {
        v.push(env("AWS_ENDPOINT_URL", e.clone()));
    }
    v
}

/// Seconds over which a stopping producer pod closes its senders, then its edge subscribers.
const CLOSE_SPREAD_SECS: u64 = 5;

/// Seconds the services' drain may take unless the spec's env sets SHUTDOWN_GRACE_SECS.
const DEFAULT_DRAIN_SECS: i64 = 20;

/// A termination grace period longer than the container's drain, so Kubernetes does not kill
/// a pod that is still answering its senders or broadcasting what it holds.
fn grace_period(c: &Container) -> i64 {
    let drain = c
        .env
        .iter()
        .flatten()
        .rev()
        .find(|e| e.name == "SHUTDOWN_GRACE_SECS")
        .and_then(|e| e.value.as_deref()?.parse::<i64>().ok())
        .unwrap_or(DEFAULT_DRAIN_SECS);
    drain.max(0) + 10
}

/// Requests and limits for a container whose spec names none: a pod without them is the first
/// evicted and can take a node's memory.
fn default_resources() -> ResourceRequirements {
    let q = |v: &str| Quantity(v.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("100m")),
            ("memory".to_owned(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("512Mi"))])),
        ..Default::default()
    }
}

fn container(
    name: &str,
    image: &str,
    port: i32,
    env: Vec<EnvVar>,
    resources: ResourceRequirements,
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
        ports: Some(
            [("http", port), ("metrics", METRICS_PORT)]
                .map(|(name, port)| ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    // Server-side apply keys ports by (port, protocol); leaving it out fails
                    // the merge.
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .to_vec(),
        ),
        env: Some(env),
        resources: Some(resources),
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
                    // The common convention of Prometheus' Kubernetes pod discovery.
                    annotations: Some(
                        [
                            ("prometheus.io/scrape", "true".to_owned()),
                            ("prometheus.io/port", METRICS_PORT.to_string()),
                            ("prometheus.io/path", "/metrics".to_owned()),
                        ]
                        .map(|(k, v)| (k.to_owned(), v))
                        .into(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(grace_period(&container)),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    // Producers and consumers talk to SQS, never to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Ours, then the spec's; a name the spec sets replaces ours (server-side apply refuses a
/// list with one name twice).
fn with_spec_env(mut ours: Vec<EnvVar>, spec: &[EnvVar]) -> Vec<EnvVar> {
    ours.retain(|e| !spec.iter().any(|s| s.name == e.name));
    ours.extend(spec.iter().cloned());
    ours
}

/// Ingress to the set's pods: their service ports and the metrics port, nothing else. Sources
/// are not narrowed for the producer and metrics ports: clients reach the Services from
/// wherever the cluster lets them, and scrapers run in namespaces this operator cannot know.
/// When the set checks tokens, the shards' port (which checks none) admits only the set's
/// edges (producer pods) and pods labelled `chatflow.dev/shard-access: "true"`.
pub fn network_policy(crs: &ChatRoomSet, plan: &Plan) -> NetworkPolicy {
    let name = crs.name_any();
    let selector: BTreeMap<String, String> = [
        ("app.kubernetes.io/instance", name.as_str()),
        ("app.kubernetes.io/managed-by", FIELD_MANAGER),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(crs, &plan.network_policy, labels(&name, "workloads")),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(if auth::checks_tokens(crs.spec.auth.as_ref()) {
                let pods = |labels: [(&str, &str); 2]| NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(
                            labels.map(|(k, v)| (k.to_owned(), v.to_owned())).into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                vec![
                    NetworkPolicyIngressRule {
                        from: None,
                        ports: Some(vec![port(PRODUCER_PORT), port(METRICS_PORT)]),
                    },
                    NetworkPolicyIngressRule {
                        from: Some(vec![
                            pods([
                                ("app.kubernetes.io/instance", name.as_str()),
                                ("app.kubernetes.io/component", "producer"),
                            ]),
                            pods([
                                ("chatflow.dev/shard-access", "true"),
                                ("app.kubernetes.io/part-of", "chatflow"),
                            ]),
                        ]),
                        ports: Some(vec![port(CONSUMER_PORT)]),
                    },
                ]
            } else {
                vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![
                        port(PRODUCER_PORT),
                        port(CONSUMER_PORT),
                        port(METRICS_PORT),
                    ]),
                }]
            }),
            egress: None,
        }),
    }
}

/// The producer Deployment.
pub fn producer_deployment(crs: &ChatRoomSet, plan: &Plan, loc: &QueueLocation) -> Deployment {
    let p = &crs.spec.producer;
    let mut env = common_env(crs, loc, plan.rooms);
    let packing = chatflow::envelope::Packing::from(crs.spec.queues.packing);
    env.push(self::env("PACKING", packing.as_str()));
    let resources = p.resources.clone().unwrap_or_else(default_resources);
    if let Some(limit) = sizing::memory_limit(&resources) {
        env.push(self::env(
            "MAX_UNANSWERED",
            sizing::max_unanswered(limit).to_string(),
        ));
    }
    // The edge follows the routing table as the kubelet refreshes the mounted ConfigMap.
    env.push(self::env(
        "EDGE_ROUTING_FILE",
        format!("{ROUTING_DIR}/routing.json"),
    ));
    // A rollout replaces every producer pod: spread each pod's closes, so its senders and
    // subscribers reconnect to the others a few at a time, not in one storm.
    for spread in ["CLOSE_SPREAD_SECS", "EDGE_CLOSE_SPREAD_SECS"] {
        env.push(self::env(spread, CLOSE_SPREAD_SECS.to_string()));
    }
    let (auth_env, auth_mounts, auth_volumes) = auth::producer_parts(crs.spec.auth.as_ref());
    env.extend(auth_env);
    env.extend(history::producer_env(crs));
    let env = with_spec_env(env, &p.env);
    let mut c = container("producer", &p.image, PRODUCER_PORT, env, resources);
    let mut mounts = vec![VolumeMount {
        name: "routing".into(),
        mount_path: ROUTING_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    mounts.extend(auth_mounts);
    c.volume_mounts = Some(mounts);
    let mut d = deployment(
        crs,
        &plan.producer,
        "producer",
        plan.producer_replicas,
        false,
        c,
    );
    if let Some(pod) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        let mut volumes = vec![Volume {
            name: "routing".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: plan.routing.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        volumes.extend(auth_volumes);
        pod.volumes = Some(volumes);
    }
    d
}

/// The Deployment of one consumer shard.
pub fn consumer_deployment(crs: &ChatRoomSet, shard: &Shard, loc: &QueueLocation) -> Deployment {
    let c: &ConsumerSpec = &crs.spec.consumer;
    let mut env = common_env(crs, loc, shard.rooms);
    env.push(self::env("CONSUMER_POLLERS", c.pollers.to_string()));
    // After a reshard the edges reach a new shard once the kubelet refreshes their mounted
    // routing table (up to about a minute): the shard keeps each room's backlog until then.
    env.push(self::env("RESUME_HOLD_SECS", "120"));
    let resources = c.resources.clone().unwrap_or_else(default_resources);
    if let Some(limit) = sizing::memory_limit(&resources) {
        let rooms = shard.rooms.len() as u64;
        env.push(self::env(
            "HISTORY_SIZE",
            sizing::history_size(limit, rooms).to_string(),
        ));
    }
    env.extend(history::consumer_env(crs));
    let env = with_spec_env(env, &c.env);
    let container = container("consumer", &c.image, CONSUMER_PORT, env, resources);
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
        "edge": edge_template(crs, plan),
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
