use super::*;
use crate::crd::ChatRoomSetStatus;
use crate::desired::plan;
use crate::desired::tests::sample;

fn shard(name: &str, rooms: &str, ready: i32) -> ShardStatus {
    ShardStatus {
        name: name.into(),
        rooms: rooms.into(),
        service: name.into(),
        ready_replicas: ready,
        backlog: None,
        messages_per_second: None,
    }
}

fn all_ready() -> Observed {
    Observed {
        queues_ready: 20,
        queue_error: None,
        queue_conflict: None,
        producer_ready: 2,
        producer_replicas: 3,
        shards: vec![
            shard("demo-consumer-1-10", "1-10", 1),
            shard("demo-consumer-11-20", "11-20", 1),
        ],
        lingering_shards: 0,
        autoscaling: None,
        producer_autoscaling: None,
    }
}

fn cond<'a>(s: &'a ChatRoomSetStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

#[test]
fn everything_ready_makes_the_set_ready_with_counts_and_endpoints() {
    let mut crs = sample("demo", 1, 20, 10);
    crs.metadata.generation = Some(3);
    let s = compute(&crs, &plan(&crs).unwrap(), &all_ready());
    assert_eq!(
        cond(&s, "Ready"),
        ("True", "Ready", "queues, producer and consumers are ready")
    );
    assert_eq!(
        cond(&s, "QueuesReady"),
        ("True", "QueuesEnsured", "20 of 20 queues ready")
    );
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(
        (s.queues.desired, s.queues.ready, s.shard_count),
        (20, 20, 2)
    );
    assert_eq!(s.rooms.as_deref(), Some("1-20"));
    let producer = s.producer.unwrap();
    assert_eq!((producer.ready_replicas, producer.replicas), (2, 3));
    // What an autoscaler reading the scale subresource counts pods with.
    assert_eq!(
        producer.selector.as_deref().unwrap_or_default(),
        "app.kubernetes.io/instance=demo,app.kubernetes.io/component=producer,chatflow.dev/workload=demo-producer"
    );
    assert!(
        s.endpoints
            .unwrap()
            .ingest
            .starts_with("ws://demo-producer.chat.svc:8080/chat/")
    );
}

#[test]
fn the_first_failing_part_names_why_the_set_is_not_ready() {
    let crs = sample("demo", 1, 20, 10);
    let p = plan(&crs).unwrap();

    let mut o = all_ready();
    o.queues_ready = 12;
    o.queue_error = Some("connection refused".into());
    let s = compute(&crs, &p, &o);
    assert_eq!(
        cond(&s, "QueuesReady"),
        (
            "False",
            "QueueServiceUnavailable",
            "12 of 20 queues ready: connection refused"
        )
    );
    assert_eq!(cond(&s, "Ready").1, "QueuesNotReady");

    let mut o = all_ready();
    o.producer_ready = 1;
    let s = compute(&crs, &p, &o);
    assert_eq!(
        cond(&s, "ProducerReady"),
        ("False", "ReplicasNotReady", "1 of 2 replicas ready")
    );
    assert_eq!(
        cond(&s, "Ready"),
        ("False", "ProducerNotReady", "1 of 2 replicas ready")
    );

    let mut o = all_ready();
    o.shards[1].ready_replicas = 0;
    let s = compute(&crs, &p, &o);
    assert_eq!(
        cond(&s, "ConsumersReady"),
        ("False", "ShardsNotReady", "1 of 2 shards ready")
    );
    assert_eq!(cond(&s, "Ready").1, "ConsumersNotReady");
}

#[test]
fn a_reshard_waiting_for_old_shards_says_so() {
    let crs = sample("demo", 1, 20, 10);
    let mut o = all_ready();
    o.lingering_shards = 3;
    let s = compute(&crs, &plan(&crs).unwrap(), &o);
    assert_eq!(
        cond(&s, "ConsumersReady"),
        (
            "False",
            "Resharding",
            "waiting for 3 removed shards to stop before starting new shards"
        )
    );
}

#[test]
fn transition_times_hold_while_a_condition_holds() {
    let mut crs = sample("demo", 1, 20, 10);
    let p = plan(&crs).unwrap();
    let first = compute(&crs, &p, &all_ready());
    crs.status = Some(first.clone());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut o = all_ready();
    o.producer_ready = 0;
    let second = compute(&crs, &p, &o);
    let time = |s: &ChatRoomSetStatus, t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(time(&first, "QueuesReady"), time(&second, "QueuesReady"));
    assert_ne!(
        time(&first, "ProducerReady"),
        time(&second, "ProducerReady")
    );
}

#[test]
fn an_invalid_spec_keeps_the_last_counts_and_reports_only_ready_false() {
    let mut crs = sample("demo", 1, 20, 10);
    crs.status = Some(compute(&crs, &plan(&crs).unwrap(), &all_ready()));
    crs.metadata.generation = Some(4);
    assert!(!already_invalid(&crs, "end before start"));
    let s = invalid(&crs, "end before start");
    assert_eq!(s.conditions.len(), 1);
    assert_eq!(
        cond(&s, "Ready"),
        ("False", "InvalidSpec", "end before start")
    );
    assert_eq!((s.queues.ready, s.observed_generation), (20, Some(4)));
    crs.status = Some(s);
    assert!(already_invalid(&crs, "end before start"));
}

#[test]
fn queues_of_another_set_are_named_in_the_condition_and_nothing_is_ready() {
    let crs = sample("demo", 1, 20, 10);
    let p = plan(&crs).unwrap();
    let mut o = all_ready();
    o.queues_ready = 18;
    o.queue_conflict = Some("2 of 20 queues belong to another ChatRoomSet (first: x)".into());
    let s = compute(&crs, &p, &o);
    let q = s
        .conditions
        .iter()
        .find(|c| c.type_ == "QueuesReady")
        .unwrap();
    assert_eq!(q.status, "False");
    assert_eq!(q.reason, "QueueOwnedByAnotherSet");
    assert!(
        q.message.contains("belong to another ChatRoomSet"),
        "{}",
        q.message
    );
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
}

#[test]
fn a_long_queue_error_is_summarized_on_one_line() {
    let crs = sample("demo", 1, 20, 10);
    let p = plan(&crs).unwrap();
    let mut o = all_ready();
    o.queues_ready = 0;
    o.queue_error = Some(format!(
        "unhandled error\n<html>{}</html>",
        "x".repeat(5000)
    ));
    let s = compute(&crs, &p, &o);
    let q = s
        .conditions
        .iter()
        .find(|c| c.type_ == "QueuesReady")
        .unwrap();
    assert_eq!(q.reason, "QueueServiceUnavailable");
    assert!(!q.message.contains('\n'), "{}", q.message);
    assert!(q.message.chars().count() < 260, "{}", q.message.len());
}
