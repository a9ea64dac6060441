//! The consumer service: its route, subscriber admission, one poll loop per queue, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatflow::about::Info;
use chatflow::auth::{Access, Gate, Pass};
use chatflow::http::Body;
use chatflow::lifecycle::Lifecycle;
use chatflow::queue::SharedQueues;
use chatflow::rooms::RoomRange;
use chatflow::router::{self, Endpoint, Opening, Router};
use chatflow::service::{self, Listeners, ServiceHandle, StartError};
use hyper::body::Incoming;
use hyper::{Request, Response};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::ConsumerConfig;
use crate::history::{HistoryRoute, ShardHistory};
use crate::metrics::Metrics;
use crate::poller::{self, PollContext, QueueRooms};
use chatflow_fanout::admission::{Admitted, Door};
use chatflow_fanout::presence::Presence;
use chatflow_fanout::resume::Backing;
use chatflow_fanout::room::Room;
use chatflow_fanout::store::Store;
use chatflow_fanout::subscriber::{self, Membership};

struct Shared {
    config: ConsumerConfig,
    rooms: RoomRange,
    room_state: Vec<Arc<Room>>,
    metrics: Arc<Metrics>,
    /// The history store, when history outlives the shard.
    store: Option<Store>,
    /// One permit per subscriber: dropping a subscriber's permit frees its place.
    admission: Arc<Semaphore>,
    /// Stops the pollers, then closes the subscribers.
    life: Lifecycle,
    /// Who the subscribers are (the standalone server's; shards' subscribers are edges).
    presence: Option<Presence>,
}

/// The consumer without a listener: its `/subscribe/{roomId}` route and its room pollers, served
/// by [`start_on`] alone or by a standalone server beside a producer.
#[derive(Clone)]
pub struct Consumer {
    shared: Arc<Shared>,
    pollers: TaskTracker,
}

impl Consumer {
    /// Starts polling the configured rooms until `life` stops; subscribers with an identity are
    /// entered in `presence`.
    pub fn new(
        config: ConsumerConfig,
        queues: SharedQueues,
        registry: &mut Registry,
        life: Lifecycle,
        presence: Option<Presence>,
    ) -> Result<Self, StartError> {
        let rooms = config.queue.rooms()?;
        let store = Store::open(&config.store).map_err(|e| StartError::Setting(e.to_string()))?;
        let metrics = Arc::new(Metrics::new(registry, store.is_some()));
        if let Some(store) = store.clone() {
            // Says at start-up whether the store answers, rather than at the first append.
            let metrics = metrics.clone();
            tokio::spawn(async move {
                match store.ping().await {
                    Ok(_) => metrics.store.answered(),
                    Err(e) => {
                        metrics.store.up.set(0);
                        tracing::warn!(error = %e, "the history store does not answer; rooms pause at their first batch until it does");
                    }
                }
            });
        }
        let (turns, wait) = config.poll_plan(queues.naming().queue_keys(rooms).len());
        let ctx = Arc::new(PollContext {
            queues,
            metrics: metrics.clone(),
            wait,
            turns: turns.map(|n| Arc::new(Semaphore::new(n))),
            stop: life.stopping().clone(),
            hold: Duration::from_secs(config.resume_hold_secs),
            store: store.clone(),
        });
        let room_state: Vec<Arc<Room>> = rooms
            .iter()
            .map(|_| {
                Arc::new(Room::new(
                    config.dedup_memory as usize,
                    config.history_size as usize,
                ))
            })
            .collect();
        let pollers = TaskTracker::new();
        // One poller per queue: a room's own, or its bucket's, which it shares with its
        // neighbours.
        let mut queues: Vec<QueueRooms> = Vec::new();
        for (id, state) in rooms.iter().zip(&room_state) {
            let key = ctx.queues.naming().queue_key(id);
            match queues.last_mut() {
                Some(q) if q.key == key => q.rooms.push((id, state.clone())),
                _ => queues.push(QueueRooms {
                    key,
                    rooms: vec![(id, state.clone())],
                }),
            }
        }
        for queue in queues {
            pollers.spawn(poller::run(queue, ctx.clone()));
        }
        pollers.close();
        let admission = Arc::new(Semaphore::new(
            config.max_subscribers.min(Semaphore::MAX_PERMITS),
        ));
        tracing::debug!(rooms = %rooms, pollers = ?turns, wait = ?wait, store = ?store, "consumer polling");
        Ok(Consumer {
            shared: Arc::new(Shared {
                config,
                rooms,
                room_state,
                metrics,
                store,
                admission,
                life,
                presence,
            }),
            pollers,
        })
    }

    /// The `/history/{roomId}` route over this consumer's rooms.
    pub fn history(&self) -> Arc<dyn Endpoint> {
        let s = &self.shared;
        Arc::new(HistoryRoute(Arc::new(ShardHistory {
            rooms: s.rooms,
            room_state: s.room_state.clone(),
            store: s.store.clone(),
            metrics: s.metrics.store.clone(),
            life: s.life.clone(),
            reads: tokio::sync::Semaphore::new(crate::history::CONCURRENT_READS),
        })))
    }

    /// Rooms served.
    pub fn rooms(&self) -> RoomRange {
        self.shared.rooms
    }

    /// After the stop began: lets the pollers finish the batches in hand, so subscribers get them,
    /// then closes the subscribers; each wait bounded by the configured grace period.
    pub async fn drain(self) {
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, self.pollers.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over with broadcasts in progress");
        }
        for room in &self.shared.room_state {
            room.close_all();
        }
        self.shared.life.close(grace).await;
    }
}

impl Endpoint for Consumer {
    fn prefix(&self) -> &'static str {
        "/subscribe/"
    }

    fn open(&self, req: Request<Incoming>, _peer: SocketAddr, room: &str) -> Opening {
        Box::pin(std::future::ready(subscribe(
            req,
            self.shared.clone(),
            room,
        )))
    }

    fn access(&self) -> Access {
        Access::Subscribe
    }

    fn ready(&self) -> Result<(), String> {
        self.shared.life.ready("consumer")
    }
}

/// A running consumer.
pub type ConsumerHandle = ServiceHandle;

/// Starts the consumer on `config.listen_addr` over `queues`.
pub async fn start(
    config: ConsumerConfig,
    queues: SharedQueues,
) -> Result<ConsumerHandle, StartError> {
    let listeners = Listeners::bind(config.listen_addr, config.metrics_addr).await?;
    start_on(listeners, config, queues)
}

/// Starts the consumer on already bound listeners (a `TcpListener` alone serves everything).
pub fn start_on(
    listeners: impl Into<Listeners>,
    config: ConsumerConfig,
    queues: SharedQueues,
) -> Result<ConsumerHandle, StartError> {
    let configured = config.listen_addr;
    let mut registry = Registry::default();
    let life = Lifecycle::new();
    let info = Info::new(
        "consumer",
        serde_json::to_value(&config).expect("config serializes"),
    );
    let gate = Gate::new(&config.auth, Vec::new(), &mut registry)?;
    let consumer = Consumer::new(config, queues, &mut registry, life.clone(), None)?;
    tracing::info!(rooms = %consumer.rooms(), "consumer serving");
    let router = Router::new(registry, info)
        .gate(gate)
        .endpoint(Arc::new(consumer.clone()))
        .endpoint(consumer.history());
    service::spawn(
        "consumer",
        listeners.into(),
        configured,
        router,
        &life,
        consumer.drain(),
    )
}

fn subscribe(mut req: Request<Incoming>, shared: Arc<Shared>, room: &str) -> Response<Body> {
    let door = Door {
        rooms: shared.rooms,
        life: &shared.life,
        places: &shared.admission,
        not_served: "this shard does not serve that room",
    };
    let Admitted {
        room: room_id,
        after,
        permit,
    } = match door.admit(&req, room) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let (resp, fut) = match router::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(bad) => return bad,
    };
    let room = shared.room_state[(room_id - shared.rooms.start()) as usize].clone();
    let pass = Pass::take(&mut req);
    let mut opts = subscriber::Options {
        buffer: shared.config.subscriber_buffer as usize,
        after,
        idle: Duration::from_secs(shared.config.idle_timeout_secs),
        fetched: None,
        deadline: pass.deadline(),
        backing: shared.store.clone().map(|store| Backing {
            store,
            room: room_id,
            metrics: shared.metrics.store.clone(),
        }),
        disconnected: None,
    };
    let (membership, here) = Membership::join(room, &opts).attend(
        shared.presence.as_ref(),
        room_id,
        req.uri().query(),
        pass.grant(),
    );
    shared.metrics.subscribers.inc();
    let life = shared.life.clone();
    life.spawn(async move {
        // A disconnect through the server API closes it too.
        let stop = shared.life.closing().child_token();
        let session = here.as_ref().map(|h| h.session(stop.clone()));
        opts.disconnected = session.as_ref().map(|s| s.flag());
        if let Ok(ws) = fut.await {
            subscriber::serve(
                ws,
                membership,
                opts,
                subscriber::ResumeCounters {
                    resumed: &shared.metrics.resumes,
                    partial: &shared.metrics.resumes_partial,
                },
                stop,
            )
            .await;
        }
        drop(session);
        shared.metrics.subscribers.dec();
        drop((permit, pass, here));
    });
    resp
}
