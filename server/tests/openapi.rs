//! docs/openapi.yaml against the standalone server: every route the server lists is described,
//! every described route is served, and each answers a plain request with a status (and, where
//! described, the fields) the description gives.

use std::collections::BTreeSet;

use chatflow_server::{ServerConfig, start};
use chatflow_testkit::http_request;
use serde_json::Value;

const KEY: &str = "openapi-test-key-0123456789";

fn description() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// A described schema, following one `$ref`.
fn schema<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => s,
    }
}

#[tokio::test]
async fn the_openapi_description_matches_the_routes_and_their_answers() {
    let doc = description();
    let mut config = ServerConfig::local(1, 10);
    config.producer.api_key = Some(chatflow_producer::config::ApiKey(KEY.to_owned()));
    let queues = config.producer.queue.connect().await.unwrap();
    let srv = start(config, queues).await.unwrap();
    let addr = srv.addr;

    // The routes the server says it has (its 404 lists them), pages aside.
    let (status, listing) = http_request(addr, "GET", "/no-such-route", &[], "").await;
    assert_eq!(status, 404);
    let served: BTreeSet<String> = listing
        .trim()
        .trim_start_matches("not found: use ")
        .split(", ")
        .filter(|r| *r != "/" && !r.ends_with(".html") && !r.ends_with(".js"))
        .map(str::to_owned)
        .collect();
    let described: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(served, described, "routes served vs described");

    let auth = format!("apikey {KEY}");
    let message = serde_json::json!({
        "userId": 5, "username": "openapi", "message": "described",
        "timestamp": "2026-12-07T10:00:00Z", "messageType": "TEXT",
    })
    .to_string();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path.replace("{roomId}", "1");
            let (status, body) = match method.as_str() {
                "post" => {
                    http_request(
                        addr,
                        "POST",
                        &concrete,
                        &[("authorization", &auth)],
                        &message,
                    )
                    .await
                }
                "get" => http_request(addr, "GET", &concrete, &[], "").await,
                other => panic!("{path}: method {other} not exercised"),
            };
            let answer = &op["responses"][status.to_string()];
            assert!(
                !answer.is_null(),
                "{method} {path} answered {status}, which is not described: {body}"
            );
            let Some(s) = answer["content"]["application/json"].get("schema") else {
                continue;
            };
            let s = schema(&doc, s);
            let v: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
            for field in s["required"].as_array().into_iter().flatten() {
                let field = field.as_str().unwrap();
                assert!(
                    v.get(field).is_some(),
                    "{method} {path}: the answer lacks {field}: {body}"
                );
            }
        }
    }
    srv.shutdown().await;
}
