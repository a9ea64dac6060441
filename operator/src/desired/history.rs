//! `spec.history` on the consumer pods: the history store's URL (inline or from a Secret), its
//! limits, and a key prefix of the set's own, so sets sharing a store keep apart.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;

use crate::crd::{ChatRoomSet, HistorySpec, HistoryStore};

/// Why a set's `spec.history` cannot be served, if it cannot.
pub fn check(history: Option<&HistorySpec>) -> Result<(), String> {
    let Some(h) = history else {
        return Ok(());
    };
    match (h.store, &h.url, &h.url_secret_ref) {
        (HistoryStore::Memory, None, None) => Ok(()),
        (HistoryStore::Memory, _, _) => Err(
            "spec.history names a store URL but spec.history.store is memory: set store: redis"
                .into(),
        ),
        (HistoryStore::Redis, Some(_), Some(_)) => {
            Err("spec.history: set url or urlSecretRef, not both".into())
        }
        (HistoryStore::Redis, None, None) => Err(
            "spec.history.store is redis: set spec.history.url or spec.history.urlSecretRef".into(),
        ),
        (HistoryStore::Redis, Some(url), None) => check_url(url),
        (HistoryStore::Redis, None, Some(_)) => Ok(()),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "spec.history.url {url:?} is not a redis:// or rediss:// URL"
        ));
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err(format!(
            "spec.history.url: scheme {scheme:?} is not redis or rediss"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        // The spec is readable by anyone who can list the set; a password belongs in a Secret.
        return Err(
            "spec.history.url carries credentials: put the URL in a Secret and name it with \
             spec.history.urlSecretRef"
                .into(),
        );
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("spec.history.url {url:?} names no host"));
    }
    Ok(())
}

fn var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// The set's Redis store, when `spec.history.store` is redis.
fn redis(crs: &ChatRoomSet) -> Option<&HistorySpec> {
    crs.spec
        .history
        .as_ref()
        .filter(|h| h.store == HistoryStore::Redis)
}

/// `name` set to the store's URL, inline or from its Secret.
fn url_var(h: &HistorySpec, name: &str) -> Option<EnvVar> {
    Some(match (&h.url, &h.url_secret_ref) {
        (Some(url), _) => var(name, url.clone()),
        (None, Some(r)) => EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
        (None, None) => return None,
    })
}

/// The set's own prefix of store keys. The uid too: a set deleted and made again under its
/// name starts a history of its own, rather than one whose positions it may not continue.
fn key_prefix(crs: &ChatRoomSet) -> String {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    let uid = crs.uid().unwrap_or_default();
    format!("chatflow:{ns}:{}:{uid}", crs.name_any())
}

/// The producer's env for presence: the history store, shared by every producer pod, holds who
/// is in each room. Without one presence is off: a pod's own subscribers are not a room's.
pub fn producer_env(crs: &ChatRoomSet) -> Vec<EnvVar> {
    let Some(url) = redis(crs).and_then(|h| url_var(h, "PRESENCE_STORE_URL")) else {
        return vec![var("PRESENCE", "false".into())];
    };
    vec![url, var("PRESENCE_KEY_PREFIX", key_prefix(crs))]
}

/// The consumer's env for `spec.history` (none for memory-only history).
pub fn consumer_env(crs: &ChatRoomSet) -> Vec<EnvVar> {
    let Some(h) = redis(crs) else {
        return Vec::new();
    };
    let Some(url) = url_var(h, "HISTORY_STORE_URL") else {
        return Vec::new();
    };
    let mut env = vec![url, var("HISTORY_KEY_PREFIX", key_prefix(crs))];
    if let Some(n) = h.max_length {
        env.push(var("HISTORY_MAX_LEN", n.to_string()));
    }
    if let Some(s) = h.max_age_seconds {
        env.push(var("HISTORY_MAX_AGE_SECS", s.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyRef;

    fn redis(url: Option<&str>, secret: bool) -> HistorySpec {
        HistorySpec {
            store: HistoryStore::Redis,
            url: url.map(str::to_owned),
            url_secret_ref: secret.then(|| KeyRef {
                name: "cache".into(),
                key: "url".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_store_is_named_once_and_never_with_a_password_in_the_spec() {
        assert!(check(None).is_ok());
        assert!(check(Some(&HistorySpec::default())).is_ok());
        assert!(check(Some(&redis(Some("redis://cache:6379"), false))).is_ok());
        assert!(check(Some(&redis(Some("rediss://cache.example:6379/0"), false))).is_ok());
        assert!(check(Some(&redis(None, true))).is_ok());
        for (bad, why) in [
            (redis(None, false), "urlSecretRef"),
            (redis(Some("redis://c:1"), true), "not both"),
            (redis(Some("http://cache:6379"), false), "scheme"),
            (redis(Some("redis://:pw@cache:6379"), false), "Secret"),
            (redis(Some("redis://:6379"), false), "no host"),
            (
                HistorySpec {
                    url: Some("redis://c:1".into()),
                    ..Default::default()
                },
                "store: redis",
            ),
        ] {
            let e = check(Some(&bad)).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
