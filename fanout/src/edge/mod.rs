//! The edge: `/subscribe/{roomId}` on pods that do not own the room. For each room with local
//! subscribers the edge holds one upstream subscription to the owning shard and fans out
//! locally, with the shard's own room, history and subscriber code, so order, resume and
//! slow-subscriber isolation are the shard's. A shard then writes each event once per edge, not
//! once per client, and a room's audience can grow past what one pod holds.

mod catch_up;
mod config;
mod history;
mod metrics;
pub mod routes;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatflow::about::Info;
use chatflow::auth::{Access, Pass};
use chatflow::http::{self, Body};
use chatflow::lifecycle::Lifecycle;
use chatflow::protocol::Position;
use chatflow::rooms::{RoomId, RoomRange};
use chatflow::router::{self, Endpoint, Opening, Router};
use chatflow::service::{self, ServiceHandle, StartError};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::EdgeConfig;
pub use metrics::EdgeMetrics;
use routes::Routes;

use crate::admission::{Admitted, Door};
use crate::presence::Presence;
use crate::room::Room;
use crate::subscriber::{self, Membership, ResumeCounters};

/// How long a subscribe request waits for its room's first upstream subscription.
const PRIME_WAIT: Duration = Duration::from_secs(5);

/// Resumes fetched from shards at once; more wait their turn.
const MAX_FETCHES: usize = 32;

/// Shutdown's wait for local subscribers to take what they were handed.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// One room as this edge relays it.
pub(crate) struct Hub {
    room: Arc<Room>,
    /// Local subscribers and requests about to become one; the upstream lets go at zero.
    users: AtomicUsize,
    /// True once the upstream subscription is in place (and its replay relayed).
    primed: watch::Sender<bool>,
}

impl Hub {
    fn prime(&self) {
        self.primed.send_replace(true);
    }

    fn is_primed(&self) -> bool {
        *self.primed.borrow()
    }
}

struct Shared {
    config: EdgeConfig,
    routes: Routes,
    rooms: RoomRange,
    hubs: Mutex<HashMap<RoomId, Arc<Hub>>>,
    metrics: EdgeMetrics,
    admission: Arc<Semaphore>,
    /// Resumes whose gap is being fetched from a shard now: after an edge pod goes, its clients
    /// resume here at once, and each fetch holds a shard connection and its replay.
    fetches: Semaphore,
    /// Refuses new subscribers from the stop on; closes local subscribers after the upstreams.
    life: Lifecycle,
    /// Fires once the producer has answered its senders: the upstreams stop.
    relaying: CancellationToken,
    upstreams: TaskTracker,
    /// Who the edge's subscribers are, when presence is on.
    presence: Option<Presence>,
}

impl Shared {
    /// The room's hub, counted as used; a new one subscribes upstream from now on (a client's
    /// position never steers the shared relay: resumes are fetched on their own).
    fn hub(self: &Arc<Self>, room: RoomId) -> Arc<Hub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hub) = hubs.get(&room) {
            hub.users.fetch_add(1, Ordering::AcqRel);
            return hub.clone();
        }
        let hub = Arc::new(Hub {
            // Repeats are dropped by position before the room sees them: its id memory is unused.
            room: Arc::new(Room::new(1, self.config.edge_history_size as usize)),
            users: AtomicUsize::new(1),
            primed: watch::Sender::new(false),
        });
        hubs.insert(room, hub.clone());
        self.metrics.rooms.inc();
        self.upstreams
            .spawn(upstream::run(self.clone(), room, hub.clone()));
        hub
    }

    /// Removes an unused hub from the map; false when someone came back for it meanwhile.
    fn release(&self, room: RoomId, hub: &Arc<Hub>) -> bool {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if hub.users.load(Ordering::Acquire) != 0 {
            return false;
        }
        if hubs.get(&room).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            hubs.remove(&room);
            self.metrics.rooms.dec();
        }
        true
    }
}

/// Gives back a hub use when a request or subscriber ends, however it ends.
struct Use(Arc<Hub>);

impl Drop for Use {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The edge endpoint: `/subscribe/{roomId}` relayed from the owning shards.
#[derive(Clone)]
pub struct Edge {
    shared: Arc<Shared>,
}

impl Edge {
    /// An edge for `rooms` relaying from `routes` until `life` stops, its subscribers in
    /// `presence`.
    pub fn new(
        config: EdgeConfig,
        routes: Routes,
        rooms: RoomRange,
        registry: &mut Registry,
        life: Lifecycle,
        presence: Option<Presence>,
    ) -> Self {
        let admission = Arc::new(Semaphore::new(
            config.edge_max_subscribers.min(Semaphore::MAX_PERMITS),
        ));
        Edge {
            shared: Arc::new(Shared {
                config,
                routes,
                rooms,
                hubs: Mutex::default(),
                metrics: EdgeMetrics::new(registry),
                admission,
                fetches: Semaphore::new(MAX_FETCHES),
                life,
                relaying: CancellationToken::new(),
                upstreams: TaskTracker::new(),
                presence,
            }),
        }
    }

    /// The `/history/{roomId}` route, passed on to the rooms' shards.
    pub fn history(&self) -> Arc<dyn Endpoint> {
        Arc::new(history::HistoryRoute(self.clone()))
    }

    /// Rooms relayed now.
    pub fn rooms_relayed(&self) -> usize {
        self.shared
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// When local subscribers go: spread, by turns from the stop on, while their rooms are still
    /// relayed, so none waits in a silent room; otherwise all at the close.
    fn departure(&self) -> (CancellationToken, Duration) {
        let spread = Duration::from_secs(self.shared.config.edge_close_spread_secs);
        let life = &self.shared.life;
        let trigger = if spread.is_zero() {
            life.closing()
        } else {
            life.stopping()
        };
        (trigger.clone(), spread)
    }

    /// After the stop began: ends the upstream subscriptions, lets local subscribers take what they
    /// were handed, then closes them (1001) so they resume on another edge.
    pub async fn drain(self) {
        let spread = Duration::from_secs(self.shared.config.edge_close_spread_secs);
        if !spread.is_zero() {
            // Subscribers leave by turns from the stop on: their rooms stay relayed until the
            // last turn came.
            self.shared.life.finish(spread + DRAIN_GRACE).await;
        }
        self.shared.relaying.cancel();
        self.shared.upstreams.close();
        let _ = tokio::time::timeout(DRAIN_GRACE, self.shared.upstreams.wait()).await;
        let hubs: Vec<Arc<Hub>> = self
            .shared
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for hub in hubs {
            hub.room.close_all();
        }
        self.shared.life.close(DRAIN_GRACE).await;
    }

    /// The shard's answer to a resume from `after`, one of at most [`MAX_FETCHES`] at a time.
    async fn fetch(
        &self,
        hub: &Hub,
        room: RoomId,
        after: Position,
    ) -> Result<(crate::resume::Fetched, Position), String> {
        let _turn = tokio::time::timeout(PRIME_WAIT, self.shared.fetches.acquire())
            .await
            .map_err(|_| "too many resumes being fetched".to_owned())?
            .expect("never closed");
        // Read once the relay is in place: the same generation at the join then means the relay
        // received everything after what the fetch returns.
        let generation = hub.room.generation();
        catch_up::fetch(&self.shared.routes, room, after, generation).await
    }

    /// Where a subscription starts: a resume from a position this edge's relay does not reach
    /// back to is fetched from the shard, which may still hold the gap.
    async fn gap(
        &self,
        hub: &Hub,
        room: RoomId,
        after: Option<Position>,
    ) -> (Option<Position>, Option<crate::resume::Fetched>) {
        match after {
            Some(p) if !hub.room.covers(p) => match self.fetch(hub, room, p).await {
                Ok((fetched, reached)) => (Some(reached), Some(fetched)),
                Err(e) => {
                    tracing::warn!(room, after = %p, error = %e,
                        "could not fetch a resume's gap from the shard; answering from the relay");
                    (after, None)
                }
            },
            _ => (after, None),
        }
    }

    async fn subscribe(self, mut req: Request<Incoming>, room: String) -> Response<Body> {
        let shared = &self.shared;
        let door = Door {
            rooms: shared.rooms,
            life: &shared.life,
            places: &shared.admission,
            not_served: "no such room",
        };
        let Admitted {
            room: room_id,
            after,
            permit,
        } = match door.admit(&req, &room) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        let hub = Use(shared.hub(room_id));
        // The client counts itself subscribed from the 101: answer only once events flow to us,
        // or what is sent meanwhile would pass this edge by.
        let mut primed = hub.0.primed.subscribe();
        if tokio::time::timeout(PRIME_WAIT, primed.wait_for(|p| *p))
            .await
            .is_err()
        {
            return http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("room {room_id}'s shard is not reachable from this edge, retry later\n"),
            );
        }
        let (after, fetched) = self.gap(&hub.0, room_id, after).await;
        let (resp, fut) = match router::upgrade(&mut req) {
            Ok(pair) => pair,
            Err(bad) => return bad,
        };
        let shared = self.shared.clone();
        let pass = Pass::take(&mut req);
        let mut opts = subscriber::Options {
            buffer: shared.config.edge_subscriber_buffer as usize,
            after,
            idle: Duration::from_secs(shared.config.edge_idle_timeout_secs),
            fetched,
            deadline: pass.deadline(),
            backing: None,
            disconnected: None,
        };
        let (membership, here) = Membership::join(hub.0.room.clone(), &opts).attend(
            shared.presence.as_ref(),
            room_id,
            req.uri().query(),
            pass.grant(),
        );
        shared.metrics.subscribers.inc();
        let (trigger, spread) = self.departure();
        self.shared
            .life
            .spawn_leaving(&trigger, spread, move |leave| async move {
                // A disconnect through the server API closes it too.
                let leave = leave.child_token();
                let session = here.as_ref().map(|h| h.session(leave.clone()));
                opts.disconnected = session.as_ref().map(|s| s.flag());
                if let Ok(ws) = fut.await {
                    subscriber::serve(
                        ws,
                        membership,
                        opts,
                        ResumeCounters {
                            resumed: &shared.metrics.resumes,
                            partial: &shared.metrics.resumes_partial,
                        },
                        leave,
                    )
                    .await;
                }
                shared.metrics.subscribers.dec();
                drop((hub, here, session));
                drop((permit, pass));
            });
        resp
    }
}

impl Endpoint for Edge {
    fn prefix(&self) -> &'static str {
        "/subscribe/"
    }

    fn open(&self, req: Request<Incoming>, _peer: SocketAddr, room: &str) -> Opening {
        Box::pin(self.clone().subscribe(req, room.to_owned()))
    }

    fn access(&self) -> Access {
        Access::Subscribe
    }

    fn ready(&self) -> Result<(), String> {
        self.shared.life.ready("edge")
    }
}

/// Serves an edge alone on `listener`, relaying `rooms` from `routes` (tests and benchmarks;
/// pods host the edge beside the producer).
pub fn start_on(
    listener: TcpListener,
    config: EdgeConfig,
    routes: Routes,
    rooms: RoomRange,
) -> Result<ServiceHandle, StartError> {
    let configured = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut registry = Registry::default();
    let life = Lifecycle::new();
    let info = Info::new(
        "edge",
        serde_json::to_value(&config).expect("config serializes"),
    );
    let edge = Edge::new(config, routes, rooms, &mut registry, life.clone(), None);
    let router = Router::new(registry, info)
        .endpoint(Arc::new(edge.clone()))
        .endpoint(edge.history());
    service::spawn(
        "edge",
        listener.into(),
        configured,
        router,
        &life,
        edge.drain(),
    )
}
