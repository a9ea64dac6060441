//! The shard autoscaler against a real kube-apiserver and LocalStack: a backlog scales a set's
//! shards up, with the reason in its status and Events, and an idle set goes back to its minimum
//! after the cooldown. Nothing runs the shards here, so the backlog stays until the test drains
//! it, and no shard pod is Ready, so every room's rate measures 0 (the e2e measures real ones).

mod support;

use std::time::Duration;

use chatflow::queue::{BodyFormat, PublishEntry};
use chatflow_operator::ChatRoomSet;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use support::*;

fn shards_wanted(c: &ChatRoomSet) -> Option<u32> {
    Some(c.status.as_ref()?.autoscaling.as_ref()?.shards)
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn a_backlog_scales_the_shards_up_and_an_idle_set_goes_back_after_its_cooldown() {
    let _ = NEEDS;
    let client = client().await;
    let ns = namespace(&client).await;
    let _op = operator(&client, &ns, "autoscaler", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    let mut body = set("scaled", &prefix, 1, 8, 8);
    body["spec"]["consumer"]["autoscaling"] = json!({
        "minShards": 1, "maxShards": 4, "targetBacklogPerShard": 10,
        "scaleUpStabilizationSeconds": 0, "scaleUpIntervalSeconds": 0, "scaleDownCooldownSeconds": 3,
    });
    apply(&api, &body).await.unwrap();
    let crs = wait_status(&api, "scaled", "8 queues and one shard", |c| {
        let s = c.status.as_ref().unwrap();
        s.queues.ready == 8 && s.shard_count == 1 && shards_wanted(c) == Some(1)
    })
    .await;
    let reason = &crs.status.unwrap().autoscaling.unwrap().reason;
    assert!(reason.contains("within the target"), "{reason}");

    // 35 messages waiting: the one shard is past its target of 10, and the set needs 4.
    let queues = sqs(&prefix).await;
    for room in 1..=7u32 {
        let entries: Vec<PublishEntry> = (0..5)
            .map(|i| PublishEntry {
                body: format!("waiting {room}-{i}"),
                group_id: room.to_string(),
                dedup_id: format!("w-{room}-{i}"),
                format: BodyFormat::Task,
            })
            .collect();
        for r in queues.publish(room, &entries).await.unwrap() {
            r.unwrap();
        }
    }
    let crs = wait_status(&api, "scaled", "four shards for the backlog", |c| {
        c.status.as_ref().unwrap().shard_count == 4 && shards_wanted(c) == Some(4)
    })
    .await;
    let status = crs.status.unwrap();
    let autoscaling = status.autoscaling.as_ref().unwrap();
    assert_eq!(autoscaling.assignment, ["1-2", "3-4", "5-6", "7-8"]);
    assert!(autoscaling.last_scale_time.is_some());
    // A reshard lets the old shard's pods stop before the new shards start.
    let want: Vec<(String, String)> = [(1, 2), (3, 4), (5, 6), (7, 8)]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    wait(
        "the four shards' Deployments",
        Duration::from_secs(120),
        || async {
            let mut ranges: Vec<(String, String)> = consumer_shards(&client, &ns, "scaled")
                .await
                .into_values()
                .collect();
            ranges.sort_by_key(|(a, _)| a.parse::<u32>().unwrap());
            (ranges == want).then_some(())
        },
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    // Straight up, or by way of 3 if a measurement caught the publishing half done.
    let up = shards_scaled(&events, "-> 4 shards: busiest shard").await;
    assert!(up.ends_with(": 4 shards 1-2, 3-4, 5-6, 7-8"), "{up}");

    // Drained: after the 3 s cooldown the set is back to its one shard.
    drain(&queues, 1..=7).await;
    wait_status(&api, "scaled", "back to one shard", |c| {
        c.status.as_ref().unwrap().shard_count == 1 && shards_wanted(c) == Some(1)
    })
    .await;
    // Straight down, or by way of 2 if a measurement caught the drain half done.
    let down = shards_scaled(&events, "-> 1 shards: busiest shard").await;
    assert!(
        down.contains("the load fits 1 shards, for 3s: 1 shards 1-8"),
        "{down}"
    );
    drop_namespace(&client, &ns).await;
}

/// Receives and deletes everything in `rooms`' queues.
async fn drain(queues: &chatflow::queue::SharedQueues, rooms: std::ops::RangeInclusive<u32>) {
    for room in rooms {
        loop {
            let got = queues
                .receive(room, 10, Duration::from_secs(1))
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            let receipts: Vec<String> = got.into_iter().map(|m| m.receipt).collect();
            queues.delete_batch(room, &receipts).await.unwrap();
        }
    }
}

/// The message of the set's ShardsScaled event that contains `change`.
async fn shards_scaled(events: &Api<Event>, change: &str) -> String {
    let mut seen = Vec::new();
    for _ in 0..150 {
        seen = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ShardsScaled"))
            .filter_map(|e| e.message)
            .collect::<Vec<_>>();
        if let Some(m) = seen.iter().find(|m| m.contains(change)) {
            return m.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no ShardsScaled event {change} in 30 s; seen: {seen:?}");
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn the_producer_autoscaler_sizes_the_deployment_within_its_bounds_and_refuses_a_spec_without_a_target()
 {
    let _ = NEEDS;
    let client = client().await;
    let ns = namespace(&client).await;
    let _op = operator(&client, &ns, "producers", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    let mut body = set("sized", &prefix, 1, 2, 2);
    body["spec"]["producer"]["replicas"] = json!(3);
    body["spec"]["producer"]["autoscaling"] = json!({
        "minReplicas": 1, "maxReplicas": 2, "targetConnectionsPerPod": 100,
    });
    apply(&api, &body).await.unwrap();
    // No pod runs here, so nothing is carried: the minimum, whatever spec.producer.replicas says.
    let crs = wait_status(&api, "sized", "the producer autoscaler's minimum", |c| {
        let p = c.status.as_ref().and_then(|s| s.producer.as_ref());
        p.and_then(|p| p.autoscaling.as_ref())
            .is_some_and(|a| a.replicas == 1)
    })
    .await;
    let reason = crs
        .status
        .unwrap()
        .producer
        .unwrap()
        .autoscaling
        .unwrap()
        .reason;
    assert!(
        reason.contains("0 connections (target 100 a pod)"),
        "{reason}"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns);
    wait(
        "the producer Deployment at 1",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("sized-producer").await.ok()?;
            (d.spec?.replicas == Some(1)).then_some(())
        },
    )
    .await;

    body["spec"]["producer"]["autoscaling"] = json!({ "minReplicas": 1, "maxReplicas": 2 });
    apply(&api, &body).await.unwrap();
    let crs = wait_status(&api, "sized", "InvalidSpec", |c| {
        condition(c, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "InvalidSpec")
    })
    .await;
    let (_, _, message) = condition(&crs, "Ready").unwrap();
    assert!(
        message.contains("needs targetConnectionsPerPod"),
        "{message}"
    );
    drop_namespace(&client, &ns).await;
}
