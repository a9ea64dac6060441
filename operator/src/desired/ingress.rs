//! The set's public address: an Ingress in front of the producer Service, whose pods serve
//! sending and, as the edge, subscribing. One rule for every room: no per-room paths.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::ResourceExt;

use super::{PRODUCER_PORT, Plan, labels, meta};
use crate::crd::{ChatRoomSet, IngressSpec};

/// Annotation keys a set may put on its Ingress unless the operator's administrator says
/// otherwise: timeouts, stickiness, health checks and TLS of the common controllers. Not among
/// them: nginx's snippets (configuration injected into a controller other tenants share), its
/// `proxy-ssl-*` (they name Secrets in other namespaces), and ALB groups, actions and conditions
/// (a tenant could join another tenant's load balancer or rewrite its rules).
pub const DEFAULT_ANNOTATIONS: &[&str] = &[
    "alb.ingress.kubernetes.io/scheme",
    "alb.ingress.kubernetes.io/target-type",
    "alb.ingress.kubernetes.io/listen-ports",
    "alb.ingress.kubernetes.io/certificate-arn",
    "alb.ingress.kubernetes.io/ssl-policy",
    "alb.ingress.kubernetes.io/ssl-redirect",
    "alb.ingress.kubernetes.io/load-balancer-attributes",
    "alb.ingress.kubernetes.io/target-group-attributes",
    "alb.ingress.kubernetes.io/healthcheck-",
    "alb.ingress.kubernetes.io/success-codes",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
    "nginx.ingress.kubernetes.io/proxy-connect-timeout",
    "nginx.ingress.kubernetes.io/proxy-body-size",
    "nginx.ingress.kubernetes.io/affinity",
    "nginx.ingress.kubernetes.io/affinity-mode",
    "nginx.ingress.kubernetes.io/session-cookie-",
    "nginx.ingress.kubernetes.io/ssl-redirect",
    "cert-manager.io/",
];

/// What the operator's administrator lets a set's `spec.ingress` say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IngressPolicy {
    /// Hosts: exact names, `*.example.com` for its subdomains, or `*` for any.
    pub hosts: Vec<String>,
    /// Annotation keys: exact, or prefixes ending in `/` or `-`.
    pub annotations: Vec<String>,
}

impl Default for IngressPolicy {
    fn default() -> Self {
        IngressPolicy {
            hosts: vec!["*".into()],
            annotations: DEFAULT_ANNOTATIONS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl IngressPolicy {
    /// Why the set's Ingress is not one the operator may apply, if it is not.
    pub fn refusal(&self, crs: &ChatRoomSet) -> Option<String> {
        let spec = crs.spec.ingress.as_ref()?;
        let host = spec.host.to_ascii_lowercase();
        let host_ok = self.hosts.iter().any(|h| {
            let h = h.trim().to_ascii_lowercase();
            h == "*"
                || h == host
                || h.strip_prefix("*.")
                    .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")))
        });
        if !host_ok {
            return Some(format!(
                "spec.ingress.host {:?} is not one the operator may publish: its administrator \
                 lists allowed hosts in ALLOWED_INGRESS_HOSTS (chart value ingress.allowedHosts)",
                spec.host
            ));
        }
        let key_ok = |k: &str| {
            self.annotations.iter().any(|a| {
                let a = a.trim();
                !a.is_empty()
                    && (a == k || ((a.ends_with('/') || a.ends_with('-')) && k.starts_with(a)))
            })
        };
        let refused = spec.annotations.keys().find(|k| !key_ok(k))?;
        Some(format!(
            "spec.ingress.annotations: {refused:?} is not allowed: its administrator lists allowed \
             annotations in ALLOWED_INGRESS_ANNOTATIONS (chart value ingress.allowedAnnotations)"
        ))
    }
}

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
    fn hosts_and_annotations_outside_the_policy_are_refused() {
        let crs = with_ingress(false);
        assert_eq!(IngressPolicy::default().refusal(&crs), None);
        let mut snippet = crs.clone();
        let ingress = snippet.spec.ingress.as_mut().unwrap();
        ingress.annotations.insert(
            "nginx.ingress.kubernetes.io/configuration-snippet".into(),
            "more_set_headers x".into(),
        );
        let why = IngressPolicy::default().refusal(&snippet).unwrap();
        assert!(why.contains("configuration-snippet"), "{why}");
        let narrow = IngressPolicy {
            hosts: vec!["*.chat.example.org".into(), "chat.example.net".into()],
            ..IngressPolicy::default()
        };
        assert!(
            narrow
                .refusal(&crs)
                .unwrap()
                .contains("ALLOWED_INGRESS_HOSTS")
        );
        let mut sub = crs.clone();
        sub.spec.ingress.as_mut().unwrap().host = "eu.chat.example.org".into();
        assert_eq!(narrow.refusal(&sub), None);
        sub.spec.ingress.as_mut().unwrap().host = "evilchat.example.org".into();
        assert!(
            narrow.refusal(&sub).is_some(),
            "a suffix without its dot is not a subdomain"
        );
        assert_eq!(
            narrow.refusal(&sample("demo", 1, 2, 1)),
            None,
            "no ingress, nothing to refuse"
        );
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
