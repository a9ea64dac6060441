//! The producer service: its route, connection admission, per-room batchers (unless the queue
//! is in memory), shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatflow::about::Info;
use chatflow::auth::{Access, Gate, Pass};
use chatflow::http::Body;
use chatflow::lifecycle::Lifecycle;
use chatflow::queue::SharedQueues;
use chatflow::rooms::{RoomId, RoomRange};
use chatflow::router::{self, Endpoint, Opening, Refusal, Router};
use chatflow::service::{self, Listeners, ServiceHandle, StartError};
use chatflow_fanout::edge::Edge;
use chatflow_fanout::presence::{Presence, PresenceRoute};
use hyper::body::Incoming;
use hyper::{Request, Response};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::batcher::{self, BatchContext, BatchPolicy, Pending};
use crate::breaker::Breaker;
use crate::config::ProducerConfig;
use crate::connection::{self, Peer, Target};
use crate::ingest::Destination;
use crate::limits::MessageRates;
use crate::metrics::Metrics;
use chatflow::client_ip;

/// Messages a queue's batcher holds before senders wait: about a full batch of chat-sized
/// messages, so the next batch fills while one is in flight.
const BATCHER_QUEUE: usize = chatflow::envelope::ENVELOPE_MAX_MESSAGES;

/// State every connection shares.
pub struct Shared {
    /// Configuration.
    pub config: ProducerConfig,
    /// Rooms served.
    pub rooms: RoomRange,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Connections stop reading when it stops, answer what they read, and close.
    pub life: Lifecycle,
    /// One per queue (a room, or a bucket of rooms), in room order; none when connections
    /// publish in place.
    batchers: Vec<mpsc::Sender<Pending>>,
    /// Rooms per queue: consecutive rooms share a batcher when they share a queue.
    rooms_per_queue: u32,
    /// The key of the range's first queue.
    first_key: RoomId,
    /// What publishing needs, for connections that publish in place.
    pub batch: Arc<BatchContext>,
    /// Whether connections publish what they read themselves (a queue in memory) rather than
    /// through their room's batcher.
    pub in_place: bool,
    /// One permit per open connection: dropping a connection's permit frees its place.
    admission: Arc<Semaphore>,
    /// One permit per message read and not yet answered, over all connections: a reader waits
    /// for one, so memory stays bounded however many clients connect.
    pub unanswered: Arc<Semaphore>,
    /// Message rates per user and per client address.
    pub rates: Arc<MessageRates>,
    /// Who is connected, for presence and for disconnects through the server API.
    pub presence: Option<Presence>,
}

impl Shared {
    /// Where a message of `room` goes: the room, in its queue's message group. A bucket is one
    /// group: its rooms' messages share envelopes, so a quiet room's message travels with its
    /// neighbours' instead of alone.
    pub fn destination(&self, room: RoomId) -> Destination {
        Destination {
            room,
            group: self.batch.queues.naming().queue_key(room),
        }
    }

    /// The batcher of a room of the range (its queue's), for connections that do not publish
    /// in place.
    pub fn batcher(&self, room: RoomId) -> &mpsc::Sender<Pending> {
        let key = self.batch.queues.naming().queue_key(room);
        &self.batchers[((key - self.first_key) / self.rooms_per_queue) as usize]
    }
}

/// The producer without a listener: its `/chat/{roomId}` route and its room batchers, served by
/// [`start_on`] alone or by a standalone server beside a consumer.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    batchers: TaskTracker,
}

impl Producer {
    /// Starts a batcher per queue of the configured range; when `life` stops, senders stop
    /// being read.
    pub fn new(
        config: ProducerConfig,
        queues: SharedQueues,
        registry: &mut Registry,
        life: Lifecycle,
        presence: Option<Presence>,
    ) -> Result<Self, StartError> {
        let rooms = config.queue.rooms()?;
        if config
            .api_key
            .as_ref()
            .is_some_and(|k| k.0.len() < crate::api::MIN_KEY_LEN)
        {
            return Err(StartError::Setting(format!(
                "API_KEY must be at least {} characters",
                crate::api::MIN_KEY_LEN
            )));
        }
        let max_connections = config.max_connections.min(Semaphore::MAX_PERMITS);
        let metrics = Arc::new(Metrics::new(registry));
        let in_place = queues.publishes_in_place();
        let keys = queues.naming().queue_keys(rooms);
        let rooms_per_queue = queues.naming().layout().rooms_per_queue();
        let first_key = queues.naming().queue_key(rooms.start());
        let batch = Arc::new(BatchContext {
            queues,
            policy: BatchPolicy {
                packing: config.packing,
                linger: config.linger(),
                attempts: config.publish_attempts,
                retry_base: Duration::from_millis(config.retry_base_ms),
                retry_max: Duration::from_millis(config.retry_max_ms),
            },
            breaker: Breaker::new(
                config.breaker_threshold,
                Duration::from_millis(config.breaker_cooldown_ms),
            ),
            metrics: metrics.clone(),
        });
        let batchers = TaskTracker::new();
        // Connections that publish in place need no batcher.
        let senders = keys
            .into_iter()
            .filter(|_| !in_place)
            .map(|key| {
                // A bucket's rooms share its batcher: more of them, more room to wait in.
                let depth =
                    BATCHER_QUEUE * (rooms_per_queue as usize).min(chatflow::queue::MAX_BATCH);
                let (tx, rx) = mpsc::channel(depth);
                batchers.spawn(batcher::run(key, batch.clone(), rx));
                tx
            })
            .collect();
        batchers.close();
        tokio::spawn(batcher::probe_while_open(
            rooms.start(),
            batch.clone(),
            Duration::from_millis(config.breaker_cooldown_ms),
            life.stopping().clone(),
        ));
        let unanswered = (config.max_unanswered as usize).min(Semaphore::MAX_PERMITS);
        let rates = MessageRates::new(
            config.user_message_rate,
            config.user_message_burst,
            config.ip_message_rate,
            config.ip_message_burst,
        );
        tokio::spawn(rates.clone().sweep(life.stopping().clone()));
        Ok(Producer {
            shared: Arc::new(Shared {
                config,
                rooms,
                metrics,
                life,
                batchers: senders,
                rooms_per_queue,
                first_key,
                batch,
                in_place,
                admission: Arc::new(Semaphore::new(max_connections)),
                unanswered: Arc::new(Semaphore::new(unanswered)),
                rates,
                presence,
            }),
            batchers,
        })
    }

    /// Rooms served.
    pub fn rooms(&self) -> RoomRange {
        self.shared.rooms
    }

    /// The server API route over this producer's rooms.
    pub fn api(&self) -> Arc<dyn Endpoint> {
        Arc::new(crate::api::Api::new(self.shared.clone()))
    }

    /// The server API's user routes (`/api/users/{userId}/disconnect`).
    pub fn users_api(&self) -> Arc<dyn Endpoint> {
        Arc::new(crate::api::UsersApi(crate::api::Api::new(
            self.shared.clone(),
        )))
    }

    /// After shutdown: waits for every connection to answer what it accepted, then lets the
    /// batchers flush and stop, each wait bounded by the configured grace period.
    pub async fn drain(self) {
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        if !self.shared.life.finish(grace).await {
            tracing::warn!("shutdown grace period over with connections still open");
        }
        // The batchers stop once the last sender is gone: this handle's and the connections'.
        drop(self.shared);
        let _ = tokio::time::timeout(grace, self.batchers.wait()).await;
    }
}

impl Endpoint for Producer {
    fn prefix(&self) -> &'static str {
        "/chat/"
    }

    fn open(&self, req: Request<Incoming>, peer: SocketAddr, room: &str) -> Opening {
        Box::pin(std::future::ready(upgrade(
            req,
            peer,
            self.shared.clone(),
            room,
        )))
    }

    fn access(&self) -> Access {
        Access::Publish
    }

    fn ready(&self) -> Result<(), String> {
        self.shared.life.ready("producer")?;
        if self.shared.batch.breaker.is_open() {
            return Err("queue service unavailable (circuit breaker open)".into());
        }
        Ok(())
    }
}

/// A running producer.
pub type ProducerHandle = ServiceHandle;

/// Starts the producer on `config.listen_addr` over `queues`.
pub async fn start(
    config: ProducerConfig,
    queues: SharedQueues,
) -> Result<ProducerHandle, StartError> {
    let listeners = Listeners::bind(config.listen_addr, config.metrics_addr).await?;
    start_on(listeners, config, queues)
}

/// Starts the producer on already bound listeners (a `TcpListener` alone serves everything).
pub fn start_on(
    listeners: impl Into<Listeners>,
    config: ProducerConfig,
    queues: SharedQueues,
) -> Result<ProducerHandle, StartError> {
    let configured = config.listen_addr;
    let mut registry = Registry::default();
    let life = Lifecycle::new();
    let info = Info::new(
        "producer",
        serde_json::to_value(&config).expect("config serializes"),
    );
    let mut edge_config = config.edge.clone();
    // The edge drains after the producer within the same pod's grace: its spread fits in half.
    edge_config.edge_close_spread_secs = edge_config
        .edge_close_spread_secs
        .min(config.shutdown_grace_secs / 2);
    let gate = Gate::new(&config.auth, config.trusted_proxies.clone(), &mut registry)?;
    let presence = Presence::start(&config.presence, &mut registry)
        .map_err(|e| StartError::Setting(e.to_string()))?;
    let producer = Producer::new(
        config,
        queues,
        &mut registry,
        life.clone(),
        presence.clone(),
    )
    .inspect_err(|_| presence.iter().for_each(Presence::abort))?;
    tracing::info!(rooms = %producer.rooms(), "producer serving");
    let edge = edge_config.routes().map(|routes| {
        tracing::info!(?routes, "edge serving /subscribe/{{roomId}}");
        Edge::new(
            edge_config,
            routes,
            producer.rooms(),
            &mut registry,
            life.alongside(),
            presence.clone(),
        )
    });
    let mut router = Router::new(registry, info)
        .gate(gate)
        .endpoint(Arc::new(producer.clone()))
        .endpoint(producer.api())
        .endpoint(producer.users_api());
    if let Some(edge) = &edge {
        router = router
            .endpoint(Arc::new(edge.clone()))
            .endpoint(edge.history());
        if let Some(p) = &presence {
            router = router.endpoint(Arc::new(PresenceRoute::new(
                p.clone(),
                producer.rooms(),
                life.clone(),
                "producer",
            )));
        }
    }
    // Senders are answered before the edge lets its subscribers go, so they see the last acks'
    // messages too; with a close spread, subscribers leave by turns from the stop on instead,
    // and one that leaves early resumes elsewhere from its position.
    let drain = async move {
        producer.drain().await;
        if let Some(edge) = edge {
            edge.drain().await;
        }
        // The closed subscribers leave the rosters now rather than by expiry.
        if let Some(p) = presence {
            p.close().await;
        }
    };
    service::spawn(
        "producer",
        listeners.into(),
        configured,
        router,
        &life,
        drain,
    )
}

fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    room: &str,
) -> Response<Body> {
    let permit = match router::admit(&req, &shared.life, &shared.admission) {
        Ok(permit) => permit,
        Err(refusal) => {
            if refusal == Refusal::Full {
                shared.metrics.connections_refused.inc();
            }
            return refusal.response("connection");
        }
    };
    let target = match shared.rooms.parse_room(room) {
        Ok(room) => Target::Room(room),
        Err(e) => Target::Invalid(e.to_string()),
    };
    let ip = client_ip::resolve(peer, req.headers(), &shared.config.trusted_proxies);
    let pass = Pass::take(&mut req);
    let (resp, fut) = match router::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(bad) => return bad,
    };
    shared.metrics.connections.inc();
    let life = shared.life.clone();
    let spread = shared.config.close_spread();
    life.spawn_leaving(life.stopping(), spread, move |leave| async move {
        // A disconnect through the server API stops it too: a sender is its token's user.
        let leave = leave.child_token();
        let session = shared
            .presence
            .as_ref()
            .zip(pass.grant())
            .map(|(p, g)| p.session(&g.subject, leave.clone()));
        match fut.await {
            Ok(ws) => {
                let peer = Peer::new(ip, pass).disconnectable(session.as_ref().map(|s| s.flag()));
                connection::serve(ws, shared.clone(), target, peer, leave).await
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade did not complete"),
        }
        shared.metrics.connections.dec();
        drop((permit, session));
    });
    resp
}
