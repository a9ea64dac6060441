use super::*;
use crate::crd::{
    AuthSpec, ChatRoomSetSpec, ConsumerSpec, HistorySpec, HistoryStore, KeyRef, ProducerSpec,
    QueuesSpec, RoomsSpec,
};

pub(crate) fn sample(name: &str, start: u32, end: u32, per_shard: u32) -> ChatRoomSet {
    let mut crs = ChatRoomSet::new(
        name,
        ChatRoomSetSpec {
            rooms: RoomsSpec { start, end },
            queues: QueuesSpec::default(),
            producer: ProducerSpec {
                image: "chatflow/producer:dev".into(),
                replicas: 2,
                resources: None,
                env: vec![],
                autoscaling: None,
            },
            consumer: ConsumerSpec {
                image: "chatflow/consumer:dev".into(),
                rooms_per_shard: per_shard,
                pollers: 20,
                resources: None,
                env: vec![],
                autoscaling: None,
            },
            server_id_prefix: None,
            ingress: None,
            auth: Some(AuthSpec {
                anonymous: true,
                ..AuthSpec::default()
            }),
            history: None,
        },
    );
    crs.metadata.namespace = Some("chat".into());
    crs.metadata.uid = Some("uid-1".into());
    crs
}

#[test]
fn twenty_rooms_in_fives_make_four_shards() {
    let p = plan(&sample("demo", 1, 20, 5)).unwrap();
    let names: Vec<&str> = p.shards.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo-consumer-1-5",
            "demo-consumer-6-10",
            "demo-consumer-11-15",
            "demo-consumer-16-20"
        ]
    );
    assert_eq!(p.producer, "demo-producer");
}

#[test]
fn invalid_specs_are_explained() {
    let e = plan(&sample("demo", 10, 5, 5)).unwrap_err();
    assert!(e.contains("end 5 is below start 10"), "{e}");
    let mut long = sample("demo", 1, 20, 5);
    long.spec.queues.prefix = Some("p".repeat(70));
    let e = plan(&long).unwrap_err();
    assert!(e.contains("SQS allows 80"), "{e}");
    let e = plan(&sample("demo", 1, 20, 0)).unwrap_err();
    assert!(e.contains("roomsPerShard"), "{e}");
    let e = plan(&sample("demo", 1, 20_000, 100)).unwrap_err();
    assert!(e.contains("at most 10000"), "{e}");
    let e = plan(&sample(&"n".repeat(50), 1, 20, 5)).unwrap_err();
    assert!(e.contains("63 characters"), "{e}");
}

/// The environment of the set's first shard.
fn first_shard_env(crs: &ChatRoomSet) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let p = plan(crs).unwrap();
    let d = consumer_deployment(crs, &p.shards[0], &QueueLocation::default());
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
}

#[test]
fn a_redis_history_reaches_the_shards_with_its_url_from_the_secret() {
    let mut crs = sample("demo", 1, 20, 5);
    crs.spec.history = Some(HistorySpec {
        store: HistoryStore::Redis,
        url_secret_ref: Some(KeyRef {
            name: "chat-history".into(),
            key: "url".into(),
        }),
        max_length: Some(500),
        ..Default::default()
    });
    let env = first_shard_env(&crs);
    let get = |name: &str| env.iter().find(|e| e.name == name).cloned();
    let url = get("HISTORY_STORE_URL").expect("the store URL");
    let from = url.value_from.unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("chat-history", "url")
    );
    assert_eq!(get("HISTORY_MAX_LEN").unwrap().value.unwrap(), "500");
    assert_eq!(
        get("HISTORY_KEY_PREFIX").unwrap().value.unwrap(),
        "chatflow:chat:demo:uid-1",
        "sets sharing a store keep apart"
    );

    crs.spec.history.as_mut().unwrap().url = Some("redis://:pw@cache:6379".into());
    assert!(plan(&crs).unwrap_err().contains("spec.history"));
    crs.spec.history = None;
    let env = first_shard_env(&crs);
    assert!(
        !env.iter().any(|e| e.name.starts_with("HISTORY_STORE")),
        "memory-only by default"
    );
}

#[test]
fn with_autoscaling_the_rooms_spread_over_the_shards_the_autoscaler_decided() {
    let mut crs = sample("demo", 1, 20, 5);
    crs.spec.consumer.autoscaling = Some(crate::crd::ShardAutoscaling {
        min_shards: 2,
        max_shards: 6,
        target_backlog_per_shard: 100,
        scale_up_stabilization_seconds: 0,
        target_messages_per_second_per_shard: None,
        scale_up_interval_seconds: 0,
        scale_down_cooldown_seconds: 0,
    });
    let ranges = |crs: &ChatRoomSet| -> Vec<String> {
        plan(crs)
            .unwrap()
            .shards
            .iter()
            .map(|s| s.rooms.to_string())
            .collect()
    };
    assert_eq!(
        ranges(&crs),
        ["1-10", "11-20"],
        "the minimum before any decision"
    );
    crs.status = Some(crate::crd::ChatRoomSetStatus {
        autoscaling: Some(crate::crd::AutoscalingStatus {
            shards: 4,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(ranges(&crs), ["1-5", "6-10", "11-15", "16-20"]);
    crs.spec.consumer.autoscaling.as_mut().unwrap().max_shards = 1;
    assert!(plan(&crs).unwrap_err().contains("maxShards"));
}

#[test]
fn presence_spans_the_producer_pods_through_the_store_and_is_off_without_one() {
    let mut crs = sample("demo", 1, 20, 5);
    assert_eq!(producer_env(&crs)["PRESENCE"], "false");
    crs.spec.history = Some(HistorySpec {
        store: HistoryStore::Redis,
        url: Some("redis://cache:6379".into()),
        ..Default::default()
    });
    let env = producer_env(&crs);
    assert!(!env.contains_key("PRESENCE"));
    assert_eq!(env["PRESENCE_STORE_URL"], "redis://cache:6379");
    assert_eq!(env["PRESENCE_KEY_PREFIX"], "chatflow:chat:demo:uid-1");
}

#[test]
fn consumer_deployments_carry_their_rooms_and_recreate() {
    let crs = sample("demo", 1, 20, 5);
    let p = plan(&crs).unwrap();
    let loc = QueueLocation {
        region: Some("us-east-1".into()),
        endpoint: Some("http://localstack:4566".into()),
    };
    let d = consumer_deployment(&crs, &p.shards[1], &loc);
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let env: BTreeMap<String, String> = spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    assert_eq!(env["ROOMS_START"], "6");
    assert_eq!(env["ROOMS_END"], "10");
    assert_eq!(env["QUEUE_BACKEND"], "sqs");
    assert_eq!(env["AWS_ENDPOINT_URL"], "http://localstack:4566");
    assert_eq!(env["CONSUMER_POLLERS"], "20");
    assert_eq!(
        env["LOG_FORMAT"], "json",
        "cluster log collectors read JSON lines"
    );
    assert_eq!(env["METRICS_ADDR"], "0.0.0.0:9090");
    let pod = spec.template.metadata.clone().unwrap();
    assert_eq!(pod.annotations.unwrap()["prometheus.io/port"], "9090");
    assert!(!env.contains_key("PACKING"), "consumers read every packing");
    let owner = d.metadata.owner_references.unwrap();
    assert_eq!(owner[0].kind, "ChatRoomSet");
    assert_eq!(owner[0].controller, Some(true));
    assert_eq!(
        d.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "chatflow-operator"
    );
}

#[test]
fn sets_without_a_prefix_get_their_own_from_namespace_and_name() {
    let mut a = sample("chat", 1, 4, 2);
    a.metadata.namespace = Some("team-a".into());
    let mut b = sample("chat", 1, 4, 2);
    b.metadata.namespace = Some("team-b".into());
    assert_eq!(queue_prefix(&a), "team-a_chat_");
    assert_eq!(queue_prefix(&b), "team-b_chat_");
    assert_eq!(
        plan(&a).unwrap().naming.queue_name(1).unwrap(),
        "team-a_chat_room-1.fifo"
    );
    // '-' may appear in both parts; '_' in neither, so the split is unambiguous.
    assert_ne!(
        derived_prefix("team-a", "chat"),
        derived_prefix("team", "a-chat")
    );
    // Dots are not allowed in queue names; long pairs are shortened; a hash keeps them apart.
    let dotted = derived_prefix("ns", "a.b");
    assert_ne!(dotted, derived_prefix("ns", "a-b"));
    assert!(!dotted.contains('.'), "{dotted}");
    let long = derived_prefix(&"n".repeat(63), &"x".repeat(200));
    assert!(long.len() <= 40, "{long}");
    assert_ne!(long, derived_prefix(&"n".repeat(63), &"x".repeat(201)));
    let mut explicit = sample("chat", 1, 4, 2);
    explicit.spec.queues.prefix = Some("shared-".into());
    assert_eq!(queue_prefix(&explicit), "shared-");
    assert_eq!(queue_owner(&a), "team-a/chat");
}

fn producer_env(crs: &ChatRoomSet) -> BTreeMap<String, String> {
    let p = plan(crs).unwrap();
    let d = producer_deployment(crs, &p, &QueueLocation::default());
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

#[test]
fn producers_pack_as_the_spec_says_and_default_to_envelopes() {
    let mut crs = sample("demo", 1, 20, 5);
    assert_eq!(producer_env(&crs)["PACKING"], "envelope");
    crs.spec.queues.packing = crate::crd::Packing::Single;
    assert_eq!(producer_env(&crs)["PACKING"], "single");
    let yaml = "rooms: {start: 1, end: 2}\nqueues: {packing: zip}\nproducer: {image: p}\nconsumer: {image: c}\n";
    assert!(serde_yaml::from_str::<ChatRoomSetSpec>(yaml).is_err());
}

#[test]
fn bounds_follow_the_memory_limit_and_the_spec_env_wins() {
    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut crs = sample("demo", 1, 20, 5);
    assert_eq!(
        producer_env(&crs)["MAX_UNANSWERED"],
        "98304",
        "from the default 512Mi limit"
    );
    crs.spec.producer.resources = Some(ResourceRequirements {
        limits: Some([("memory".to_owned(), Quantity("2Gi".into()))].into()),
        ..Default::default()
    });
    assert_eq!(producer_env(&crs)["MAX_UNANSWERED"], "491520");
    crs.spec.producer.env = vec![EnvVar {
        name: "LOG_FORMAT".into(),
        value: Some("text".into()),
        value_from: None,
    }];
    let p = plan(&crs).unwrap();
    let env = producer_deployment(&crs, &p, &QueueLocation::default())
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let log_formats: Vec<_> = env.iter().filter(|e| e.name == "LOG_FORMAT").collect();
    assert_eq!(log_formats.len(), 1, "one entry per name, or apply fails");
    assert_eq!(log_formats[0].value.as_deref(), Some("text"));

    let shard = &p.shards[0];
    let d = consumer_deployment(&crs, shard, &QueueLocation::default());
    let history = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "HISTORY_SIZE")
        .and_then(|e| e.value);
    assert_eq!(history.as_deref(), Some("1000"));
}

#[test]
fn the_pods_network_policy_admits_only_their_ports() {
    let crs = sample("demo", 1, 20, 5);
    let p = plan(&crs).unwrap();
    let np = network_policy(&crs, &p);
    assert_eq!(np.metadata.name.as_deref(), Some("demo-workloads"));
    assert_eq!(np.metadata.owner_references.unwrap()[0].kind, "ChatRoomSet");
    let spec = np.spec.unwrap();
    let selector = spec.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selector["app.kubernetes.io/instance"], "demo");
    // Every pod the set runs carries what the policy selects.
    let pod_labels = producer_deployment(&crs, &p, &QueueLocation::default())
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 1);
    let ports: Vec<_> = rules[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.port, p.protocol.unwrap()))
        .collect();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
    assert_eq!(
        ports,
        [
            (Some(Int(8080)), "TCP".to_owned()),
            (Some(Int(8081)), "TCP".to_owned()),
            (Some(Int(9090)), "TCP".to_owned())
        ]
    );
    assert!(spec.egress.is_none(), "SQS and DNS stay reachable");
}

#[test]
fn routing_lists_every_shard() {
    let crs = sample("demo", 1, 12, 5);
    let p = plan(&crs).unwrap();
    let cm = routing_configmap(&crs, &p);
    let table: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["routing.json"]).unwrap();
    assert_eq!(table["shards"].as_array().unwrap().len(), 3);
    assert_eq!(table["shards"][2]["rooms"], "11-12");
    assert_eq!(
        table["ingest"],
        "ws://demo-producer.chat.svc:8080/chat/{roomId}"
    );
}

#[test]
fn removed_shards_hold_back_new_ones_until_their_deployments_are_gone() {
    let p = plan(&sample("demo", 1, 20, 10)).unwrap();
    let existing = |names: &[&str]| -> std::collections::BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    };
    let resharding = existing(&[
        "demo-consumer-1-10",
        "demo-consumer-1-5",
        "demo-consumer-6-10",
    ]);
    assert_eq!(crate::reconcile::lingering_shards(&resharding, &p), 2);
    assert_eq!(
        crate::reconcile::lingering_shards(&existing(&["demo-consumer-1-10"]), &p),
        0
    );
}

#[test]
fn every_pod_the_operator_writes_meets_the_restricted_profile() {
    let mut crs = sample("demo", 1, 20, 5);
    crs.spec
        .producer
        .env
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "SHUTDOWN_GRACE_SECS".into(),
            value: Some("45".into()),
            value_from: None,
        });
    let p = plan(&crs).unwrap();
    let loc = QueueLocation::default();
    let producer = producer_deployment(&crs, &p, &loc);
    let consumers = p.shards.iter().map(|s| consumer_deployment(&crs, s, &loc));
    for d in std::iter::once(producer.clone()).chain(consumers) {
        let spec = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(restricted::violations(&spec, false), Vec::<String>::new());
        let grace = spec.termination_grace_period_seconds.unwrap();
        assert!(grace > 20, "grace {grace}s is not longer than the drain");
    }
    let producer_spec = producer.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        producer_spec.termination_grace_period_seconds,
        Some(55),
        "follows the drain the spec's env sets"
    );
}

#[test]
fn the_restricted_check_names_what_a_plain_pod_lacks() {
    let spec = k8s_openapi::api::core::v1::PodSpec {
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "app".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let v = restricted::violations(&spec, false);
    for rule in [
        "service-account token",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile",
        "drop ALL",
        "root filesystem",
        "requests",
        "memory limit",
    ] {
        assert!(
            v.iter().any(|l| l.contains(rule)),
            "{rule} missing from {v:?}"
        );
    }
    assert!(
        !restricted::violations(&spec, true)
            .iter()
            .any(|l| l.contains("service-account token")),
        "a pod that needs the API may mount its token"
    );
}

#[test]
fn a_spec_may_name_only_the_endpoints_the_operator_allows() {
    let defaults = QueueLocation {
        region: None,
        endpoint: Some("http://localstack:4566".into()),
    };
    let allowed = vec!["https://sqs.eu-west-1.amazonaws.com".to_owned()];
    let mut crs = sample("demo", 1, 4, 2);
    assert_eq!(
        endpoint_refusal(&crs, &defaults, &allowed),
        None,
        "no endpoint named"
    );
    for ok in [
        "http://localstack:4566/",
        "https://SQS.eu-west-1.amazonaws.com",
    ] {
        crs.spec.queues.endpoint = Some(ok.into());
        assert_eq!(endpoint_refusal(&crs, &defaults, &allowed), None, "{ok}");
    }
    crs.spec.queues.endpoint = Some("http://169.254.169.254/latest".into());
    let refusal = endpoint_refusal(&crs, &defaults, &allowed).unwrap();
    assert!(refusal.contains("ALLOWED_SQS_ENDPOINTS"), "{refusal}");
    assert!(
        endpoint_refusal(&crs, &QueueLocation::default(), &[]).is_some(),
        "with nothing allowed, any named endpoint is refused"
    );
}

#[test]
fn producer_pods_read_the_routing_table_the_edge_follows() {
    let crs = sample("demo", 1, 20, 5);
    let p = plan(&crs).unwrap();
    let d = producer_deployment(&crs, &p, &QueueLocation::default());
    let pod = d.spec.unwrap().template.spec.unwrap();
    let volume = &pod.volumes.unwrap()[0];
    assert_eq!(volume.config_map.as_ref().unwrap().name, "demo-routing");
    let c = &pod.containers[0];
    let mount = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.name.as_str(), mount.mount_path.as_str()),
        ("routing", ROUTING_DIR)
    );
    let env = c.env.as_ref().unwrap();
    let file = env.iter().find(|e| e.name == "EDGE_ROUTING_FILE").unwrap();
    assert_eq!(
        file.value.as_deref(),
        Some("/etc/chatflow/routing/routing.json")
    );
    let cm = routing_configmap(&crs, &p);
    let table: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["routing.json"]).unwrap();
    assert_eq!(
        table["edge"],
        "ws://demo-producer.chat.svc:8080/subscribe/{roomId}"
    );
}

fn bucketed(end: u32, rooms_per_bucket: u32, per_shard: u32) -> ChatRoomSet {
    let mut crs = sample("demo", 1, end, per_shard);
    crs.spec.queues.layout = crate::crd::QueueLayout::Buckets;
    crs.spec.queues.rooms_per_bucket = Some(rooms_per_bucket);
    crs
}

#[test]
fn buckets_lay_rooms_on_fewer_queues_and_shards_own_whole_buckets() {
    let crs = bucketed(20, 5, 3);
    let p = plan(&crs).unwrap();
    assert_eq!(p.queues, [1, 6, 11, 16]);
    assert_eq!(p.naming.queue_name(7).unwrap(), "chat_demo_rooms-6-10.fifo");
    // Three rooms per shard would split a bucket of five: shards take a whole bucket each.
    let ranges: Vec<String> = p.shards.iter().map(|s| s.rooms.to_string()).collect();
    assert_eq!(ranges, ["1-5", "6-10", "11-15", "16-20"]);
    assert_eq!(producer_env(&crs)["QUEUE_BUCKET_ROOMS"], "5");
    let shard_env = first_shard_env(&crs);
    assert!(
        shard_env
            .iter()
            .any(|e| e.name == "QUEUE_BUCKET_ROOMS" && e.value.as_deref() == Some("5"))
    );
    assert!(!producer_env(&sample("demo", 1, 20, 5)).contains_key("QUEUE_BUCKET_ROOMS"));
}

#[test]
fn growing_a_bucketed_set_adds_buckets_and_moves_no_room() {
    let before = plan(&bucketed(20, 5, 5)).unwrap();
    let after = plan(&bucketed(24, 5, 5)).unwrap();
    assert_eq!(after.queues, [1, 6, 11, 16, 21]);
    for room in 1..=20 {
        assert_eq!(
            before.naming.queue_name(room).unwrap(),
            after.naming.queue_name(room).unwrap()
        );
    }
    // A huge roomsPerShard is one shard, not an overflow.
    assert_eq!(plan(&bucketed(20, 5, u32::MAX)).unwrap().shards.len(), 1);
}

#[test]
fn bucket_settings_that_do_not_fit_are_explained() {
    let e = plan(&bucketed(20, 1, 5)).unwrap_err();
    assert!(e.contains("at least 2 rooms"), "{e}");
    let mut missing = bucketed(20, 4, 5);
    missing.spec.queues.rooms_per_bucket = None;
    assert!(
        plan(&missing)
            .unwrap_err()
            .contains("needs spec.queues.roomsPerBucket")
    );
    let mut per_room = sample("demo", 1, 20, 5);
    per_room.spec.queues.rooms_per_bucket = Some(4);
    assert!(
        plan(&per_room)
            .unwrap_err()
            .contains("applies to layout buckets")
    );
}

#[test]
fn producer_pods_spread_their_closes_at_shutdown() {
    let env = producer_env(&sample("demo", 1, 20, 5));
    assert_eq!(env["CLOSE_SPREAD_SECS"], "5");
    assert_eq!(env["EDGE_CLOSE_SPREAD_SECS"], "5");
    assert!(
        !first_shard_env(&sample("demo", 1, 20, 5))
            .iter()
            .any(|e| e.name.contains("CLOSE_SPREAD"))
    );
}

#[test]
fn drains_take_one_producer_and_one_shard_at_a_time_and_never_wait_forever() {
    let crs = sample("demo", 1, 20, 5);
    let p = plan(&crs).unwrap();
    let [producer, shards] = disruption::budgets(&crs, &p);
    assert_eq!(producer.metadata.name.as_deref(), Some("demo-producer"));
    assert_eq!(shards.metadata.name.as_deref(), Some("demo-shards"));
    let pods = |d: &k8s_openapi::api::apps::v1::Deployment| {
        let t = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
        t.labels.clone().unwrap()
    };
    let loc = QueueLocation::default();
    let covers = |b: &k8s_openapi::api::policy::v1::PodDisruptionBudget,
                  d: &k8s_openapi::api::apps::v1::Deployment| {
        let wanted = b.spec.as_ref().unwrap().selector.as_ref().unwrap();
        let have = pods(d);
        wanted
            .match_labels
            .as_ref()
            .unwrap()
            .iter()
            .all(|(k, v)| have.get(k) == Some(v))
    };
    let producer_pods = producer_deployment(&crs, &p, &loc);
    assert!(covers(&producer, &producer_pods));
    assert!(!covers(&shards, &producer_pods));
    for shard in &p.shards {
        let d = consumer_deployment(&crs, shard, &loc);
        assert!(covers(&shards, &d), "{}", shard.name);
        assert!(!covers(&producer, &d), "{}", shard.name);
    }
    for b in [&producer, &shards] {
        let spec = b.spec.as_ref().unwrap();
        // A budget that counts only what may go, so even a tier of one is evicted.
        assert_eq!(
            spec.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        assert_eq!(
            b.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
    }
}
