//! HTTP serving shared by the producer and the consumer: the accept loop, plain responses,
//! and the Prometheus endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in progress at shutdown have to be answered.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Response body of every route.
pub type Body = Full<Bytes>;

/// A GET of `path_and_query` from the server at `authority` (`host:port`), answered in full
/// within `limit` and `max_bytes`: for a route whose answer another server holds (an edge asks
/// a shard).
pub async fn get(
    authority: &str,
    path_and_query: &str,
    limit: Duration,
    max_bytes: usize,
) -> Result<Response<Bytes>, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(path_and_query)
            .header(hyper::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let (parts, body) = sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?
            .into_parts();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, max_bytes))
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    typed(status, "text/plain; charset=utf-8", body.into())
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    typed(status, "application/json", body.into())
}

fn typed(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("static response parts are valid")
}

/// The 101 response of a WebSocket upgrade, in this module's body type.
pub fn switching(resp: Response<Empty<Bytes>>) -> Response<Body> {
    resp.map(|_| Full::new(Bytes::new()))
}

/// `/metrics` in the Prometheus text format.
pub fn metrics(registry: &Registry) -> Response<Body> {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, registry) {
        Ok(()) => Response::builder()
            .header(
                hyper::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(out.into()))
            .expect("static response parts are valid"),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {e}\n"),
        ),
    }
}

/// `/ready`: 200 when ready, 503 with the reason otherwise.
pub fn ready(result: Result<(), String>) -> Response<Body> {
    match result {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Accepts HTTP/1.1 connections (with upgrades) until `shutdown` fires, handing each request
/// and its peer address to `handler`. Then connections between requests (metrics scrapes kept
/// alive) close at once, and requests in progress get [`IN_FLIGHT_GRACE`] to be answered, so the
/// service's own drain is not held up by a client.
pub async fn serve<H, Fut>(listener: TcpListener, shutdown: CancellationToken, handler: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        // A client that never finishes its headers must not hold a connection forever.
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let svc = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(IN_FLIGHT_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress when the listener closed");
    }
}
