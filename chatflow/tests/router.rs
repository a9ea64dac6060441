//! The routes every server answers, served by the shared router over a real socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chatflow::about::Info;
use chatflow::http;
use chatflow::router::Router;
use chatflow_testkit::http_get;
use hyper::StatusCode;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn serve(router: Router) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(router.serve(listener, stop.clone()));
    (addr, stop)
}

#[tokio::test]
async fn a_route_answers_its_state_at_each_request_beside_health_ready_and_metrics() {
    let leading = Arc::new(AtomicBool::new(false));
    let router = Router::new(
        Registry::default(),
        Info::new("test", serde_json::json!({})),
    )
    .route("/leader", {
        let leading = leading.clone();
        move || {
            http::text(
                StatusCode::OK,
                format!("{}\n", leading.load(Ordering::Relaxed)),
            )
        }
    });
    let (addr, _stop) = serve(router).await;
    assert_eq!(http_get(addr, "/leader").await, (200, "false\n".into()));
    leading.store(true, Ordering::Relaxed);
    assert_eq!(http_get(addr, "/leader").await, (200, "true\n".into()));
    assert_eq!(http_get(addr, "/health").await, (200, "ok\n".into()));
    assert_eq!(http_get(addr, "/ready").await, (200, "ready\n".into()));
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("chatflow_build_info"), "{metrics}");
    let (status, body) = http_get(addr, "/nothing").await;
    assert_eq!(status, 404);
    assert!(body.contains("/leader"), "the 404 lists the routes: {body}");
}

#[tokio::test]
async fn stopping_closes_a_kept_alive_connection_between_requests_at_once() {
    let router = Router::new(
        Registry::default(),
        Info::new("test", serde_json::json!({})),
    );
    let (addr, stop) = serve(router).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stop.cancel();
    // The scrape connection is idle between requests: it is closed well before the grace for
    // requests in progress runs out.
    let closed = tokio::time::timeout(http::IN_FLIGHT_GRACE / 2, conn.read(&mut buf))
        .await
        .expect("the idle connection is closed at once");
    assert_eq!(closed.unwrap(), 0);
}
