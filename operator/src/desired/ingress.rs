//! The set's public address: an Ingress in front of the producer Service, whose pods serve
//! sending and, as the edge, subscribing. One rule for every room: no per-room paths.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::ResourceExt;

use super::{PRODUCER_PORT, Plan, labels, meta};
use crate::crd::{ChatRoomSet, IngressSpec};

/// Why the spec's Ingress cannot be made, in one sentence.
pub fn check(spec: &IngressSpec) -> Result<(), String> {
    let host = spec.host.strip_prefix("*.").unwrap_or(&spec.host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if spec.host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!(
            "spec.ingress.host {:?} is not a DNS name (lowercase labels of letters, digits and '-', \
             optionally starting with '*.')",
            spec.host
        ));
    }
    Ok(())
}

/// The public URL templates: sending, then subscribing (`{roomId}` is the room); wss:// when
/// the Ingress terminates TLS (a TLS Secret, or an ALB listener with an ACM certificate).
pub fn public_urls(spec: &IngressSpec) -> Vec<String> {
    let alb_certificate = spec
        .annotations
        .contains_key("alb.ingress.kubernetes.io/certificate-arn");
    let scheme = if spec.tls_secret_name.is_some() || alb_certificate {
        "wss"
    } else {
        "ws"
    };
    ["chat", "subscribe"]
        .map(|route| format!("{scheme}://{}/{route}/{{roomId}}", spec.host))
        .to_vec()
}

/// The Ingress the spec asks for, if it asks for one.
pub fn ingress(crs: &ChatRoomSet, plan: &Plan) -> Option<Ingress> {
    let spec = crs.spec.ingress.as_ref()?;
    let mut metadata = meta(crs, &plan.producer, labels(&crs.name_any(), "edge"));
    metadata.annotations = (!spec.annotations.is_empty()).then(|| spec.annotations.clone());
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: plan.producer.clone(),
            port: Some(ServiceBackendPort {
                number: Some(PRODUCER_PORT),
                name: None,
            }),
        }),
        resource: None,
    };
    Some(Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    // `/chat/{roomId}` and `/subscribe/{roomId}` both reach the edge pods, which
                    // route by path themselves.
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend,
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{plan, tests::sample};

    fn with_ingress(tls: bool) -> ChatRoomSet {
        let mut crs = sample("demo", 1, 20, 5);
        crs.spec.ingress = Some(IngressSpec {
            host: "chat.example.com".into(),
            class_name: Some("alb".into()),
            tls_secret_name: tls.then(|| "chat-tls".into()),
            annotations: [(
                "alb.ingress.kubernetes.io/load-balancer-attributes".to_owned(),
                "idle_timeout.timeout_seconds=3600".to_owned(),
            )]
            .into(),
        });
        crs
    }

    #[test]
    fn one_rule_sends_every_path_of_the_host_to_the_edge_service() {
        let crs = with_ingress(true);
        let p = plan(&crs).unwrap();
        let ing = ingress(&crs, &p).expect("asked for");
        assert_eq!(ing.metadata.name.as_deref(), Some("demo-producer"));
        assert_eq!(
            ing.metadata.annotations.unwrap()["alb.ingress.kubernetes.io/load-balancer-attributes"],
            "idle_timeout.timeout_seconds=3600"
        );
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("alb"));
        let rules = spec.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].host.as_deref(), Some("chat.example.com"));
        let paths = &rules[0].http.as_ref().unwrap().paths;
        assert_eq!(paths.len(), 1, "no per-room paths");
        assert_eq!(paths[0].path.as_deref(), Some("/"));
        let svc = paths[0].backend.service.as_ref().unwrap();
        assert_eq!(
            (svc.name.as_str(), svc.port.as_ref().unwrap().number),
            ("demo-producer", Some(PRODUCER_PORT))
        );
        let tls = spec.tls.unwrap();
        assert_eq!(tls[0].secret_name.as_deref(), Some("chat-tls"));
        assert_eq!(
            public_urls(crs.spec.ingress.as_ref().unwrap()),
            [
                "wss://chat.example.com/chat/{roomId}",
                "wss://chat.example.com/subscribe/{roomId}"
            ]
        );
        assert_eq!(
            public_urls(with_ingress(false).spec.ingress.as_ref().unwrap())[0],
            "ws://chat.example.com/chat/{roomId}"
        );
    }

    #[test]
    fn no_ingress_unless_asked_and_a_bad_host_is_explained() {
        let crs = sample("demo", 1, 20, 5);
        assert!(ingress(&crs, &plan(&crs).unwrap()).is_none());
        for bad in [
            "Chat.example.com",
            "chat.example.com/x",
            "-a.example.com",
            "",
        ] {
            let mut crs = with_ingress(false);
            crs.spec.ingress.as_mut().unwrap().host = bad.into();
            let e = plan(&crs).unwrap_err();
            assert!(e.contains("spec.ingress.host"), "{bad}: {e}");
        }
        let mut wild = with_ingress(false);
        wild.spec.ingress.as_mut().unwrap().host = "*.chat.example.com".into();
        assert!(plan(&wild).is_ok());
    }
}
