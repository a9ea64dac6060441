//! `GET /history/{roomId}` on a shard: a page of a room's history, from its memory and the
//! history store, as a resume would replay it (see [`chatflow_fanout::page`]).

use std::net::SocketAddr;
use std::sync::Arc;

use chatflow::auth::Access;
use chatflow::http::{self, Body};
use chatflow::lifecycle::Lifecycle;
use chatflow::rooms::RoomRange;
use chatflow::router::{Endpoint, Opening};
use chatflow_fanout::page::{self, Query};
use chatflow_fanout::resume::Backing;
use chatflow_fanout::room::Room;
use chatflow_fanout::store::{Store, StoreMetrics};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// The route over a shard's rooms.
#[derive(Clone)]
pub(crate) struct HistoryRoute(pub(crate) Arc<ShardHistory>);

/// What the route reads: the shard's rooms and its history store.
pub(crate) struct ShardHistory {
    pub(crate) rooms: RoomRange,
    pub(crate) room_state: Vec<Arc<Room>>,
    pub(crate) store: Option<Store>,
    pub(crate) metrics: StoreMetrics,
    pub(crate) life: Lifecycle,
    /// One permit per read in progress: a page may read up to a thousand events from the store.
    pub(crate) reads: tokio::sync::Semaphore,
}

/// History reads a shard serves at once; more are answered 503.
pub(crate) const CONCURRENT_READS: usize = 32;

impl ShardHistory {
    async fn answer(&self, req: Request<Incoming>, room: &str) -> Response<Body> {
        let room_id = match self.rooms.parse_room(room) {
            Ok(id) => id,
            Err(e) => {
                return http::text(
                    StatusCode::NOT_FOUND,
                    format!("this shard does not serve that room: {e}\n"),
                );
            }
        };
        let query = match Query::parse(req.uri().query()) {
            Ok(q) => q,
            Err(e) => return http::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let Ok(_read) = self.reads.try_acquire() else {
            return http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many history reads at once, retry later\n",
            );
        };
        let room = &self.room_state[(room_id - self.rooms.start()) as usize];
        let backing = self.store.clone().map(|store| Backing {
            store,
            room: room_id,
            metrics: self.metrics.clone(),
        });
        let page = page::read(room, query, backing.as_ref()).await;
        http::json(StatusCode::OK, page.to_json(room_id))
    }
}

impl Endpoint for HistoryRoute {
    fn prefix(&self) -> &'static str {
        "/history/"
    }

    fn open(&self, req: Request<Incoming>, _peer: SocketAddr, room: &str) -> Opening {
        let route = self.0.clone();
        let room = room.to_owned();
        Box::pin(async move { route.answer(req, &room).await })
    }

    fn access(&self) -> Access {
        Access::Subscribe
    }

    fn ready(&self) -> Result<(), String> {
        self.0.life.ready("consumer")
    }

    fn gates_plain_requests(&self) -> bool {
        true
    }
}
