use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use hyper::HeaderMap;
use prometheus_client::registry::Registry;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatflow-auth-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn hs_gate(name: &str, tune: impl FnOnce(&mut AuthOptions)) -> Arc<Gate> {
    let mut opts = AuthOptions {
        jwt_secret_file: Some(temp_file(name, SECRET)),
        jwt_leeway_secs: 0,
        ..AuthOptions::default()
    };
    tune(&mut opts);
    Gate::new(&opts, Vec::new(), &mut Registry::default()).unwrap()
}

fn peer() -> SocketAddr {
    "10.1.2.3:5000".parse().unwrap()
}

fn with_bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

#[tokio::test]
async fn a_token_opens_its_rooms_and_no_others() {
    let gate = hs_gate("rooms", |_| {});
    let token = mint_hs256(SECRET, &Claims::new("42", 300, &["1-5"], &["1-5", "9"]));
    let h = with_bearer(&token);
    let pass = gate.admit(&h, peer(), Access::Publish, "3").await.unwrap();
    assert_eq!(pass.grant().unwrap().user_id, Some(42));
    assert!(gate.admit(&h, peer(), Access::Subscribe, "9").await.is_ok());
    for (access, room) in [
        (Access::Publish, "6"),
        (Access::Publish, "9"),
        (Access::Subscribe, "6"),
        (Access::Subscribe, "x"),
    ] {
        let denial = gate.admit(&h, peer(), access, room).await.err().unwrap();
        assert!(matches!(denial, Denial::Room { .. }), "{access:?} {room}");
        assert_eq!(denial.response().status(), 403);
    }
}

#[tokio::test]
async fn missing_forged_expired_and_early_tokens_are_refused_with_401() {
    let gate = hs_gate("bad", |_| {});
    let none = gate
        .admit(&HeaderMap::new(), peer(), Access::Publish, "1")
        .await;
    assert_eq!(none.err().unwrap().response().status(), 401);

    let forged = mint_hs256(
        b"another-secret-another-secret-another",
        &Claims::new("1", 300, &["*"], &["*"]),
    );
    let mut expired = Claims::new("1", 0, &["*"], &["*"]);
    expired.exp -= 10;
    let mut early = Claims::new("1", 300, &["*"], &["*"]);
    early.nbf = Some(expired.exp + 1000);
    let mut bad_rooms = Claims::new("1", 300, &["*"], &["*"]);
    bad_rooms.chatflow.publish.push("5-1".into());
    for (token, why) in [
        (forged, "signature"),
        (mint_hs256(SECRET, &expired), "expired"),
        (mint_hs256(SECRET, &early), "not valid yet"),
        (mint_hs256(SECRET, &bad_rooms), "publish"),
        ("not.a.token".to_owned(), "malformed"),
    ] {
        match gate
            .admit(&with_bearer(&token), peer(), Access::Publish, "1")
            .await
        {
            Err(Denial::BadToken(msg)) => assert!(msg.contains(why), "{msg} lacks {why}"),
            other => panic!("{why}: {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let gate = hs_gate("iss", |o| {
        o.jwt_issuer = Some("https://id.example".into());
        o.jwt_audience = Some("chatflow".into());
    });
    let mut claims = Claims::new("1", 300, &["*"], &["*"]);
    let plain = with_bearer(&mint_hs256(SECRET, &claims));
    let refused = gate.admit(&plain, peer(), Access::Publish, "1").await;
    assert!(refused.is_err(), "no iss and aud");
    claims.iss = Some("https://id.example".into());
    claims.aud = Some(serde_json::json!(["other", "chatflow"]));
    let token = mint_hs256(SECRET, &claims);
    assert!(
        gate.admit(&with_bearer(&token), peer(), Access::Publish, "1")
            .await
            .is_ok()
    );
    claims.iss = Some("https://evil.example".into());
    let token = mint_hs256(SECRET, &claims);
    assert!(
        gate.admit(&with_bearer(&token), peer(), Access::Publish, "1")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn browsers_carry_the_token_in_a_subprotocol() {
    let gate = hs_gate("proto", |_| {});
    let token = mint_hs256(SECRET, &Claims::new("7", 300, &["1"], &["1"]));
    let mut h = HeaderMap::new();
    h.insert(
        "sec-websocket-protocol",
        format!("chatflow, {TOKEN_PROTOCOL_PREFIX}{token}")
            .parse()
            .unwrap(),
    );
    assert_eq!(bearer(&h), Some(token.as_str()));
    assert!(gate.admit(&h, peer(), Access::Subscribe, "1").await.is_ok());
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused_and_programs_pass() {
    let listed = hs_gate("origin", |o| {
        o.jwt_secret_file = None;
        o.allowed_origins = vec!["https://chat.example.com/".into()];
    });
    let same_host = hs_gate("origin2", |o| o.jwt_secret_file = None);
    let origin = |o: &str| {
        let mut h = HeaderMap::new();
        h.insert("origin", o.parse().unwrap());
        h.insert("host", "chat.example.com".parse().unwrap());
        h
    };
    let h = origin("https://chat.example.com");
    let ok = listed.admit(&h, peer(), Access::Publish, "1");
    assert!(ok.await.is_ok());
    let h = origin("https://evil.example");
    let evil = listed.admit(&h, peer(), Access::Publish, "1");
    assert_eq!(evil.await.err().unwrap().response().status(), 403);
    assert!(
        listed
            .admit(&HeaderMap::new(), peer(), Access::Publish, "1")
            .await
            .is_ok()
    );
    // Without a list, a page must come from the host it connects to.
    let h = origin("http://chat.example.com");
    let same = same_host.admit(&h, peer(), Access::Publish, "1");
    assert!(same.await.is_ok());
    let h = origin("http://evil.example");
    let other = same_host.admit(&h, peer(), Access::Publish, "1");
    assert!(matches!(other.await, Err(Denial::Origin(_))));
}

#[tokio::test]
async fn an_address_holds_at_most_its_cap_until_a_connection_goes() {
    let gate = hs_gate("cap", |o| {
        o.jwt_secret_file = None;
        o.max_connections_per_ip = 2;
    });
    let h = HeaderMap::new();
    let a = gate.admit(&h, peer(), Access::Publish, "1").await.unwrap();
    let _b = gate.admit(&h, peer(), Access::Publish, "1").await.unwrap();
    let third = gate.admit(&h, peer(), Access::Publish, "1").await;
    assert_eq!(third.err().unwrap().response().status(), 429);
    let elsewhere: SocketAddr = "10.9.9.9:1".parse().unwrap();
    assert!(
        gate.admit(&h, elsewhere, Access::Publish, "1")
            .await
            .is_ok()
    );
    drop(a);
    assert!(gate.admit(&h, peer(), Access::Publish, "1").await.is_ok());
}

#[tokio::test]
async fn the_deadline_is_the_expiry_plus_grace_or_the_age_limit() {
    let gate = hs_gate("deadline", |o| {
        o.token_expiry_grace_secs = 30;
        o.max_connection_age_secs = 3600;
    });
    let token = mint_hs256(SECRET, &Claims::new("1", 60, &["*"], &["*"]));
    let pass = gate
        .admit(&with_bearer(&token), peer(), Access::Publish, "1")
        .await
        .unwrap();
    let d = pass.deadline().unwrap();
    assert_eq!(d.code, CLOSE_TOKEN_EXPIRED);
    let left = d.at - tokio::time::Instant::now();
    assert!((85..=91).contains(&left.as_secs()), "{left:?}");
    let long = mint_hs256(SECRET, &Claims::new("1", 86_400, &["*"], &["*"]));
    let pass = gate
        .admit(&with_bearer(&long), peer(), Access::Publish, "1")
        .await
        .unwrap();
    assert_eq!(pass.deadline().unwrap().code, crate::ws::CLOSE_GOING_AWAY);
}

/// An ES256 key pair: the PKCS#8 private key and its public JWK.
fn es256_key(kid: &str) -> (Vec<u8>, serde_json::Value) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = pair.to_pkcs8v1().unwrap().as_ref().to_vec();
    let public = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64(&public[1..33]), "y": b64(&public[33..65]),
    });
    (pkcs8, jwk)
}

fn es256_token(pkcs8: &[u8], kid: &str, claims: &Claims) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8),
    )
    .unwrap()
}

#[tokio::test]
async fn a_rotated_jwks_key_is_taken_without_a_restart() {
    let (old_key, old_jwk) = es256_key("old");
    let (new_key, new_jwk) = es256_key("new");
    let path = temp_file(
        "jwks.json",
        serde_json::json!({"keys": [old_jwk]})
            .to_string()
            .as_bytes(),
    );
    let opts = AuthOptions {
        jwks_file: Some(path.clone()),
        ..AuthOptions::default()
    };
    let gate = Gate::new(&opts, Vec::new(), &mut Registry::default()).unwrap();
    let claims = Claims::new("5", 300, &["1"], &["1"]);
    let old = es256_token(&old_key, "old", &claims);
    let new = es256_token(&new_key, "new", &claims);
    assert!(
        gate.admit(&with_bearer(&old), peer(), Access::Publish, "1")
            .await
            .is_ok()
    );
    assert!(
        gate.admit(&with_bearer(&new), peer(), Access::Publish, "1")
            .await
            .is_err()
    );

    std::fs::write(&path, serde_json::json!({"keys": [new_jwk]}).to_string()).unwrap();
    // Unknown kids re-read the file at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(
        gate.admit(&with_bearer(&new), peer(), Access::Publish, "1")
            .await
            .is_ok()
    );
    let gone = gate
        .admit(&with_bearer(&old), peer(), Access::Publish, "1")
        .await;
    assert!(gone.is_err(), "the retired key no longer verifies");
    // An HS256 token cannot pass for one signed with the public key.
    let confused = mint_hs256(b"x", &claims);
    assert!(
        gate.admit(&with_bearer(&confused), peer(), Access::Publish, "1")
            .await
            .is_err()
    );
}
