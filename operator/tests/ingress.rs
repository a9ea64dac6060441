//! The set's Ingress against a real kube-apiserver: server-side applied as the spec asks, its
//! content, the public URLs in status, and removal when the spec no longer asks for one.
// A scenario on real servers reads top to bottom, as its steps happen; the length bound is
// for the code under test.
#![allow(clippy::too_many_lines)]

mod support;

use std::time::Duration;

use chatflow_operator::ChatRoomSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::*;

#[tokio::test]
#[ignore = "needs kube-apiserver and LocalStack: run scripts/test"]
async fn an_ingress_is_applied_in_front_of_the_edge_service_and_removed_when_unasked() {
    let _ = NEEDS;
    let client = client().await;
    let ns = namespace(&client).await;
    let op = operator(&client, &ns, "solo", 15).await;
    let api: Api<ChatRoomSet> = Api::namespaced(client.clone(), &ns);
    let prefix = prefix();
    let mut body = set("pub", &prefix, 1, 4, 2);
    body["spec"]["ingress"] = json!({
        "host": "chat.example.com",
        "className": "alb",
        "tlsSecretName": "chat-tls",
        "annotations": {"alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=3600"},
    });
    apply(&api, &body).await.unwrap();
    let crs = wait_status(&api, "pub", "public URLs", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.endpoints.as_ref())
            .is_some_and(|e| !e.public.is_empty())
    })
    .await;
    let endpoints = crs.status.unwrap().endpoints.unwrap();
    assert_eq!(
        endpoints.public,
        [
            "wss://chat.example.com/chat/{roomId}",
            "wss://chat.example.com/subscribe/{roomId}"
        ]
    );
    assert_eq!(
        endpoints.edge,
        format!("ws://pub-producer.{ns}.svc:8080/subscribe/{{roomId}}")
    );

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let ing = ingresses.get("pub-producer").await.unwrap();
    assert!(
        ing.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("chatflow-operator")
                && m.operation.as_deref() == Some("Apply")),
        "server-side applied by the operator"
    );
    assert_eq!(ing.owner_references()[0].name, "pub");
    assert_eq!(
        ing.annotations()["alb.ingress.kubernetes.io/load-balancer-attributes"],
        "idle_timeout.timeout_seconds=3600"
    );
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("alb"));
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("chat.example.com"));
    let paths = &rule.http.as_ref().unwrap().paths;
    assert_eq!(paths.len(), 1, "one rule, no per-room paths");
    let backend = paths[0].backend.service.as_ref().unwrap();
    let port = backend.port.as_ref().unwrap().number.unwrap();
    // The Service it names exists and exposes that port: the edge pods behind it serve
    // /chat and /subscribe (the cluster e2e sends and subscribes through it).
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = services.get(&backend.name).await.unwrap();
    assert!(
        svc.spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .any(|p| p.port == port),
        "{} exposes {port}",
        backend.name
    );

    // Edited by hand, it is put back; dropped from the spec, it goes.
    ingresses
        .patch(
            "pub-producer",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressClassName": "nginx"}})),
        )
        .await
        .unwrap();
    api.patch(
        "pub",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})),
    )
    .await
    .unwrap();
    wait("class restored", Duration::from_secs(30), || async {
        let spec = ingresses.get("pub-producer").await.ok()?.spec?;
        (spec.ingress_class_name.as_deref() == Some("alb")).then_some(())
    })
    .await;
    api.patch(
        "pub",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ingress": null}})),
    )
    .await
    .unwrap();
    wait("ingress removed", Duration::from_secs(30), || async {
        ingresses
            .get_opt("pub-producer")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_status(&api, "pub", "public URLs gone", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.endpoints.as_ref())
            .is_some_and(|e| e.public.is_empty())
    })
    .await;

    api.delete("pub", &DeleteParams::default()).await.unwrap();
    wait("set deleted", Duration::from_secs(60), || async {
        api.get_opt("pub").await.unwrap().is_none().then_some(())
    })
    .await;
    op.shutdown().await;
}
