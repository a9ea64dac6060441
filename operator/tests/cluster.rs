//! The operator against a real kube-apiserver and LocalStack, both started by scripts/test.
// A scenario on real servers reads top to bottom, as its steps happen; the length bound is
// for the code under test.
#![allow(clippy::too_many_lines)]

mod support;

use std::time::Duration;

use chatflow::queue::QueueError;
use chatflow_operator::ChatRoomSet;
use chatflow_operator::desired::restricted;
use chatflow_operator::reconcile::budgets::BudgetApi;
use chatflow_testkit::Proxy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::*;

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn a_set_of_20_rooms_grows_and_reshards() {
    let _ = NEEDS;
    let client = client().await;
    let ns = namespace(&client).await;
    let op = operator(&client, &ns, "solo", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    apply(&api, &set("demo", &prefix, 1, 20, 5)).await.unwrap();
    let crs = wait_status(&api, "demo", "20 queues ready", |c| {
        c.status.as_ref().unwrap().queues.ready == 20
    })
    .await;
    assert_eq!(condition(&crs, "QueuesReady").unwrap().0, "True");
    for t in ["Ready", "ProducerReady", "ConsumersReady"] {
        assert!(condition(&crs, t).is_some(), "condition {t}");
    }
    assert!(crs.finalizers().contains(&"chatflow.dev/queues".to_owned()));
    let status = crs.status.clone().unwrap();
    assert_eq!(status.shard_count, 4);
    assert_eq!(
        status.endpoints.unwrap().ingest,
        format!("ws://demo-producer.{ns}.svc:8080/chat/{{roomId}}")
    );

    let queues = sqs(&prefix).await;
    for room in [1, 20] {
        let attrs = queues.queue_attributes(room).await.unwrap();
        assert_eq!(attrs["FifoQueue"], "true");
        assert_eq!(attrs["VisibilityTimeout"], "30");
        assert_eq!(attrs["MessageRetentionPeriod"], "3600");
        assert_eq!(attrs["ContentBasedDeduplication"], "false");
    }
    let shards = consumer_shards(&client, &ns, "demo").await;
    let ranges: Vec<(String, String)> = shards.values().cloned().collect();
    let want: Vec<(String, String)> = [(1, 5), (6, 10), (11, 15), (16, 20)]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut got = ranges.clone();
    got.sort_by_key(|(a, _)| a.parse::<u32>().unwrap());
    assert_eq!(got, want);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for s in shards
        .keys()
        .chain(std::iter::once(&"demo-producer".to_owned()))
    {
        services
            .get(s)
            .await
            .unwrap_or_else(|e| panic!("service {s}: {e}"));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let producer = deployments.get("demo-producer").await.unwrap();
    assert_eq!(producer.spec.unwrap().replicas, Some(2));

    // `kubectl scale crs/demo --replicas=3` (and an HPA) go through the scale subresource.
    let to = |n: i32| Patch::Merge(json!({"spec": {"replicas": n}}));
    api.patch_scale("demo", &PatchParams::default(), &to(3))
        .await
        .unwrap();
    wait(
        "the producer scaled to 3",
        Duration::from_secs(30),
        || async {
            (deployments.get("demo-producer").await.ok()?.spec?.replicas == Some(3)).then_some(())
        },
    )
    .await;
    let scale = api.get_scale("demo").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    let selector = scale.status.unwrap().selector.unwrap_or_default();
    assert!(
        selector.contains("app.kubernetes.io/instance=demo")
            && selector.contains("app.kubernetes.io/component=producer"),
        "{selector}"
    );
    api.patch_scale("demo", &PatchParams::default(), &to(2))
        .await
        .unwrap();
    wait(
        "the producer back at 2",
        Duration::from_secs(30),
        || async {
            (deployments.get("demo-producer").await.ok()?.spec?.replicas == Some(2)).then_some(())
        },
    )
    .await;
    // A drain takes one producer pod and one shard at a time, and never waits forever on a pod
    // that is not Ready. (The e2e evicts Ready pods under load.)
    let budget_api = BudgetApi::detect(&client).await.unwrap();
    let budgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &budget_api.resource());
    for (name, component, pods) in [
        ("demo-producer", "producer", 2),
        ("demo-shards", "consumer", 4),
    ] {
        let budget = wait(
            &format!("{name} counting its {pods} pods"),
            Duration::from_secs(60),
            || async {
                let b = budgets.get(name).await.ok()?;
                let status = b.data.get("status")?;
                (status["observedGeneration"].as_i64() == b.metadata.generation
                    && status["expectedPods"] == pods)
                    .then_some(b)
            },
        )
        .await;
        let spec = &budget.data["spec"];
        assert_eq!(spec["maxUnavailable"], 1, "{name}");
        assert!(spec.get("minAvailable").is_none(), "{name}");
        if budget_api.unhealthy_policy() {
            assert_eq!(spec["unhealthyPodEvictionPolicy"], "AlwaysAllow", "{name}");
        }
        let labels = &spec["selector"]["matchLabels"];
        assert_eq!(labels["app.kubernetes.io/instance"], "demo", "{name}");
        assert_eq!(labels["app.kubernetes.io/component"], component, "{name}");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let routing = cm.get("demo-routing").await.unwrap();
    assert!(routing.data.unwrap()["routing.json"].contains("demo-consumer-16-20"));

    // The pods the apiserver admitted from the operator's Deployments (their images are not
    // on the node; the specs are what counts) meet the restricted profile.
    let admitted = wait("the set's pods", Duration::from_secs(60), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (list.items.len() >= 6).then_some(list.items)
    })
    .await;
    for pod in admitted {
        let v = restricted::violations(pod.spec.as_ref().unwrap(), false);
        assert!(v.is_empty(), "{}: {v:?}", pod.name_any());
    }

    // Grow to 30 rooms: 10 more queues, 2 more shards.
    apply(&api, &set("demo", &prefix, 1, 30, 5)).await.unwrap();
    wait_status(&api, "demo", "30 queues", |c| {
        c.status.as_ref().unwrap().queues.ready == 30
    })
    .await;
    assert_eq!(consumer_shards(&client, &ns, "demo").await.len(), 6);
    queues.queue_attributes(30).await.unwrap();

    // Ten rooms per shard: three shards, the old ones gone.
    apply(&api, &set("demo", &prefix, 1, 30, 10)).await.unwrap();
    wait_status(&api, "demo", "3 shards", |c| {
        c.status.as_ref().unwrap().shard_count == 3
    })
    .await;
    // On a cluster with a kubelet, the new shards start only once the removed shards' pods
    // are gone, which takes the pods' termination.
    let wanted = [
        "demo-consumer-1-10",
        "demo-consumer-11-20",
        "demo-consumer-21-30",
    ];
    let names: Vec<String> = wait("the new shards", Duration::from_secs(120), || async {
        let names: Vec<String> = consumer_shards(&client, &ns, "demo")
            .await
            .into_keys()
            .collect();
        (names == wanted).then_some(names)
    })
    .await;
    // Each shard's Service is applied right after its Deployment, in the same reconcile.
    wait(
        "the new shards' Services",
        Duration::from_secs(30),
        || async {
            let svc_names: Vec<String> = services
                .list(
                    &ListParams::default()
                        .labels(&chatflow_operator::desired::consumer_selector("demo")),
                )
                .await
                .ok()?
                .into_iter()
                .map(|s| s.name_any())
                .collect();
            (svc_names == names).then_some(())
        },
    )
    .await;

    // Delete with deletionPolicy Delete: queues go, then the finalizer, then the object.
    api.delete("demo", &DeleteParams::default()).await.unwrap();
    wait("set deleted", Duration::from_secs(60), || async {
        api.get_opt("demo").await.unwrap().is_none().then_some(())
    })
    .await;
    for room in [1, 30] {
        assert!(
            matches!(
                queues.queue_attributes(room).await,
                Err(QueueError::NotFound { .. })
            ),
            "room {room} deleted"
        );
    }
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn a_set_in_buckets_gets_a_queue_per_bucket_and_shards_on_bucket_boundaries() {
    let _ = NEEDS;
    let client = client().await;
    let ns = namespace(&client).await;
    let op = operator(&client, &ns, "solo", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    let mut body = set("quiet", &prefix, 1, 20, 3);
    body["spec"]["queues"]["layout"] = json!("buckets");
    body["spec"]["queues"]["roomsPerBucket"] = json!(5);
    apply(&api, &body).await.unwrap();
    let crs = wait_status(&api, "quiet", "4 queues ready", |c| {
        c.status.as_ref().unwrap().queues.ready == 4
    })
    .await;
    assert_eq!(crs.status.as_ref().unwrap().queues.desired, 4);
    let naming = chatflow::rooms::QueueNaming::parse(&prefix)
        .unwrap()
        .with_layout(chatflow::rooms::Layout::Buckets { rooms: 5 }, 1);
    assert_eq!(
        naming.queue_name(7).unwrap(),
        format!("{prefix}rooms-6-10.fifo")
    );
    let buckets = sqs_named(naming).await;
    for room in [1, 7, 20] {
        let attrs = buckets.queue_attributes(room).await.unwrap();
        assert_eq!(attrs["FifoQueue"], "true");
    }
    assert!(
        matches!(
            sqs(&prefix).await.queue_attributes(7).await,
            Err(QueueError::NotFound { .. })
        ),
        "no queue of a room of its own"
    );
    // Three rooms per shard would split a bucket of five: each shard takes a whole bucket, and
    // its pods are told the bucket size.
    let shards = consumer_shards(&client, &ns, "quiet").await;
    let mut ranges: Vec<(String, String)> = shards.values().cloned().collect();
    ranges.sort_by_key(|(a, _)| a.parse::<u32>().unwrap());
    let want: Vec<(String, String)> = [(1, 5), (6, 10), (11, 15), (16, 20)]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(ranges, want);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in ["quiet-producer", "quiet-consumer-6-10"] {
        let d = deployments.get(name).await.unwrap();
        let env = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "QUEUE_BUCKET_ROOMS" && e.value.as_deref() == Some("5")),
            "{name}"
        );
    }

    api.delete("quiet", &DeleteParams::default()).await.unwrap();
    wait("set deleted", Duration::from_secs(60), || async {
        api.get_opt("quiet").await.unwrap().is_none().then_some(())
    })
    .await;
    for room in [1, 20] {
        assert!(
            matches!(
                buckets.queue_attributes(room).await,
                Err(QueueError::NotFound { .. })
            ),
            "bucket of room {room} deleted"
        );
    }
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn invalid_specs_are_refused_or_reported_and_nothing_is_created() {
    let client = client().await;
    let ns = namespace(&client).await;
    let op = operator(&client, &ns, "solo", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);

    // The schema refuses what it can express.
    let err = apply(&api, &set("zero", &prefix(), 1, 20, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("roomsPerShard"), "{err}");
    let err = apply(&api, &set("nought", &prefix(), 0, 20, 5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rooms.start"), "{err}");

    // The reconciler reports what it cannot.
    apply(&api, &set("backwards", &prefix(), 20, 10, 5))
        .await
        .unwrap();
    let long_prefix = format!("{}-", "p".repeat(70));
    apply(&api, &set("longnames", &long_prefix, 1, 20, 5))
        .await
        .unwrap();
    // An endpoint the operator's administrator did not allow is never called.
    let mut elsewhere = set("elsewhere", &prefix(), 1, 2, 2);
    elsewhere["spec"]["queues"]["endpoint"] = "http://169.254.169.254/latest".into();
    apply(&api, &elsewhere).await.unwrap();
    // A set that says nothing of identity is not served to everyone by omission.
    let mut unsaid = set("unsaid", &prefix(), 1, 1, 1);
    unsaid["spec"].as_object_mut().unwrap().remove("auth");
    apply(&api, &unsaid).await.unwrap();
    for (name, says) in [
        ("backwards", "end 10 is below start 20"),
        ("longnames", "SQS allows 80"),
        ("elsewhere", "ALLOWED_SQS_ENDPOINTS"),
        ("unsaid", "spec.auth is required"),
    ] {
        let crs = wait_status(&api, name, "InvalidSpec", |c| {
            condition(c, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "InvalidSpec")
        })
        .await;
        let (_, _, message) = condition(&crs, "Ready").unwrap();
        assert!(message.contains(says), "{name}: {message}");
        assert!(crs.finalizers().is_empty(), "an invalid set is not touched");
    }
    let d: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(
        d.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing created"
    );
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cm.get_opt("backwards-routing").await.unwrap().is_none());

    // Saying `anonymous: true` explicitly is accepted: the set is taken in hand.
    unsaid["spec"]["auth"] = serde_json::json!({"anonymous": true});
    apply(&api, &unsaid).await.unwrap();
    wait_status(&api, "unsaid", "the finalizer of an accepted set", |c| {
        !c.finalizers().is_empty()
    })
    .await;
    api.delete("unsaid", &DeleteParams::default())
        .await
        .unwrap();
    wait(
        "the accepted set's deletion",
        Duration::from_secs(60),
        || async { api.get_opt("unsaid").await.ok()?.is_none().then_some(()) },
    )
    .await;
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn a_queue_outage_is_reported_retried_and_recovered_without_restart() {
    let client = client().await;
    let ns = namespace(&client).await;
    let upstream = endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await.unwrap();
    proxy.down();
    let op = operator_allowing(&client, &ns, "solo", 15, vec![proxy.endpoint()]).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let mut body = set("outage", &prefix(), 1, 5, 5);
    body["spec"]["queues"]["endpoint"] = proxy.endpoint().into();
    apply(&api, &body).await.unwrap();
    let crs = wait_status(&api, "outage", "QueuesReady False", |c| {
        condition(c, "QueuesReady").is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = condition(&crs, "QueuesReady").unwrap();
    assert_eq!(reason, "QueueServiceUnavailable");
    assert!(message.contains("0 of 5"), "{message}");
    // Backing off, not spinning: a handful of attempts over a few seconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = op.metrics.reconciles.get();
    assert!(
        attempts <= 8,
        "{attempts} reconciles in ~4 s is not a backoff"
    );
    proxy.restore();
    wait_status(&api, "outage", "recovery", |c| {
        condition(c, "QueuesReady").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn drifted_objects_are_put_back_and_retain_keeps_queues() {
    let client = client().await;
    let ns = namespace(&client).await;
    let op = operator(&client, &ns, "solo", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    let mut body = set("drift", &prefix, 1, 4, 2);
    body["spec"]["queues"]["deletionPolicy"] = "Retain".into();
    apply(&api, &body).await.unwrap();
    wait_status(&api, "drift", "queues", |c| {
        c.status.as_ref().unwrap().queues.ready == 4
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .patch(
            "drift-producer",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    wait("replicas restored", Duration::from_secs(30), || async {
        (deployments.get("drift-producer").await.ok()?.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    // Queues are not re-created on every reconcile; one deleted behind the operator's back is
    // noticed by the next reconcile (here, the one the Service deletion below triggers).
    let queues = sqs(&prefix).await;
    queues.delete_queue(3).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .delete("drift-consumer-1-2", &DeleteParams::default())
        .await
        .unwrap();
    wait("service recreated", Duration::from_secs(30), || async {
        services
            .get_opt("drift-consumer-1-2")
            .await
            .ok()?
            .map(|_| ())
    })
    .await;
    wait("queue recreated", Duration::from_secs(30), || async {
        queues.queue_attributes(3).await.ok().map(|_| ())
    })
    .await;

    api.delete("drift", &DeleteParams::default()).await.unwrap();
    wait("set deleted", Duration::from_secs(60), || async {
        api.get_opt("drift").await.unwrap().is_none().then_some(())
    })
    .await;
    queues
        .queue_attributes(1)
        .await
        .expect("Retain keeps the queues");
    for room in 1..=4 {
        queues.delete_queue(room).await.unwrap();
    }
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn only_the_lease_holder_reconciles_and_the_other_takes_over() {
    let client = client().await;
    let ns = namespace(&client).await;
    let a = operator(&client, &ns, "replica-a", 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = operator(&client, &ns, "replica-b", 3).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    apply(&api, &set("leader", &prefix, 1, 2, 2)).await.unwrap();
    wait_status(&api, "leader", "queues", |c| {
        c.status.as_ref().unwrap().queues.ready == 2
    })
    .await;
    let (ra, rb) = (a.metrics.reconciles.get(), b.metrics.reconciles.get());
    assert!(
        ra > 0 && rb == 0,
        "only the first replica reconciles (a {ra}, b {rb})"
    );
    assert_eq!((a.metrics.leader.get(), b.metrics.leader.get()), (1, 0));

    a.shutdown().await;
    wait("b leads", Duration::from_secs(30), || async {
        (b.metrics.leader.get() == 1).then_some(())
    })
    .await;
    apply(&api, &set("leader", &prefix, 1, 3, 2)).await.unwrap();
    wait_status(&api, "leader", "b reconciles", |c| {
        c.status.as_ref().unwrap().queues.ready == 3
    })
    .await;
    assert!(b.metrics.reconciles.get() > 0);
    api.delete("leader", &DeleteParams::default())
        .await
        .unwrap();
    wait("set deleted", Duration::from_secs(60), || async {
        api.get_opt("leader").await.unwrap().is_none().then_some(())
    })
    .await;
    b.shutdown().await;
}
