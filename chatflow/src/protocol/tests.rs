use super::*;

fn frame(
    user_id: &str,
    username: &str,
    message: &str,
    timestamp: &str,
    message_type: &str,
) -> String {
    format!(
        r#"{{"userId":{user_id},"username":{username},"message":{message},"timestamp":{timestamp},"messageType":{message_type}}}"#
    )
}

fn with_user(user_id: &str) -> String {
    frame(
        user_id,
        r#""alice1""#,
        r#""hi""#,
        r#""2026-11-27T10:00:00Z""#,
        r#""TEXT""#,
    )
}

fn with_username(username: &str) -> String {
    frame(
        "1",
        &serde_json::to_string(username).unwrap(),
        r#""hi""#,
        r#""2026-11-27T10:00:00Z""#,
        r#""TEXT""#,
    )
}

fn with_message(message: &str) -> String {
    frame(
        "1",
        r#""alice1""#,
        &serde_json::to_string(message).unwrap(),
        r#""2026-11-27T10:00:00Z""#,
        r#""TEXT""#,
    )
}

fn with_timestamp(ts: &str) -> String {
    frame(
        "1",
        r#""alice1""#,
        r#""hi""#,
        &serde_json::to_string(ts).unwrap(),
        r#""TEXT""#,
    )
}

fn with_type(t: &str) -> String {
    frame(
        "1",
        r#""alice1""#,
        r#""hi""#,
        r#""2026-11-27T10:00:00Z""#,
        &serde_json::to_string(t).unwrap(),
    )
}

fn code(f: &str) -> Result<(), (ErrorCode, String)> {
    ConversationMessage::parse(f.as_bytes())
        .map(|_| ())
        .map_err(|r| (r.code, r.reason))
}

fn assert_validation(f: &str, reason_contains: &str) {
    match code(f) {
        Err((ErrorCode::ValidationError, reason)) => {
            assert!(
                reason.contains(reason_contains),
                "{f}: reason {reason:?} lacks {reason_contains:?}"
            )
        }
        other => panic!("{f}: expected VALIDATION_ERROR, got {other:?}"),
    }
}

#[test]
fn user_id_edges() {
    let table: &[(&str, Option<u32>)] = &[
        ("0", None),
        ("1", Some(1)),
        ("100000", Some(100_000)),
        ("100001", None),
        (r#"" 42 ""#, Some(42)),
        ("42", Some(42)),
        (r#""42""#, Some(42)),
        (r#""4.2""#, None),
        ("4.2", None),
        (r#""abc""#, None),
        ("-1", None),
        (r#""""#, None),
        ("18446744073709551617", None),
    ];
    for (raw, want) in table {
        let got = ConversationMessage::parse(with_user(raw).as_bytes());
        match want {
            Some(id) => assert_eq!(got.expect(raw).user_id, *id, "userId {raw}"),
            None => assert_validation(
                &with_user(raw),
                "userId must be an integer between 1 and 100000",
            ),
        }
    }
}

#[test]
fn user_id_of_wrong_type_is_a_validation_error() {
    assert_validation(&with_user("true"), "userId must be a string or a number");
    assert_validation(&with_user("[1]"), "userId must be a string or a number");
}

#[test]
fn username_edges() {
    for ok in ["abc", "a1b2c3d4e5f6g7h8i9j0", "ABC123"] {
        assert!(code(&with_username(ok)).is_ok(), "{ok}");
    }
    for bad in ["ab", "a1b2c3d4e5f6g7h8i9j0k", "ab c", "ab_c", "élan", ""] {
        assert_validation(
            &with_username(bad),
            "username must be 3-20 letters or digits",
        );
    }
}

#[test]
fn message_edges_count_characters_not_bytes() {
    assert!(code(&with_message("x")).is_ok());
    assert!(code(&with_message(&"x".repeat(500))).is_ok());
    assert!(
        code(&with_message(&"é".repeat(500))).is_ok(),
        "500 two-byte characters"
    );
    assert!(
        code(&with_message(&"😀".repeat(500))).is_ok(),
        "500 four-byte characters"
    );
    assert_validation(&with_message(&"x".repeat(501)), "at most 500 characters");
    assert_validation(&with_message(&"é".repeat(501)), "at most 500 characters");
    assert_validation(&with_message(""), "must not be empty or blank");
    assert_validation(&with_message("   \t\n"), "must not be empty or blank");
    // Blank as Java's String.isBlank sees it: U+001C-U+001F are whitespace, no-break spaces
    // are not.
    assert_validation(
        &with_message("\u{001C}\u{2003}"),
        "must not be empty or blank",
    );
    assert!(
        code(&with_message("\u{00A0}")).is_ok(),
        "a no-break space is text to Java"
    );
    assert!(code(&with_message("\u{202F}")).is_ok());
}

#[test]
fn timestamp_needs_an_offset() {
    for ok in [
        "2026-11-27T10:00:00Z",
        "2026-11-27T10:00:00.123+02:00",
        "2026-11-27T10:00:00-05:30",
        // Java's OffsetDateTime.parse takes a time without seconds.
        "2026-11-27T10:00Z",
        "2026-11-27T10:00+01:00",
    ] {
        assert!(code(&with_timestamp(ok)).is_ok(), "{ok}");
    }
    for bad in [
        // RFC 3339 allows a space for the T; Java's OffsetDateTime.parse does not.
        "2026-11-27 10:00:00Z",
        "2026-11-27T10Z",
        "2026-11-27T10:00:00",
        "2026-11-27",
        "yesterday",
        "2026-13-27T10:00:00Z",
        "",
    ] {
        assert_validation(
            &with_timestamp(bad),
            "timestamp must be an ISO-8601 date-time with an offset",
        );
    }
}

#[test]
fn timestamp_fractions_stop_at_nanoseconds_as_in_java() {
    assert!(code(&with_timestamp("2026-11-27T10:00:00.123456789Z")).is_ok());
    let long = format!("2026-11-27T10:00:00.{}Z", "1".repeat(10_000));
    for bad in ["2026-11-27T10:00:00.1234567891Z", long.as_str()] {
        assert_validation(
            &with_timestamp(bad),
            "timestamp may have at most 9 digits of fractional seconds",
        );
    }
}

#[test]
fn message_type_is_exact() {
    for ok in ["TEXT", "JOIN", "LEAVE"] {
        assert!(code(&with_type(ok)).is_ok(), "{ok}");
    }
    for bad in ["text", "Join", "LEAVE ", "PING", ""] {
        assert_validation(
            &with_type(bad),
            "messageType must be exactly TEXT, JOIN or LEAVE",
        );
    }
}

#[test]
fn missing_fields_are_named() {
    for field in ["userId", "username", "message", "timestamp", "messageType"] {
        let mut v: serde_json::Value = serde_json::from_str(&with_user("1")).unwrap();
        v.as_object_mut().unwrap().remove(field);
        assert_validation(&v.to_string(), &format!("{field} is required"));
    }
}

#[test]
fn non_json_and_non_objects_are_invalid_json() {
    for bad in [
        "",
        "{",
        "hello",
        "{\"userId\":1,}",
        "[1,2]",
        "42",
        "\"str\"",
    ] {
        match code(bad) {
            Err((ErrorCode::InvalidJson, _)) => {}
            other => panic!("{bad:?}: expected INVALID_JSON, got {other:?}"),
        }
    }
}

#[test]
fn client_message_id_is_echoed_on_errors_and_bounded() {
    let f = r#"{"userId":0,"username":"alice1","message":"hi","timestamp":"2026-11-27T10:00:00Z","messageType":"TEXT","clientMessageId":"c-1"}"#;
    let r = ConversationMessage::parse(f.as_bytes()).unwrap_err();
    assert_eq!(r.client_message_id.as_deref(), Some("c-1"));

    let long = "x".repeat(129);
    let f = format!(
        r#"{{"userId":1,"username":"alice1","message":"hi","timestamp":"2026-11-27T10:00:00Z","messageType":"TEXT","clientMessageId":"{long}"}}"#
    );
    assert_validation(&f, "clientMessageId must be 1-128");
    let f = f.replace(&long, &"x".repeat(128));
    assert_eq!(
        ConversationMessage::parse(f.as_bytes())
            .unwrap()
            .client_message_id
            .unwrap()
            .len(),
        128
    );
}

#[test]
fn a_wrong_typed_field_keeps_the_client_message_id() {
    let f = r#"{"userId":1,"username":7,"message":"hi","timestamp":"2026-11-27T10:00:00Z","messageType":"TEXT","clientMessageId":"c-9"}"#;
    let r = ConversationMessage::parse(f.as_bytes()).unwrap_err();
    assert_eq!(r.code, ErrorCode::ValidationError);
    assert_eq!(r.reason, "username must be a string");
    assert_eq!(r.client_message_id.as_deref(), Some("c-9"));
}

#[test]
fn escaped_text_round_trips() {
    let m = ConversationMessage::parse(with_message("line\n\"quoted\" \\ é").as_bytes()).unwrap();
    assert_eq!(m.message, "line\n\"quoted\" \\ é");
}

#[test]
fn wire_names_match_the_design() {
    let task = TaskMessage {
        message_id: "m".into(),
        room_id: 3,
        user_id: "7".into(),
        username: "bob".into(),
        message: "hi".into(),
        timestamp: "t".into(),
        message_type: MessageType::Join,
        server_id: "s".into(),
        client_ip: "127.0.0.1".into(),
        received_at: "r".into(),
        client_message_id: None,
    };
    let v = serde_json::to_value(&task).unwrap();
    for key in [
        "messageId",
        "roomId",
        "userId",
        "username",
        "message",
        "timestamp",
        "messageType",
        "serverId",
        "clientIp",
        "receivedAt",
    ] {
        assert!(v.get(key).is_some(), "TaskMessage lacks {key}");
    }
    assert_eq!(v["messageType"], "JOIN");
    let event = BroadcastEvent::from_task(task, "now".into());
    let json: serde_json::Value =
        serde_json::from_slice(&SubscriberFrame::from(event.clone()).to_json()).unwrap();
    assert_eq!(json["status"], "OK");
    assert_eq!(json["serverTimestamp"], "now");
    let notice = RecoveryNotice {
        after: Position {
            sequence: 7,
            index: 0,
        },
        recovered: false,
        replayed: 2,
    };
    let text = SubscriberFrame::from(notice.clone()).to_json();
    assert!(
        text.starts_with(br#"{"status":"RECOVERY""#),
        "clients may tell a notice by its first bytes"
    );
    for (bytes, frame) in [
        (text, SubscriberFrame::Recovery(notice)),
        (
            SubscriberFrame::from(event.clone()).to_json(),
            SubscriberFrame::Event(event),
        ),
    ] {
        assert_eq!(
            serde_json::from_slice::<SubscriberFrame>(&bytes).unwrap(),
            frame
        );
    }

    let err = ErrorReply {
        status: "ERROR".into(),
        error_code: ErrorCode::InvalidRoom,
        error_message: "x".into(),
        server_timestamp: "now".into(),
        client_message_id: None,
    };
    let s = serde_json::to_string(&err).unwrap();
    assert!(s.contains(r#""errorCode":"INVALID_ROOM""#), "{s}");
    assert!(
        matches!(serde_json::from_str::<Reply>(&s).unwrap(), Reply::Error(e) if e.error_code == ErrorCode::InvalidRoom)
    );
}

#[test]
fn escaped_strings_are_read_as_the_text_they_stand_for() {
    let f = frame(
        r#""\u0034\u0032""#,
        r#""al\u0069ce""#,
        r#""line one\nsays \"hi\" \u00e9\ud83d\ude00""#,
        r#""2026-11-27T10:00:00Z""#,
        r#""T\u0045XT""#,
    );
    let m = ConversationMessage::parse(f.as_bytes()).expect("valid");
    assert_eq!(m.user_id, 42);
    assert_eq!(m.username, "alice");
    assert_eq!(m.message, "line one\nsays \"hi\" é😀");
    assert_eq!(m.message_type, MessageType::Text);
}

#[test]
fn a_queue_body_is_held_to_the_producer_s_rules_and_its_room() {
    let ok = TaskMessage {
        message_id: "m-1".into(),
        room_id: 3,
        user_id: "42".into(),
        username: "alice1".into(),
        message: "hi".into(),
        timestamp: "2026-11-27T10:00:00Z".into(),
        message_type: MessageType::Text,
        server_id: "p-1".into(),
        client_ip: "10.0.0.1".into(),
        received_at: "2026-11-27T10:00:00Z".into(),
        client_message_id: Some("c-1".into()),
    };
    assert_eq!(ok.recheck(3), Ok(()));
    assert!(ok.recheck(4).unwrap_err().contains("room 4"));
    type Breaks = fn(&mut TaskMessage);
    let broken: [(&str, Breaks); 6] = [
        ("userId", |t| t.user_id = "100001".into()),
        ("username", |t| t.username = "a b".into()),
        ("message", |t| t.message = "x".repeat(501)),
        ("timestamp", |t| t.timestamp = "yesterday".into()),
        ("clientMessageId", |t| {
            t.client_message_id = Some("x".repeat(129))
        }),
        ("serverId", |t| t.server_id = "s".repeat(300)),
    ];
    for (field, breaks) in broken {
        let mut t = ok.clone();
        breaks(&mut t);
        let why = t.recheck(3).unwrap_err();
        assert!(why.contains(field), "{field}: {why}");
    }
}
