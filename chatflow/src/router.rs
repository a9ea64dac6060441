//! The routes every ChatFlow server answers (`/health`, `/ready`, `/metrics`, static pages)
//! around the WebSocket routes of the services it hosts: a producer, a consumer, or both.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::about::Info;
use crate::auth::{self, Access, Gate};
use crate::http::{self, Body};
use crate::lifecycle::Lifecycle;

/// The answer to a request on an endpoint's route, once it is known.
pub type Opening = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A service's WebSocket route and its readiness, as a [`Router`] hosts it.
pub trait Endpoint: Send + Sync + 'static {
    /// Path prefix of the route, e.g. `/chat/`; the rest of the path goes to [`Endpoint::open`].
    fn prefix(&self) -> &'static str;
    /// Answers a GET on the route; `rest` is the path after the prefix. An answer may wait on a
    /// peer (an edge subscribes upstream before it accepts), so it is a future.
    fn open(&self, req: Request<Incoming>, peer: SocketAddr, rest: &str) -> Opening;
    /// What the route does with its room, which a token must allow.
    fn access(&self) -> Access;
    /// Why the service cannot serve now, if it cannot.
    fn ready(&self) -> Result<(), String>;
    /// Whether plain requests pass the gate too, not only WebSocket upgrades: a route that
    /// answers a room's content over HTTP.
    fn gates_plain_requests(&self) -> bool {
        false
    }
    /// The route as the 404 lists it.
    fn route(&self) -> String {
        format!("{}{{roomId}}", self.prefix())
    }
    /// Whether the route takes POST besides GET (an API that publishes).
    fn accepts_post(&self) -> bool {
        false
    }
}

/// Lets `origin` read the response (and tells caches it varies by origin).
fn allow_origin(resp: &mut Response<Body>, origin: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(origin) {
        let h = resp.headers_mut();
        h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            hyper::header::VARY,
            hyper::header::HeaderValue::from_static("Origin"),
        );
    }
}

/// Why an endpoint refused a request before the WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an upgrade request.
    NotUpgrade,
    /// The service is shutting down.
    Stopping,
    /// Every place is taken.
    Full,
}

impl Refusal {
    /// The answer; `places` names what is limited ("subscriber", "connection").
    pub fn response(self, places: &str) -> Response<Body> {
        match self {
            Refusal::NotUpgrade => http::text(
                StatusCode::UPGRADE_REQUIRED,
                "this route is a WebSocket: send an upgrade request\n",
            ),
            Refusal::Stopping => http::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            Refusal::Full => http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{places} limit reached, retry later\n"),
            ),
        }
    }
}

/// The checks every WebSocket route makes before it upgrades: an upgrade request, a service
/// not stopping, and a free place, taken before the upgrade so a burst cannot overshoot it.
pub fn admit<B>(
    req: &Request<B>,
    life: &Lifecycle,
    places: &Arc<Semaphore>,
) -> Result<OwnedSemaphorePermit, Refusal> {
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return Err(Refusal::NotUpgrade);
    }
    if life.is_stopping() {
        return Err(Refusal::Stopping);
    }
    places
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::Full)
}

/// Takes the WebSocket upgrade: the 101 to answer and the connection to come, or a 400 naming
/// what is wrong with the request.
#[expect(
    clippy::result_large_err,
    reason = "the 400 is returned to the router at once, never carried further"
)]
pub fn upgrade(
    req: &mut Request<Incoming>,
) -> Result<(Response<Body>, fastwebsockets::upgrade::UpgradeFut), Response<Body>> {
    match fastwebsockets::upgrade::upgrade(req) {
        Ok((resp, fut)) => Ok((http::switching(resp), fut)),
        Err(e) => Err(http::text(
            StatusCode::BAD_REQUEST,
            format!("bad WebSocket upgrade: {e}\n"),
        )),
    }
}

/// Whether a request offers the `chatflow` subprotocol.
fn offers_protocol(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == auth::PROTOCOL)
}

/// The answer to a GET on a fixed path, made at each request (a page, or a state such as the
/// operator's `/leader`).
type Answer = Box<dyn Fn() -> Response<Body> + Send + Sync>;

/// A route at a fixed path.
struct Route {
    path: &'static str,
    answer: Answer,
}

/// One server's routes: the endpoints' WebSocket routes, health, readiness, metrics and pages.
pub struct Router {
    endpoints: Vec<Arc<dyn Endpoint>>,
    registry: Arc<Registry>,
    serves_metrics: bool,
    info: Arc<str>,
    routes: Vec<Route>,
    gate: Option<Arc<Gate>>,
}

impl Router {
    /// A router with no routes of its own yet; `/metrics` encodes `registry` and
    /// `chatflow_build_info`, `/info` answers `info`.
    pub fn new(mut registry: Registry, info: Info) -> Self {
        info.register(&mut registry);
        Router {
            endpoints: Vec::new(),
            registry: Arc::new(registry),
            serves_metrics: true,
            info: info.to_json().into(),
            routes: Vec::new(),
            gate: None,
        }
    }

    /// This router without `/metrics` and `/info`, and a router serving only those and `/health`:
    /// for a port of its own, away from the Service clients use (`/info` names queues and
    /// trusted proxies, which clients have no business reading).
    pub fn metrics_apart(mut self) -> (Self, Router) {
        let metrics = Router {
            endpoints: Vec::new(),
            registry: self.registry.clone(),
            serves_metrics: true,
            info: self.info.clone(),
            routes: Vec::new(),
            gate: None,
        };
        self.serves_metrics = false;
        (self, metrics)
    }

    /// Checks every WebSocket upgrade with `gate` before its endpoint sees it.
    pub fn gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Adds a service's WebSocket route; `/ready` then also asks it.
    pub fn endpoint(mut self, endpoint: Arc<dyn Endpoint>) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Serves `body` at exactly `path`.
    pub fn page(self, path: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        let body = Bytes::from_static(body);
        self.route(path, move || {
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, content_type)
                .header(hyper::header::CACHE_CONTROL, "no-cache")
                .body(Full::new(body.clone()))
                .expect("static response parts are valid")
        })
    }

    /// Answers a GET on exactly `path` with what `answer` makes at that moment.
    pub fn route(
        mut self,
        path: &'static str,
        answer: impl Fn() -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        self.routes.push(Route {
            path,
            answer: Box::new(answer),
        });
        self
    }

    /// A cross-origin read's allowed origin: a page from an origin the gate lets in may read a
    /// route that answers content over HTTP (history, presence) with its token.
    fn cors_origin<B>(
        &self,
        req: &Request<B>,
        endpoint: &dyn Endpoint,
        upgrade: bool,
    ) -> Option<String> {
        if upgrade || !endpoint.gates_plain_requests() {
            return None;
        }
        self.gate
            .as_ref()?
            .allowed_origin(req.headers())
            .map(str::to_owned)
    }

    /// The answer to a browser's preflight for a cross-origin read with a token.
    fn preflight<B>(&self, req: &Request<B>, path: &str) -> Response<Body> {
        let readable = self
            .endpoints
            .iter()
            .find(|e| path.starts_with(e.prefix()))
            .filter(|e| e.gates_plain_requests());
        let origin = match (readable, &self.gate) {
            (Some(_), Some(gate)) => gate.allowed_origin(req.headers()).map(str::to_owned),
            _ => None,
        };
        let Some(origin) = origin else {
            return http::text(
                StatusCode::FORBIDDEN,
                "no cross-origin reads of this route from this origin (ALLOWED_ORIGINS)\n",
            );
        };
        let mut resp = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(hyper::header::ACCESS_CONTROL_ALLOW_METHODS, "GET")
            .header(hyper::header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization")
            .header(hyper::header::ACCESS_CONTROL_MAX_AGE, "600")
            .body(Full::new(Bytes::new()))
            .expect("static response parts are valid");
        allow_origin(&mut resp, &origin);
        resp
    }

    /// Answers one request.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if req.method() == Method::OPTIONS {
            return self.preflight(&req, &path);
        }
        if req.method() != Method::GET
            && !(req.method() == Method::POST
                && self
                    .endpoints
                    .iter()
                    .any(|e| e.accepts_post() && path.starts_with(e.prefix())))
        {
            return http::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        }
        match path.as_str() {
            "/health" => return http::text(StatusCode::OK, "ok\n"),
            "/ready" => return http::ready(self.ready()),
            "/info" if self.serves_metrics => {
                return http::json(StatusCode::OK, self.info.as_bytes().to_vec());
            }
            "/metrics" if self.serves_metrics => return http::metrics(&self.registry),
            _ => {}
        }
        if let Some(endpoint) = self.endpoints.iter().find(|e| path.starts_with(e.prefix())) {
            let rest = &path[endpoint.prefix().len()..];
            let upgrade = fastwebsockets::upgrade::is_upgrade_request(&req);
            if let (Some(gate), true) = (&self.gate, upgrade || endpoint.gates_plain_requests()) {
                match gate
                    .admit(req.headers(), peer, endpoint.access(), rest)
                    .await
                {
                    Ok(pass) => {
                        req.extensions_mut().insert(pass);
                    }
                    Err(denial) => return denial.response(),
                }
            }
            let offered = offers_protocol(req.headers());
            let cors = self.cors_origin(&req, endpoint.as_ref(), upgrade);
            let mut resp = endpoint.open(req, peer, rest).await;
            if let Some(origin) = cors {
                allow_origin(&mut resp, &origin);
            }
            // A browser that offered subprotocols fails the connection unless one is chosen.
            if offered && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut().insert(
                    hyper::header::SEC_WEBSOCKET_PROTOCOL,
                    hyper::header::HeaderValue::from_static(auth::PROTOCOL),
                );
            }
            return resp;
        }
        if let Some(route) = self.routes.iter().find(|r| r.path == path) {
            return (route.answer)();
        }
        let routes: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.route())
            .chain(self.routes.iter().map(|r| r.path.to_owned()))
            .chain(["/health", "/ready"].map(str::to_owned))
            .chain(self.serves_metrics.then(|| "/metrics, /info".to_owned()))
            .collect();
        http::text(
            StatusCode::NOT_FOUND,
            format!("not found: use {}\n", routes.join(", ")),
        )
    }

    /// Ready when every endpoint is; otherwise the reasons of those that are not.
    fn ready(&self) -> Result<(), String> {
        let reasons: Vec<String> = self
            .endpoints
            .iter()
            .filter_map(|e| e.ready().err())
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// Serves `listener` until `shutdown` fires.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let router = Arc::new(self);
        http::serve(listener, shutdown, move |req, peer| {
            let router = router.clone();
            async move { router.handle(req, peer).await }
        })
        .await;
    }
}
