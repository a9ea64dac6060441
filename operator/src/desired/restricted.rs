//! Pod Security Standards "restricted", as rules on a pod spec: Kubernetes 1.20 has no
//! PodSecurity admission to refuse a pod, so the operator's desired pods and the pods running on
//! a cluster are checked against these rules instead.

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Every way `spec` breaks the restricted profile or ChatFlow's own pod rules (no API token
/// where no API access is needed, requests and limits set), one line each; empty when it meets
/// them. `needs_api` says whether the pod talks to the Kubernetes API.
pub fn violations(spec: &PodSpec, needs_api: bool) -> Vec<String> {
    let mut out = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    let pod_seccomp = pod.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        out.push("pod: shares a host namespace".to_owned());
    }
    if !needs_api && spec.automount_service_account_token != Some(false) {
        out.push("pod: mounts a service-account token it does not need".to_owned());
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        out.extend(
            container(c, pod.run_as_non_root == Some(true), pod_seccomp)
                .into_iter()
                .map(|v| format!("container {}: {v}", c.name)),
        );
    }
    out
}

fn container(c: &Container, pod_non_root: bool, pod_seccomp: Option<&str>) -> Vec<&'static str> {
    let mut out = Vec::new();
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.privileged == Some(true) {
        out.push("privileged");
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push("allowPrivilegeEscalation is not false");
    }
    if !(sc.run_as_non_root == Some(true) || (sc.run_as_non_root.is_none() && pod_non_root)) {
        out.push("runAsNonRoot is not true");
    }
    if sc.run_as_user == Some(0) {
        out.push("runs as UID 0");
    }
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .map(|p| p.type_.as_str())
        .or(pod_seccomp);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        out.push("seccompProfile is not RuntimeDefault or Localhost");
    }
    let caps = sc.capabilities.unwrap_or_default();
    if !caps.drop.unwrap_or_default().iter().any(|d| d == "ALL") {
        out.push("capabilities do not drop ALL");
    }
    if caps
        .add
        .unwrap_or_default()
        .iter()
        .any(|a| a != "NET_BIND_SERVICE")
    {
        out.push("adds a capability other than NET_BIND_SERVICE");
    }
    if sc.read_only_root_filesystem != Some(true) {
        out.push("root filesystem is writable");
    }
    let res = c.resources.clone().unwrap_or_default();
    let has = |m: &Option<std::collections::BTreeMap<String, _>>, k: &str| {
        m.as_ref().is_some_and(|m| m.contains_key(k))
    };
    if !has(&res.requests, "cpu") || !has(&res.requests, "memory") {
        out.push("no cpu and memory requests");
    }
    if !has(&res.limits, "memory") {
        out.push("no memory limit");
    }
    out
}
