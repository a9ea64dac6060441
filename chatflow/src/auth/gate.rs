//! The check before every WebSocket upgrade: the browser's origin, the token and the room it
//! opens, and the client address's share of connections. A refusal is an HTTP status, so a
//! client learns why before any frame is exchanged.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::claims::{Claims, RoomSet};
use super::keys::{Key, KeyError, KeyFile, KeyFileKind};
use super::{Access, AuthOptions, Deadline, Denial, Grant, Pass, TOKEN_PROTOCOL_PREFIX};
use crate::rooms::RoomId;

/// Longest token read: a token is parsed before it is trusted.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Connections held per client address.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place under its address's cap; dropping it frees the place.
pub struct IpSlot {
    ip: IpAddr,
    table: PerIp,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Entry::Occupied(mut e) = table.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Checks every upgrade of a server's WebSocket routes.
pub struct Gate {
    secret: Option<Arc<KeyFile>>,
    jwks: Option<Arc<KeyFile>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    grace: Duration,
    max_age: Option<Duration>,
    allowed_origins: Vec<String>,
    per_ip_cap: usize,
    per_ip: PerIp,
    trusted_proxies: Vec<IpAddr>,
    refused: Family<ReasonLabel, Counter>,
}

impl Gate {
    /// Loads the configured keys (a server does not start with keys it cannot read) and
    /// registers `chatflow_upgrades_refused_total`; `trusted_proxies` are believed about the
    /// client's address in X-Forwarded-For.
    pub fn new(
        opts: &AuthOptions,
        trusted_proxies: Vec<IpAddr>,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, KeyError> {
        let open = |kind, path: Option<&std::path::Path>| {
            path.map(|p| KeyFile::open(kind, p).map(Arc::new))
                .transpose()
        };
        let secret = open(KeyFileKind::Secret, opts.jwt_secret_file.as_deref())?;
        let jwks = open(KeyFileKind::Jwks, opts.jwks_file.as_deref())?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for file in secret.iter().chain(&jwks) {
                rt.spawn(refresh(
                    Arc::downgrade(file),
                    Duration::from_secs(opts.jwks_refresh_secs.max(1)),
                ));
            }
        }
        if !opts.checks_tokens() {
            tracing::warn!(
                "no JWT_SECRET_FILE or JWKS_FILE: anonymous, anyone who reaches this server may \
                 send as any user and read any room"
            );
        }
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "chatflow_upgrades_refused",
            "WebSocket upgrades refused before they were accepted, by reason",
            refused.clone(),
        );
        Ok(Arc::new(Gate {
            secret,
            jwks,
            issuer: opts.jwt_issuer.clone(),
            audience: opts.jwt_audience.clone(),
            leeway: opts.jwt_leeway_secs,
            grace: Duration::from_secs(opts.token_expiry_grace_secs),
            max_age: (opts.max_connection_age_secs > 0)
                .then(|| Duration::from_secs(opts.max_connection_age_secs)),
            allowed_origins: opts
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            per_ip_cap: opts.max_connections_per_ip,
            per_ip: PerIp::default(),
            trusted_proxies,
            refused,
        }))
    }

    /// Whether tokens are checked.
    pub fn checks_tokens(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some()
    }

    /// Admits an upgrade of `access` to the room named `room`, or says why not.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        access: Access,
        room: &str,
    ) -> Result<Pass, Denial> {
        let admitted = self.check(headers, peer, access, room).await;
        if let Err(d) = &admitted {
            self.refused
                .get_or_create(&ReasonLabel { reason: d.reason() })
                .inc();
        }
        admitted
    }

    async fn check(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        access: Access,
        room: &str,
    ) -> Result<Pass, Denial> {
        self.check_origin(headers)?;
        let grant = if self.checks_tokens() {
            let token = bearer(headers).ok_or(Denial::NoToken)?;
            let grant = self.verify(token).await.map_err(Denial::BadToken)?;
            // Accepted within the leeway but past its grace: it would be closed at once.
            if Duration::from_secs(grant.expires_at).saturating_add(self.grace) <= unix_now() {
                return Err(Denial::BadToken("expired".into()));
            }
            let opens = room
                .parse::<RoomId>()
                .is_ok_and(|r| grant.allows(access, r));
            if !opens {
                return Err(Denial::Room {
                    access,
                    room: room.chars().take(32).collect(),
                });
            }
            Some(Arc::new(grant))
        } else {
            None
        };
        let slot = self.take_slot(peer, headers)?;
        let deadline = self.deadline(grant.as_deref());
        Ok(Pass {
            grant,
            _slot: slot,
            deadline,
        })
    }

    /// The request's `Origin` when it has one this gate lets in: what a cross-origin read's
    /// `Access-Control-Allow-Origin` names.
    pub fn allowed_origin<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let origin = headers.get(ORIGIN)?.to_str().ok()?;
        self.check_origin(headers).ok().map(|()| origin)
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Denial> {
        // Programs send no Origin; browsers always do on a WebSocket upgrade.
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .unwrap_or("(not text)")
            .trim_end_matches('/');
        let allowed = if self.allowed_origins.is_empty() {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let origin_host = origin.split_once("://").map(|(_, h)| h);
            matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
        } else {
            self.allowed_origins
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        };
        if allowed {
            Ok(())
        } else {
            Err(Denial::Origin(origin.chars().take(100).collect()))
        }
    }

    fn take_slot(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<IpSlot>>, Denial> {
        if self.per_ip_cap == 0 {
            return Ok(None);
        }
        let ip = crate::client_ip::resolve(peer, headers, &self.trusted_proxies);
        let mut table = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let held = table.entry(ip).or_default();
        if *held >= self.per_ip_cap {
            return Err(Denial::PerIp(self.per_ip_cap));
        }
        *held += 1;
        Ok(Some(Arc::new(IpSlot {
            ip,
            table: self.per_ip.clone(),
        })))
    }

    /// When the connection must close: the token's expiry after the grace, or its age limit,
    /// whichever comes first.
    fn deadline(&self, grant: Option<&Grant>) -> Option<Deadline> {
        let now = tokio::time::Instant::now();
        // An instant too far to represent is no deadline at all.
        let expiry = grant.and_then(|g| {
            let left = Duration::from_secs(g.expires_at).saturating_sub(unix_now());
            Some(Deadline {
                at: now.checked_add(left.checked_add(self.grace)?)?,
                code: super::CLOSE_TOKEN_EXPIRED,
                reason: "token expired: reconnect with a fresh token",
            })
        });
        // Up to a fifth shorter, at random: connections opened together (after a deploy) do not
        // all come back together, period after period.
        let aged = self.max_age.and_then(|age| {
            Some(Deadline {
                at: now.checked_add(age.mul_f64(0.8 + 0.2 * random_unit()))?,
                code: crate::ws::CLOSE_GOING_AWAY,
                reason: "connection age limit: reconnect",
            })
        });
        match (expiry, aged) {
            (Some(e), Some(a)) => Some(if e.at <= a.at { e } else { a }),
            (e, a) => e.or(a),
        }
    }

    /// Verifies `token` and reads what it grants.
    pub async fn verify(&self, token: &str) -> Result<Grant, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let header = decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        let kid = header.kid.as_deref();
        let fits = |k: &Key| k.algorithms.contains(&header.alg);
        // A kid the JWKS does not know (for this alg) may be a key just rotated in.
        if let Some(jwks) = &self.jwks
            && kid.is_some()
            && !jwks
                .keys()
                .iter()
                .any(|k| fits(k) && k.kid.as_deref() == kid)
        {
            jwks.reload_for_unknown_kid().await;
        }
        let keys = self.keys_for(kid);
        let mut last = "no key for its kid and alg".to_owned();
        for key in keys.iter().filter(|k| fits(k)) {
            match decode::<Claims>(token, &key.key, &self.validation(&key.algorithms)) {
                Ok(data) => return Grant::from_claims(data.claims),
                Err(e) => last = explain(e.kind()),
            }
        }
        Err(last)
    }

    fn keys_for(&self, kid: Option<&str>) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .secret
            .iter()
            .flat_map(|s| s.keys().iter().cloned().collect::<Vec<_>>())
            .collect();
        if let Some(jwks) = &self.jwks {
            keys.extend(
                jwks.keys()
                    .iter()
                    .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                    .cloned(),
            );
        }
        keys
    }

    fn validation(&self, algorithms: &[jsonwebtoken::Algorithm]) -> Validation {
        let mut v = Validation::new(algorithms[0]);
        v.algorithms = algorithms.to_vec();
        v.leeway = self.leeway;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }
}

fn explain(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("no {c} claim"),
        other => format!("{other:?}"),
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The token of a request: `Authorization: Bearer`, or the subprotocol browsers can offer.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    from_header.map(str::trim).or_else(|| {
        headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX))
    })
}

/// A number in [0, 1) from the process's random hasher keys: jitter needs no better.
fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(unix_now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Re-reads a key file every `every` while the gate lives.
async fn refresh(file: Weak<KeyFile>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(file) = file.upgrade() else { return };
        file.reload().await;
    }
}

impl Grant {
    fn from_claims(c: Claims) -> Result<Self, String> {
        let publish = RoomSet::parse(&c.chatflow.publish).map_err(|e| format!("publish: {e}"))?;
        let subscribe =
            RoomSet::parse(&c.chatflow.subscribe).map_err(|e| format!("subscribe: {e}"))?;
        Ok(Grant {
            user_id: c.sub.trim().parse().ok(),
            subject: c.sub,
            name: c.name,
            publish,
            subscribe,
            expires_at: c.exp,
        })
    }

    /// Whether the token opens `room` for `access`.
    pub fn allows(&self, access: Access, room: RoomId) -> bool {
        match access {
            Access::Publish => self.publish.contains(room),
            Access::Subscribe => self.subscribe.contains(room),
        }
    }
}
