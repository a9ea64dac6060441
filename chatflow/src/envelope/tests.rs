use super::*;
use crate::protocol::MessageType;

fn task(n: usize, text: &str) -> TaskMessage {
    TaskMessage {
        message_id: format!("m{n}"),
        room_id: 7,
        user_id: "1".into(),
        username: "ann".into(),
        message: text.into(),
        timestamp: "2026-11-28T10:00:00Z".into(),
        message_type: MessageType::Text,
        server_id: "p-0".into(),
        client_ip: "127.0.0.1".into(),
        received_at: "2026-11-28T10:00:00.001Z".into(),
        client_message_id: None,
    }
}

fn single(n: usize, text: &str) -> PublishEntry {
    let t = task(n, text);
    PublishEntry {
        body: serde_json::to_string(&t).unwrap(),
        group_id: "7".into(),
        dedup_id: t.message_id,
        format: BodyFormat::Task,
    }
}

fn fill(packer: &mut Packer, n: usize, text: &str) -> usize {
    (0..n)
        .take_while(|i| packer.push(single(*i, text)).is_ok())
        .count()
}

fn tiny(n: usize) -> PublishEntry {
    PublishEntry {
        body: "1".into(),
        group_id: "7".into(),
        dedup_id: format!("t{n}"),
        format: BodyFormat::Task,
    }
}

#[test]
fn envelopes_carry_every_message_in_order_and_unpack_to_them() {
    let mut p = Packer::new(Packing::Envelope);
    assert_eq!(fill(&mut p, 250, "hello"), 250);
    let entries = p.take();
    assert!(p.is_empty());
    assert_eq!(
        entries.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [250],
        "a backlog fills one envelope before it opens another"
    );
    let (e, _) = &entries[0];
    assert_eq!(e.format, BodyFormat::Envelope);
    assert_eq!(e.group_id, "7");
    let all = unpack(&e.format, &e.body).unwrap();
    assert_eq!(all, (0..250).map(|i| task(i, "hello")).collect::<Vec<_>>());
}

#[test]
fn a_batch_is_full_at_its_byte_budget_and_hands_back_the_next_message() {
    let mut p = Packer::new(Packing::Envelope);
    let n = fill(&mut p, 5000, "x");
    let back = p.push(single(n, "x")).unwrap_err();
    assert_eq!(back.dedup_id, format!("m{n}"));
    let entries = p.take();
    let sizes: Vec<usize> = entries.iter().map(|(_, n)| *n).collect();
    assert!(
        sizes[..sizes.len() - 1]
            .iter()
            .all(|n| *n == ENVELOPE_MAX_MESSAGES),
        "each envelope full before the next opens: {sizes:?}"
    );
    assert!(
        sizes.len() < MAX_BATCH,
        "the bytes ran out first: {sizes:?}"
    );
    let total: usize = entries.iter().map(|(e, _)| e.body.len()).sum();
    assert!(total <= BATCH_MAX_BYTES, "{total}");
    assert!(
        total + back.body.len() > BATCH_MAX_BYTES - 64,
        "refused only when the budget is spent: {total}"
    );
    // The next batch starts empty.
    assert!(p.push(back).is_ok());
}

#[test]
fn a_batch_holds_ten_envelopes_of_their_most_messages() {
    let mut p = Packer::new(Packing::Envelope);
    let pushed = (0..20_000).take_while(|i| p.push(tiny(*i)).is_ok()).count();
    assert_eq!(pushed, MAX_BATCH * ENVELOPE_MAX_MESSAGES);
    let entries = p.take();
    assert_eq!(
        entries.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [ENVELOPE_MAX_MESSAGES; MAX_BATCH]
    );
}

#[test]
fn a_batch_stays_within_its_byte_budget_and_sqs_limits() {
    let long = "é".repeat(500);
    let mut p = Packer::new(Packing::Envelope);
    let n = fill(&mut p, 1000, &long);
    let entries = p.take();
    assert_eq!(entries.iter().map(|(_, n)| n).sum::<usize>(), n);
    let total: usize = entries.iter().map(|(e, _)| e.body.len()).sum();
    assert!(total <= BATCH_MAX_BYTES, "{total}");
    assert!(total < 256 * 1024 - 4096, "{total}");
    assert!(n > 150, "the budget is used, not a fraction of it: {n}");
}

#[test]
fn a_message_larger_than_the_budget_still_travels_alone() {
    let mut p = Packer::new(Packing::Envelope);
    let huge = "y".repeat(BATCH_MAX_BYTES);
    p.push(single(0, "a")).unwrap();
    let back = p.push(single(1, &huge)).unwrap_err();
    assert_eq!(p.take().len(), 1);
    p.push(back).unwrap();
    assert!(p.push(single(2, "b")).is_err());
    let sizes: Vec<usize> = p.take().iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes, [1]);
}

#[test]
fn a_lone_message_goes_in_the_single_format_with_its_own_dedup_id() {
    let mut p = Packer::new(Packing::Envelope);
    p.push(single(7, "alone")).unwrap();
    let entries = p.take();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0], (single(7, "alone"), 1));
    let back = unpack(&entries[0].0.format, &entries[0].0.body).unwrap();
    assert_eq!(back.len(), 1);
}

#[test]
fn single_packing_is_the_original_one_message_per_entry() {
    let mut p = Packer::new(Packing::Single);
    assert_eq!(fill(&mut p, 50, "hi"), MAX_BATCH);
    let entries = p.take();
    assert_eq!(entries.len(), MAX_BATCH);
    for (i, (e, n)) in entries.iter().enumerate() {
        assert_eq!(*n, 1);
        assert_eq!(e, &single(i, "hi"));
        assert_eq!(unpack(&e.format, &e.body).unwrap(), [task(i, "hi")]);
    }
}

#[test]
fn the_same_messages_give_the_same_envelope_id_so_a_retry_is_deduplicated() {
    let pack = |from: usize| {
        let mut p = Packer::new(Packing::Envelope);
        for i in from..from + 5 {
            p.push(single(i, "hi")).unwrap();
        }
        p.take().remove(0).0.dedup_id
    };
    assert_eq!(pack(0), pack(0));
    assert_ne!(pack(0), pack(1));
    assert!(pack(0).len() <= 128);
}

#[test]
fn unreadable_bodies_are_refused_with_the_reason() {
    assert!(matches!(
        unpack(&BodyFormat::Unknown("zstd".into()), "{}"),
        Err(UnpackError::UnknownFormat(f)) if f == "zstd"
    ));
    assert!(matches!(
        unpack(&BodyFormat::Envelope, r#"{"v":2,"messages":[]}"#),
        Err(UnpackError::Version(2))
    ));
    assert!(matches!(
        unpack(&BodyFormat::Envelope, "[1,2"),
        Err(UnpackError::Malformed(_))
    ));
    assert!(matches!(
        unpack(&BodyFormat::Task, r#"{"v":1,"messages":[]}"#),
        Err(UnpackError::Malformed(_))
    ));
}

#[test]
fn packing_names_round_trip() {
    for p in [Packing::Single, Packing::Envelope] {
        assert_eq!(p.to_string().parse::<Packing>().unwrap(), p);
    }
    assert!("zip".parse::<Packing>().is_err());
}

fn of_room(room: u32, n: usize) -> PublishEntry {
    PublishEntry {
        group_id: room.to_string(),
        ..tiny(n)
    }
}

#[test]
fn rooms_sharing_a_batch_get_envelopes_of_their_own_in_order_with_their_tags() {
    let mut p = TaggedPacker::new(Packing::Envelope);
    for (n, room) in [(0, 1), (1, 2), (2, 1), (3, 3), (4, 2), (5, 1)] {
        p.push_tagged(of_room(room, n), n).unwrap();
    }
    let entries = p.take_tagged();
    let groups: Vec<(&str, &[usize])> = entries
        .iter()
        .map(|(e, tags)| (e.group_id.as_str(), tags.as_slice()))
        .collect();
    assert_eq!(
        groups,
        [("1", &[0, 2, 5][..]), ("2", &[1, 4][..]), ("3", &[3][..])]
    );
    assert_eq!(entries[0].0.format, BodyFormat::Envelope);
    assert_eq!(entries[2].0.format, BodyFormat::Task);
}
