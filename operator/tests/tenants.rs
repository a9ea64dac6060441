//! Two teams' ChatRoomSets over the same rooms, on a real kube-apiserver and LocalStack: each
//! keeps to its own queues, whatever the other does.
// A scenario on real servers reads top to bottom, as its steps happen; the length bound is
// for the code under test.
#![allow(clippy::too_many_lines)]

mod support;

use std::time::Duration;

use chatflow::queue::{BodyFormat, OWNER_TAG, PublishEntry};
use chatflow_operator::ChatRoomSet;
use chatflow_operator::desired::derived_prefix;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::DeleteParams;
use support::*;

/// A set of rooms 1-4 that deletes its queues with it; without a prefix unless one is given.
fn team_set(name: &str, prefix: Option<&str>) -> serde_json::Value {
    let mut body = set(name, prefix.unwrap_or("unused-"), 1, 4, 2);
    if prefix.is_none() {
        body["spec"]["queues"]
            .as_object_mut()
            .unwrap()
            .remove("prefix");
    }
    body
}

async fn delete_and_wait(api: &Api<ChatRoomSet>, name: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait("set deleted", Duration::from_secs(60), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn two_teams_over_the_same_rooms_keep_to_their_own_queues() {
    let client = client().await;
    let (ns_a, ns_b) = (namespace(&client).await, namespace(&client).await);
    let op_a = operator(&client, &ns_a, "a", 15).await;
    let op_b = operator(&client, &ns_b, "b", 15).await;
    let team_a: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns_a);
    let team_b: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns_b);

    // Same name, same rooms, no prefix: each namespace gets queues of its own, tagged.
    for api in [&team_a, &team_b] {
        apply(api, &team_set("chat", None)).await.unwrap();
    }
    for api in [&team_a, &team_b] {
        wait_status(api, "chat", "4 queues ready", |c| {
            c.status.as_ref().unwrap().queues.ready == 4
        })
        .await;
    }
    let queues_a = sqs(&derived_prefix(&ns_a, "chat")).await;
    let queues_b = sqs(&derived_prefix(&ns_b, "chat")).await;
    assert_eq!(
        queues_b.queue_tags(1).await.unwrap()[OWNER_TAG],
        format!("{ns_b}/chat")
    );
    let note = PublishEntry {
        body: "team b's message".into(),
        group_id: "1".into(),
        dedup_id: "b-1".into(),
        format: BodyFormat::Task,
    };
    queues_b.publish(1, &[note]).await.unwrap()[0]
        .as_ref()
        .unwrap();

    // A set told to use a prefix whose queues another set owns is refused, and runs nothing.
    let shared = prefix();
    apply(&team_a, &team_set("first", Some(&shared)))
        .await
        .unwrap();
    wait_status(&team_a, "first", "first's queues", |c| {
        c.status.as_ref().unwrap().queues.ready == 4
    })
    .await;
    apply(&team_b, &team_set("second", Some(&shared)))
        .await
        .unwrap();
    let refused = wait_status(&team_b, "second", "the conflict", |c| {
        condition(c, "QueuesReady").is_some_and(|(_, reason, _)| reason == "QueueOwnedByAnotherSet")
    })
    .await;
    let (status, _, message) = condition(&refused, "QueuesReady").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!("owned by {ns_a}/first")),
        "{message}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns_b);
    assert!(
        deployments
            .get_opt("second-producer")
            .await
            .unwrap()
            .is_none(),
        "no producer may publish into another set's queues"
    );

    // Team a deletes its sets with deletionPolicy Delete: only its own queues go.
    delete_and_wait(&team_a, "chat").await;
    assert!(
        queues_a.queue_attributes(1).await.is_err(),
        "a's queues are gone"
    );
    let got = queues_b
        .receive(1, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "b's queue and its message are untouched");
    assert_eq!(got[0].body, "team b's message");
    let b = wait_status(&team_b, "chat", "b still ready", |c| {
        c.status.as_ref().unwrap().queues.ready == 4
    })
    .await;
    assert_eq!(condition(&b, "QueuesReady").unwrap().0, "True");

    // Once the owner of the shared prefix is gone, the refused set makes the queues its own.
    delete_and_wait(&team_a, "first").await;
    // A refused set looks again at its resync (60 s), not at once: nothing tells it the owner left.
    wait(
        "second takes the prefix",
        Duration::from_secs(150),
        || async {
            let c = team_b.get("second").await.ok()?;
            condition(&c, "QueuesReady")
                .is_some_and(|(s, _, _)| s == "True")
                .then_some(())
        },
    )
    .await;
    let queues_shared = sqs(&shared).await;
    assert_eq!(
        queues_shared.queue_tags(1).await.unwrap()[OWNER_TAG],
        format!("{ns_b}/second")
    );

    delete_and_wait(&team_b, "second").await;
    delete_and_wait(&team_b, "chat").await;
    op_a.shutdown().await;
    op_b.shutdown().await;
}
