//! Reaching SQS: the SDK client, queue URLs resolved once and cached, and every call under a
//! deadline with its error classified.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Region;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::QueueAttributeName;

use super::super::sqs_errors::{Classify, classify};
use super::super::{EntryError, QueueError};
use super::{SqsConfig, SqsQueues};
use crate::rooms::{QueueNaming, RoomId};

impl SqsQueues {
    /// Builds a client from the default AWS chain plus `config`'s overrides.
    ///
    /// Retries are left to callers: the producer and operator own their backoff and breaker, so
    /// the SDK must not hide an outage behind its own retries.
    pub async fn connect(config: &SqsConfig, naming: QueueNaming) -> Result<Self, QueueError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let mut shared = loader.load().await;
        if shared.region().is_none() {
            if shared.endpoint_url().is_none() {
                return Err(QueueError::Invalid(
                    "no AWS region configured: set AWS_REGION or the region option".into(),
                ));
            }
            // An endpoint override (LocalStack) does not care which region is signed.
            shared = shared
                .into_builder()
                .region(Region::new("us-east-1"))
                .build();
        }
        Ok(SqsQueues {
            client: Client::new(&shared),
            naming,
            urls: std::sync::RwLock::default(),
            call_timeout: config.call_timeout,
        })
    }

    pub(super) async fn url(&self, room: RoomId) -> Result<String, QueueError> {
        // Rooms sharing a queue share its cached URL.
        let room = self.naming.queue_key(room);
        if let Some(url) = self
            .urls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&room)
        {
            return Ok(url.clone());
        }
        let url = match self.naming.queue_url(room)? {
            Some(url) => url,
            None => {
                let name = self.naming.queue_name(room)?;
                let out = self
                    .call(
                        &name,
                        self.call_timeout,
                        self.client.get_queue_url().queue_name(&name).send(),
                    )
                    .await?;
                out.queue_url()
                    .map(str::to_owned)
                    .ok_or_else(|| QueueError::Service {
                        code: "MissingQueueUrl".into(),
                        message: "GetQueueUrl returned no URL".into(),
                        retryable: true,
                    })?
            }
        };
        self.cache(room, url.clone());
        Ok(url)
    }

    pub(super) fn cache(&self, room: RoomId, url: String) {
        let room = self.naming.queue_key(room);
        self.urls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room, url);
    }

    pub(super) fn forget(&self, room: RoomId) {
        let room = self.naming.queue_key(room);
        self.urls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&room);
    }

    /// Runs one SDK call under a deadline and maps its error.
    pub(super) async fn call<T, E>(
        &self,
        queue: &str,
        limit: Duration,
        fut: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, QueueError>
    where
        E: Classify,
    {
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(QueueError::Timeout(limit)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(err)) => Err(classify(queue, err)),
        }
    }

    /// Like [`Self::call`] for calls on an existing queue: a vanished queue drops its cached URL.
    pub(super) async fn on_queue<T, E>(
        &self,
        room: RoomId,
        limit: Duration,
        fut: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, QueueError>
    where
        E: Classify,
    {
        let name = self.naming.queue_name(room)?;
        let res = self.call(&name, limit, fut).await;
        if matches!(res, Err(QueueError::NotFound { .. })) {
            self.forget(room);
        }
        res
    }
}

pub(super) fn sdk_attrs(attrs: BTreeMap<String, String>) -> HashMap<QueueAttributeName, String> {
    attrs
        .into_iter()
        .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v))
        .collect()
}

/// Maps batch results, which SQS reports by entry id, back to entry order.
pub(super) fn by_entry<T>(
    len: usize,
    ok: impl Iterator<Item = (usize, T)>,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) -> Vec<Result<T, EntryError>> {
    let mut out: Vec<Result<T, EntryError>> = (0..len)
        .map(|_| {
            Err(EntryError {
                code: "MissingResult".into(),
                message: "the service returned no result for this entry".into(),
                sender_fault: false,
            })
        })
        .collect();
    for (i, v) in ok {
        if i < len {
            out[i] = Ok(v);
        }
    }
    for f in failed {
        if let Some(slot) = f.id().parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            *slot = Err(EntryError {
                code: f.code().to_owned(),
                message: f.message().unwrap_or_default().to_owned(),
                sender_fault: f.sender_fault(),
            });
        }
    }
    out
}
