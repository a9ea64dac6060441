//! `spec.auth` on the producer pods: the token keys mounted from their Secret or ConfigMap and
//! the options pointing at them. The shards are reached only through the edges, so they check
//! no tokens; the NetworkPolicy keeps other pods off their port when the set checks tokens.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};

use crate::crd::{AuthSpec, KeyRef};

/// Where the keys are mounted in a producer pod.
pub const AUTH_DIR: &str = "/etc/chatflow/auth";

/// Most allowed origins a set may list.
const MAX_ORIGINS: usize = 32;

/// Why a set's `spec.auth` cannot be served, if it cannot.
pub fn check(auth: Option<&AuthSpec>) -> Result<(), String> {
    let Some(auth) = auth else {
        return Err(
            "spec.auth is required: name the token keys (spec.auth.hmacSecretRef or \
                    spec.auth.jwksConfigMapRef), or set spec.auth.anonymous: true to let anyone \
                    send as any user and read any room"
                .into(),
        );
    };
    let keys = auth.hmac_secret_ref.is_some() || auth.jwks_config_map_ref.is_some();
    match (auth.anonymous, keys) {
        (true, true) => {
            return Err("spec.auth.anonymous cannot be true when token keys are named".into());
        }
        (false, false) => {
            return Err(
                "spec.auth names no token keys: set spec.auth.hmacSecretRef or \
                        spec.auth.jwksConfigMapRef, or spec.auth.anonymous: true"
                    .into(),
            );
        }
        _ => {}
    }
    if auth.allowed_origins.len() > MAX_ORIGINS {
        return Err(format!(
            "spec.auth.allowedOrigins lists more than {MAX_ORIGINS}"
        ));
    }
    if let Some(bad) = auth.allowed_origins.iter().find(|o| {
        *o != "*" && !(o.starts_with("https://") || o.starts_with("http://")) || o.contains(',')
    }) {
        return Err(format!(
            "spec.auth.allowedOrigins: {bad:?} is not an origin like https://chat.example.com"
        ));
    }
    Ok(())
}

/// Whether the set checks tokens.
pub fn checks_tokens(auth: Option<&AuthSpec>) -> bool {
    auth.is_some_and(|a| !a.anonymous)
}

/// The producer's env, mounts and volumes for `auth`.
pub fn producer_parts(auth: Option<&AuthSpec>) -> (Vec<EnvVar>, Vec<VolumeMount>, Vec<Volume>) {
    let (mut env, mut mounts, mut volumes) = (Vec::new(), Vec::new(), Vec::new());
    let Some(auth) = auth.filter(|a| !a.anonymous) else {
        return (env, mounts, volumes);
    };
    let var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    // The whole object is mounted (one key projected), not a subPath: the kubelet updates
    // such a mount in place, which is how a rotated key reaches a running pod.
    let mut mount = |volume: &str, key: &KeyRef, var_name: &str, file: &str| {
        let dir = format!("{AUTH_DIR}/{volume}");
        env.push(var(var_name, format!("{dir}/{file}")));
        mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: dir,
            read_only: Some(true),
            ..Default::default()
        });
        let items = Some(vec![KeyToPath {
            key: key.key.clone(),
            path: file.into(),
            mode: None,
        }]);
        volumes.push(match volume {
            "jwt-secret" => Volume {
                name: volume.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(key.name.clone()),
                    items,
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => Volume {
                name: volume.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: key.name.clone(),
                    items,
                    ..Default::default()
                }),
                ..Default::default()
            },
        });
    };
    if let Some(key) = &auth.hmac_secret_ref {
        mount("jwt-secret", key, "JWT_SECRET_FILE", "hs256");
    }
    if let Some(key) = &auth.jwks_config_map_ref {
        mount("jwks", key, "JWKS_FILE", "jwks.json");
    }
    if let Some(iss) = &auth.issuer {
        env.push(var("JWT_ISSUER", iss.clone()));
    }
    if let Some(aud) = &auth.audience {
        env.push(var("JWT_AUDIENCE", aud.clone()));
    }
    if !auth.allowed_origins.is_empty() {
        env.push(var("ALLOWED_ORIGINS", auth.allowed_origins.join(",")));
    }
    (env, mounts, volumes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Option<KeyRef> {
        Some(KeyRef {
            name: name.into(),
            key: "k".into(),
        })
    }

    #[test]
    fn a_set_says_how_it_authenticates_or_that_it_does_not() {
        let e = check(None).unwrap_err();
        assert!(
            e.contains("spec.auth is required") && e.contains("anonymous: true"),
            "{e}"
        );
        assert!(
            check(Some(&AuthSpec::default()))
                .unwrap_err()
                .contains("names no token keys")
        );
        let anonymous = AuthSpec {
            anonymous: true,
            ..AuthSpec::default()
        };
        assert!(check(Some(&anonymous)).is_ok());
        let both = AuthSpec {
            hmac_secret_ref: key("s"),
            ..anonymous
        };
        assert!(check(Some(&both)).is_err());
        let bad_origin = AuthSpec {
            hmac_secret_ref: key("s"),
            allowed_origins: vec!["chat.example.com".into()],
            ..AuthSpec::default()
        };
        assert!(
            check(Some(&bad_origin))
                .unwrap_err()
                .contains("allowedOrigins")
        );
    }

    #[test]
    fn keys_are_mounted_whole_and_named_by_env() {
        let auth = AuthSpec {
            hmac_secret_ref: key("jwt"),
            jwks_config_map_ref: key("keys"),
            issuer: Some("https://id".into()),
            allowed_origins: vec!["https://a".into(), "https://b".into()],
            ..AuthSpec::default()
        };
        let (env, mounts, volumes) = producer_parts(Some(&auth));
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            get("JWT_SECRET_FILE").unwrap(),
            "/etc/chatflow/auth/jwt-secret/hs256"
        );
        assert_eq!(
            get("JWKS_FILE").unwrap(),
            "/etc/chatflow/auth/jwks/jwks.json"
        );
        assert_eq!(get("ALLOWED_ORIGINS").unwrap(), "https://a,https://b");
        assert!(
            mounts
                .iter()
                .all(|m| m.sub_path.is_none() && m.read_only == Some(true))
        );
        let secret = volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("jwt"));
        assert_eq!(volumes[1].config_map.as_ref().unwrap().name, "keys");
        let anonymous = AuthSpec {
            anonymous: true,
            ..AuthSpec::default()
        };
        assert!(producer_parts(Some(&anonymous)).0.is_empty());
    }
}
