use super::*;

fn spec() -> ShardAutoscaling {
    ShardAutoscaling {
        min_shards: 1,
        max_shards: 4,
        target_backlog_per_shard: 100,
        scale_up_stabilization_seconds: 0,
        target_messages_per_second_per_shard: Some(100),
        scale_up_interval_seconds: 60,
        scale_down_cooldown_seconds: 300,
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ranges(names: &[&str]) -> Vec<RoomRange> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

/// Rooms 1..=n, each with its backlog and rate.
fn rooms(loads: &[(u64, f64)]) -> Vec<QueueLoad> {
    loads
        .iter()
        .zip(1..)
        .map(|(&(backlog, rate), room)| QueueLoad {
            rooms: RoomRange::new(room, room).unwrap(),
            backlog,
            rate: Some(rate),
        })
        .collect()
}

fn backlogs(each: u64, n: usize) -> Vec<QueueLoad> {
    rooms(&vec![(each, 0.0); n])
}

#[test]
fn a_shard_past_its_backlog_target_scales_up_at_once_to_what_the_backlog_needs_within_the_maximum()
{
    let one = ranges(&["1-8"]);
    let mut load = backlogs(50, 8);
    load[7].backlog = 0;
    let d = decide(&spec(), None, &one, &load, at(0));
    assert_eq!((d.changed_from, d.status.shards), (Some(1), 4));
    assert_eq!(d.status.assignment, ["1-2", "3-4", "5-6", "7-8"]);
    assert!(
        d.status.reason.contains("backlog 350"),
        "{}",
        d.status.reason
    );
    let d = decide(&spec(), None, &one, &backlogs(5_000, 8), at(0));
    assert_eq!(d.status.shards, 4, "never past maxShards");
}

#[test]
fn a_room_hotter_than_a_shard_s_headroom_gets_a_shard_of_its_own() {
    let even = ranges(&["1-10", "11-20"]);
    let mut load = vec![(0, 4.0); 20];
    let d = decide(&spec(), None, &even, &rooms(&load), at(0));
    assert_eq!(d.changed_from, None, "40 msg/s a shard is within 100");
    assert!(
        d.status.reason.contains("within the target"),
        "{}",
        d.status.reason
    );
    load = vec![(0, 0.0); 20];
    load[6] = (0, 150.0);
    let d = decide(&spec(), None, &even, &rooms(&load), at(0));
    assert_eq!(d.changed_from, Some(2));
    assert_eq!(d.status.assignment, ["1-6", "7-7", "8-20"]);
    assert!(
        d.status.reason.contains("busiest shard 1-10 at 150%")
            && d.status.reason.contains("150 of 100 msg/s")
            && d.status.reason.contains("hottest room 7 at 150%"),
        "{}",
        d.status.reason
    );
    // Alone and still past the target: nothing does better, so nothing moves.
    let placed = ranges(&["1-6", "7-7", "8-20"]);
    let again = decide(&spec(), Some(&d.status), &placed, &rooms(&load), at(120));
    assert_eq!(again.changed_from, None);
    assert!(
        again.status.reason.contains("no placement"),
        "{}",
        again.status.reason
    );
}

#[test]
fn a_change_waits_for_the_interval_after_the_last_one() {
    let first = decide(&spec(), None, &ranges(&["1-4"]), &backlogs(60, 4), at(0)).status;
    assert_eq!(first.assignment, ["1-1", "2-2", "3-3", "4-4"]);
    let two = ranges(&["1-2", "3-4"]);
    let d = decide(&spec(), Some(&first), &two, &backlogs(60, 4), at(30));
    assert_eq!(d.changed_from, None);
    assert_eq!(d.recheck_in, Some(std::time::Duration::from_secs(30)));
    let d = decide(&spec(), Some(&first), &two, &backlogs(60, 4), at(61));
    assert_eq!((d.changed_from, d.status.shards), (Some(2), 4));
}

#[test]
fn fewer_shards_only_after_the_cooldown_a_rise_resets_it_and_the_minimum_is_spread_evenly() {
    let mut s = spec();
    s.min_shards = 2;
    let four = ranges(&["1-5", "6-10", "11-15", "16-20"]);
    let up = AutoscalingStatus {
        shards: 4,
        last_scale_time: Some(at(0).to_string()),
        ..Default::default()
    };
    let quiet = rooms(&[(0, 1.0); 20]);
    let low = decide(&s, Some(&up), &four, &quiet, at(100));
    assert_eq!(low.changed_from, None);
    assert!(low.status.low_since.is_some());
    assert_eq!(low.recheck_in, Some(std::time::Duration::from_secs(300)));
    // Busy again within the cooldown: the clock starts over.
    let busy = decide(
        &s,
        Some(&low.status),
        &four,
        &rooms(&[(0, 18.0); 20]),
        at(200),
    );
    assert_eq!(
        (busy.changed_from, busy.status.low_since.clone()),
        (None, None)
    );
    let low = decide(&s, Some(&busy.status), &four, &quiet, at(300)).status;
    let d = decide(&s, Some(&low), &four, &quiet, at(599));
    assert_eq!(d.changed_from, None);
    let d = decide(&s, Some(&low), &four, &quiet, at(600));
    assert_eq!(d.changed_from, Some(4));
    assert_eq!(d.status.assignment, ["1-10", "11-20"]);
    assert!(
        d.status.reason.contains("fits 2 shards"),
        "{}",
        d.status.reason
    );
}

#[test]
fn an_unmeasured_rate_holds_shards_but_does_not_hide_a_measured_overload() {
    let four = ranges(&["1-5", "6-10", "11-15", "16-20"]);
    let mut load = rooms(&[(0, 0.0); 20]);
    load[12].rate = None;
    let d = decide(&spec(), None, &four, &load, at(0));
    assert_eq!((d.changed_from, d.status.low_since), (None, None));
    assert!(
        d.status.reason.contains("not measured"),
        "{}",
        d.status.reason
    );
    load[2].rate = Some(500.0);
    let d = decide(&spec(), None, &four, &load, at(0));
    assert_eq!(d.changed_from, Some(4));
}

#[test]
fn the_plan_keeps_a_valid_assignment_and_otherwise_spreads_the_decided_count() {
    let queues: Vec<RoomRange> = rooms(&[(0, 0.0); 20]).iter().map(|l| l.rooms).collect();
    let mut s = spec();
    s.min_shards = 2;
    let names = |r: Vec<RoomRange>| r.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(names(placement(&s, None, &queues)), ["1-10", "11-20"]);
    let mut status = AutoscalingStatus {
        shards: 3,
        assignment: vec!["1-6".into(), "7-7".into(), "8-20".into()],
        ..Default::default()
    };
    assert_eq!(
        names(placement(&s, Some(&status), &queues)),
        ["1-6", "7-7", "8-20"]
    );
    // A gap, or rooms the set no longer has: the decided count, evenly.
    status.assignment = vec!["1-6".into(), "8-20".into(), "7-7".into()];
    assert_eq!(
        names(placement(&s, Some(&status), &queues)),
        ["1-7", "8-14", "15-20"]
    );
    status.assignment = vec!["1-6".into(), "7-7".into(), "8-30".into()];
    assert_eq!(placement(&s, Some(&status), &queues).len(), 3);
    // A lowered maximum wins over an assignment made before it.
    s.max_shards = 2;
    assert_eq!(
        names(placement(&s, Some(&status), &queues)),
        ["1-10", "11-20"]
    );
}

#[test]
fn the_bounds_are_checked() {
    let mut s = spec();
    assert_eq!(shards(&s, None), 1);
    let status = AutoscalingStatus {
        shards: 9,
        ..Default::default()
    };
    assert_eq!(shards(&s, Some(&status)), 4, "a lowered maximum wins");
    s.min_shards = 0;
    assert!(check(&s).is_err());
    s.min_shards = 5;
    assert!(check(&s).unwrap_err().contains("below minShards"));
}

#[test]
fn one_burst_past_the_target_moves_nothing_a_sustained_one_does_after_the_stabilization() {
    let mut s = spec();
    s.scale_up_stabilization_seconds = 30;
    let even = ranges(&["1-10", "11-20"]);
    let mut hot = vec![(0, 0.0); 20];
    hot[6] = (0, 150.0);
    let first = decide(&s, None, &even, &rooms(&hot), at(0));
    assert_eq!(first.changed_from, None);
    assert_eq!(first.recheck_in, Some(std::time::Duration::from_secs(30)));
    assert!(first.status.high_since.is_some());
    // A shard that was catching up: the next measurement is back within the target.
    let calm = decide(
        &s,
        Some(&first.status),
        &even,
        &rooms(&[(0, 4.0); 20]),
        at(15),
    );
    assert_eq!(
        (calm.changed_from, calm.status.high_since.clone()),
        (None, None)
    );
    let again = decide(&s, Some(&calm.status), &even, &rooms(&hot), at(30));
    assert_eq!(again.changed_from, None, "the clock starts over");
    let held = decide(&s, Some(&again.status), &even, &rooms(&hot), at(45));
    assert_eq!(held.changed_from, None);
    let placed = decide(&s, Some(&held.status), &even, &rooms(&hot), at(60));
    assert_eq!(placed.changed_from, Some(2));
    assert_eq!(placed.status.assignment, ["1-6", "7-7", "8-20"]);
    assert_eq!(placed.status.high_since, None);
}
