//! The keys tokens are checked with: an HS256 secret from a file, and public keys (or `oct`
//! secrets) from a JWKS document in a file, both re-read while the server runs so a rotation
//! needs no restart. Kubernetes updates a mounted Secret or ConfigMap in place, which is how
//! keys reach pods.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The secret file is empty or too short to be safe.
    #[error("{0}: an HS256 secret must be at least 32 bytes")]
    ShortSecret(PathBuf),
    /// The JWKS document is not one.
    #[error("{path}: not a JWKS document: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A key with the algorithms it may verify: the family is fixed by the key, never by the
/// token's header, so an RSA public key can never be used as an HMAC secret.
#[derive(Clone)]
pub(crate) struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The HS256 secret in `bytes`, read from `path` (trailing whitespace ignored).
fn secret_key(path: &Path, bytes: &[u8]) -> Result<Key, KeyError> {
    let secret = bytes.trim_ascii_end();
    if secret.len() < 32 {
        return Err(KeyError::ShortSecret(path.to_owned()));
    }
    Ok(Key {
        kid: None,
        key: DecodingKey::from_secret(secret),
        algorithms: vec![Algorithm::HS256],
    })
}

/// The usable keys of a JWKS document; keys of kinds it cannot verify with are skipped.
pub(crate) fn parse_jwks(path: &Path, text: &[u8]) -> Result<Vec<Key>, KeyError> {
    let bad = |reason: String| KeyError::Jwks {
        path: path.to_owned(),
        reason,
    };
    // Key by key: one key of a kind this crate cannot read (an encryption key, a new curve)
    // must not hide the others.
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let keys: Vec<Key> = doc
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter_map(|k| key_of(&k))
        .collect();
    if keys.is_empty() {
        return Err(bad("no usable key (RSA, EC P-256/P-384 or oct)".into()));
    }
    Ok(keys)
}

fn key_of(jwk: &Jwk) -> Option<Key> {
    // A key published for encryption is not one tokens are signed with.
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithms = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (_, Some(alg)) => vec![algorithm(alg)?],
        (AlgorithmParameters::RSA(_), None) => vec![Algorithm::RS256],
        (AlgorithmParameters::EllipticCurve(ec), None) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        (AlgorithmParameters::OctetKey(_), None) => vec![Algorithm::HS256],
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

fn algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        _ => return None,
    })
}

/// Which document a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFileKind {
    /// An HS256 secret.
    Secret,
    /// A JWKS document.
    Jwks,
}

fn parse(kind: KeyFileKind, path: &Path, bytes: &[u8]) -> Result<Vec<Key>, KeyError> {
    match kind {
        KeyFileKind::Secret => secret_key(path, bytes).map(|k| vec![k]),
        KeyFileKind::Jwks => parse_jwks(path, bytes),
    }
}

/// A key file (a secret or a JWKS document) and the keys last read from it.
pub(crate) struct KeyFile {
    kind: KeyFileKind,
    path: PathBuf,
    state: RwLock<Loaded>,
    /// Fewest seconds between two re-reads caused by an unknown `kid`, so a stream of tokens
    /// signed with unknown keys cannot turn into a stream of file reads.
    min_reread: Duration,
}

struct Loaded {
    bytes: Vec<u8>,
    keys: Arc<Vec<Key>>,
    read_at: Instant,
}

impl KeyFile {
    /// Reads `path` now: a server does not start with keys it cannot read.
    pub fn open(kind: KeyFileKind, path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let keys = parse(kind, path, &bytes)?;
        Ok(KeyFile {
            kind,
            path: path.to_owned(),
            state: RwLock::new(Loaded {
                bytes,
                keys: Arc::new(keys),
                read_at: Instant::now(),
            }),
            min_reread: Duration::from_secs(1),
        })
    }

    /// The keys as last read.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .clone()
    }

    /// Re-reads the file; a document that no longer parses keeps the keys in force (a key
    /// rotation half written must not lock every user out). True when the keys changed. A
    /// changed secret replaces the old one at once: overlapping keys are what a JWKS is for.
    pub async fn reload(&self) -> bool {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "key file unreadable; keeping the keys in force");
                return false;
            }
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.read_at = Instant::now();
        if bytes == state.bytes {
            return false;
        }
        match parse(self.kind, &self.path, &bytes) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "token keys rotated");
                state.keys = Arc::new(keys);
                state.bytes = bytes;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "key file changed but does not parse; keeping the keys in force");
                false
            }
        }
    }

    /// Re-reads the file for a token signed with a key not yet known, at most once a second.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        let due = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            state.read_at.elapsed() >= self.min_reread
        };
        due && self.reload().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_jwks_document_carry_their_own_algorithms() {
        let doc = br#"{"keys":[
            {"kty":"oct","kid":"a","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
            {"kty":"EC","kid":"b","crv":"P-256","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"OKP","kid":"c","crv":"X25519","x":"AAAA"}
        ]}"#;
        let keys = parse_jwks(Path::new("jwks.json"), doc).unwrap();
        assert_eq!(
            keys.len(),
            2,
            "the X25519 key cannot verify tokens and is skipped"
        );
        assert_eq!(keys[0].algorithms, [Algorithm::HS256]);
        assert_eq!(keys[1].algorithms, [Algorithm::ES256]);
        assert!(parse_jwks(Path::new("j"), b"{\"keys\":[]}").is_err());
        assert!(parse_jwks(Path::new("j"), b"not json").is_err());
    }
}
