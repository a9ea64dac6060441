//! What every reconcile shares: the client, metrics, settings, watch caches, the queue
//! state and per-set failure counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Client, Resource};

use super::budgets::BudgetApi;
use super::queues::QueueState;
use super::{Error, Stores};
use crate::crd::ChatRoomSet;
use crate::desired::ingress::IngressPolicy;
use crate::desired::{FIELD_MANAGER, QueueLocation};
use crate::metrics::Metrics;

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Queue region and endpoint when a spec names none.
    pub defaults: QueueLocation,
    /// Queue calls in flight at once per set.
    pub queue_concurrency: usize,
    /// Periodic resync.
    pub resync: Duration,
    /// SQS endpoints a spec may name besides the default one.
    pub allowed_endpoints: Vec<String>,
    /// Hosts and annotations a spec's Ingress may use.
    pub ingress_policy: IngressPolicy,
    /// Event recorder.
    pub recorder: Recorder,
    pub(super) queues: QueueState,
    pub(super) rates: super::rates::Rates,
    stores: RwLock<Option<Stores>>,
    pub(super) failures: Mutex<HashMap<String, u32>>,
    budget_api: tokio::sync::OnceCell<BudgetApi>,
    totals: Mutex<HashMap<String, (u32, u32)>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        defaults: QueueLocation,
        identity: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.to_owned()),
            },
        );
        Context {
            client,
            metrics,
            defaults,
            queue_concurrency: 32,
            resync: Duration::from_secs(60),
            allowed_endpoints: Vec::new(),
            ingress_policy: IngressPolicy::default(),
            recorder,
            queues: QueueState::default(),
            rates: super::rates::Rates::default(),
            stores: RwLock::new(None),
            failures: Mutex::default(),
            budget_api: tokio::sync::OnceCell::new(),
            totals: Mutex::default(),
        }
    }

    /// Hands the controller's watch caches to the reconciler (None when it stops).
    pub fn set_stores(&self, stores: Option<Stores>) {
        // A new term of leadership trusts nothing another leader may have changed meanwhile.
        if stores.is_some() {
            self.queues.forget_all();
        }
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = stores;
    }

    pub(super) fn stores(&self) -> Result<Stores, Error> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::NoCaches)
    }

    /// The policy API version of PodDisruptionBudgets, asked once.
    pub(super) async fn budget_api(&self) -> Result<BudgetApi, Error> {
        Ok(*self
            .budget_api
            .get_or_try_init(|| BudgetApi::detect(&self.client))
            .await?)
    }

    pub(super) async fn event(
        &self,
        crs: &ChatRoomSet,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.event_acting(crs, type_, reason, "Reconcile", note)
            .await;
    }

    /// An event whose `action` tells it apart: the recorder counts a repeat of the same type,
    /// reason and action within minutes as the first one again, keeping the first one's note.
    pub(super) async fn event_acting(
        &self,
        crs: &ChatRoomSet,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &crs.object_ref(&())).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }

    pub(super) fn record_totals(&self, key: &str, queues: u32, shards: u32) {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        if queues == 0 && shards == 0 {
            t.remove(key);
        } else {
            t.insert(key.to_owned(), (queues, shards));
        }
        self.metrics
            .queues
            .set(t.values().map(|v| v.0 as i64).sum());
        self.metrics
            .shards
            .set(t.values().map(|v| v.1 as i64).sum());
    }
}
