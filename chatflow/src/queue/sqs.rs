//! Amazon SQS (or LocalStack) behind the queue interface.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Region;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::sqs_errors::{Classify, classify};
use super::{
    BodyFormat, EntryError, FORMAT_ATTRIBUTE, MAX_BATCH, MAX_WAIT, PublishEntry, PublishResult,
    QueueAttributes, QueueDepth, QueueError, Queues, ReceivedMessage, Tags,
};
use crate::rooms::{QueueNaming, RoomId};

/// Where and how to reach SQS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsConfig {
    /// Endpoint override (LocalStack); otherwise AWS_ENDPOINT_URL or the regional endpoint.
    pub endpoint: Option<String>,
    /// Region; otherwise the default chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// Upper bound on any call but a long poll, which gets its wait on top.
    pub call_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            endpoint: None,
            region: None,
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// SQS queues of a room set, with queue URLs resolved once and cached.
pub struct SqsQueues {
    client: Client,
    naming: QueueNaming,
    urls: RwLock<HashMap<RoomId, String>>,
    call_timeout: Duration,
}

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
            urls: RwLock::default(),
            call_timeout: config.call_timeout,
        })
    }

    async fn url(&self, room: RoomId) -> Result<String, QueueError> {
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

    fn cache(&self, room: RoomId, url: String) {
        self.urls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room, url);
    }

    fn forget(&self, room: RoomId) {
        self.urls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&room);
    }

    /// Runs one SDK call under a deadline and maps its error.
    async fn call<T, E>(
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
    async fn on_queue<T, E>(
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

fn sdk_attrs(attrs: BTreeMap<String, String>) -> HashMap<QueueAttributeName, String> {
    attrs
        .into_iter()
        .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v))
        .collect()
}

/// Maps batch results, which SQS reports by entry id, back to entry order.
fn by_entry<T>(
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

#[async_trait]
impl Queues for SqsQueues {
    fn backend(&self) -> &'static str {
        "sqs"
    }

    async fn create_queue_tagged(
        &self,
        room: RoomId,
        attrs: &QueueAttributes,
        tags: &Tags,
    ) -> Result<(), QueueError> {
        let name = self.naming.queue_name(room)?;
        let mut req = self
            .client
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(sdk_attrs(attrs.to_map())));
        if !tags.is_empty() {
            req = req.set_tags(Some(tags.clone().into_iter().collect()));
        }
        let out = self.call(&name, self.call_timeout, req.send()).await?;
        if let Some(url) = out.queue_url() {
            self.cache(room, url.to_owned());
        }
        Ok(())
    }

    async fn queue_tags(&self, room: RoomId) -> Result<Tags, QueueError> {
        let url = self.url(room).await?;
        let req = self.client.list_queue_tags().queue_url(url);
        let out = self.on_queue(room, self.call_timeout, req.send()).await?;
        Ok(out
            .tags()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn tag_queue(&self, room: RoomId, tags: &Tags) -> Result<(), QueueError> {
        let url = self.url(room).await?;
        let req = self
            .client
            .tag_queue()
            .queue_url(url)
            .set_tags(Some(tags.clone().into_iter().collect()));
        self.on_queue(room, self.call_timeout, req.send()).await?;
        Ok(())
    }

    async fn queue_attributes(&self, room: RoomId) -> Result<BTreeMap<String, String>, QueueError> {
        let url = self.url(room).await?;
        let req = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All);
        let out = self.on_queue(room, self.call_timeout, req.send()).await?;
        Ok(out
            .attributes()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect())
    }

    async fn set_queue_attributes(
        &self,
        room: RoomId,
        attrs: BTreeMap<String, String>,
    ) -> Result<(), QueueError> {
        let url = self.url(room).await?;
        let req = self
            .client
            .set_queue_attributes()
            .queue_url(url)
            .set_attributes(Some(sdk_attrs(attrs)));
        self.on_queue(room, self.call_timeout, req.send()).await?;
        Ok(())
    }

    async fn delete_queue(&self, room: RoomId) -> Result<(), QueueError> {
        let url = match self.url(room).await {
            Ok(url) => url,
            Err(QueueError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let res = self
            .on_queue(
                room,
                self.call_timeout,
                self.client.delete_queue().queue_url(url).send(),
            )
            .await;
        self.forget(room);
        match res {
            Ok(_) | Err(QueueError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn publish(
        &self,
        room: RoomId,
        entries: &[PublishEntry],
    ) -> Result<Vec<PublishResult>, QueueError> {
        super::check_batch(entries.len())?;
        let url = self.url(room).await?;
        let sdk_entries = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut b = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&e.body)
                    .message_group_id(&e.group_id)
                    .message_deduplication_id(&e.dedup_id);
                if let Some(format) = e.format.attribute() {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(format)
                        .build()
                        .map_err(|err| QueueError::Invalid(err.to_string()))?;
                    b = b.message_attributes(FORMAT_ATTRIBUTE, value);
                }
                b.build()
                    .map_err(|err| QueueError::Invalid(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let req = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(sdk_entries));
        let out = self.on_queue(room, self.call_timeout, req.send()).await?;
        let ok = out
            .successful()
            .iter()
            .filter_map(|s| Some((s.id().parse::<usize>().ok()?, s.message_id().to_owned())));
        Ok(by_entry(entries.len(), ok, out.failed()))
    }

    async fn receive(
        &self,
        room: RoomId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let url = self.url(room).await?;
        // SQS waits in whole seconds; round up so a short wait still long-polls.
        let wait_secs = wait.min(MAX_WAIT).as_millis().div_ceil(1000) as i32;
        let req = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names(FORMAT_ATTRIBUTE);
        let limit = self.call_timeout + Duration::from_secs(wait_secs as u64);
        let out = self.on_queue(room, limit, req.send()).await?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let attr = |name: MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(&name)).cloned()
                };
                ReceivedMessage {
                    message_id: m.message_id().unwrap_or_default().to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                    group_id: attr(MessageSystemAttributeName::MessageGroupId).unwrap_or_default(),
                    format: BodyFormat::from_attribute(
                        m.message_attributes()
                            .and_then(|a| a.get(FORMAT_ATTRIBUTE))
                            .and_then(|v| v.string_value()),
                    ),
                }
            })
            .collect())
    }

    async fn delete_batch(
        &self,
        room: RoomId,
        receipts: &[String],
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        super::check_batch(receipts.len())?;
        let url = self.url(room).await?;
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .map_err(|err| QueueError::Invalid(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let req = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries));
        let out = self.on_queue(room, self.call_timeout, req.send()).await?;
        let ok = out
            .successful()
            .iter()
            .filter_map(|s| Some((s.id().parse::<usize>().ok()?, ())));
        Ok(by_entry(receipts.len(), ok, out.failed()))
    }

    async fn depth(&self, room: RoomId) -> Result<QueueDepth, QueueError> {
        let url = self.url(room).await?;
        let req = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        let out = self.on_queue(room, self.call_timeout, req.send()).await?;
        let count = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
