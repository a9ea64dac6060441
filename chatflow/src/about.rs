//! What a running binary says about itself: the `chatflow_build_info` metric and the `/info`
//! document (version, commit, configuration summary), as Spring's actuator/info did.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The workspace version the binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from: `CHATFLOW_COMMIT` at build time (the image build passes
/// it), `unknown` otherwise.
pub const COMMIT: &str = match option_env!("CHATFLOW_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// The labels of `chatflow_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: &'static str,
    version: &'static str,
    commit: &'static str,
}

/// The `/info` document of one binary.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Which binary: producer, consumer, server, operator.
    pub component: &'static str,
    /// [`VERSION`].
    pub version: &'static str,
    /// [`COMMIT`].
    pub commit: &'static str,
    /// The settings an on-call engineer asks about first; never secrets.
    pub config: serde_json::Value,
}

impl Info {
    /// This build's info for `component`, with its configuration summary.
    pub fn new(component: &'static str, config: serde_json::Value) -> Self {
        Info {
            component,
            version: VERSION,
            commit: COMMIT,
            config,
        }
    }

    /// Registers `chatflow_build_info{component,version,commit} 1`, the usual way to join a
    /// build to any other series.
    pub fn register(&self, registry: &mut Registry) {
        let family = Family::<BuildLabels, Gauge>::default();
        family
            .get_or_create(&BuildLabels {
                component: self.component,
                version: self.version,
                commit: self.commit,
            })
            .set(1);
        registry.register(
            "chatflow_build_info",
            "Always 1; the labels name the running build",
            family,
        );
    }

    /// The document as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("info serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_component_and_version() {
        let info = Info::new("producer", serde_json::json!({"port": 8080}));
        let mut registry = Registry::default();
        info.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let expected = format!(
            "chatflow_build_info{{component=\"producer\",version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1"
        );
        assert!(text.contains(&expected), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&info.to_json()).unwrap();
        assert_eq!(doc["config"]["port"], 8080);
        assert_eq!(doc["component"], "producer");
    }
}
