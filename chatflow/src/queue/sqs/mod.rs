//! Amazon SQS (or LocalStack) behind the queue interface.

mod client;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use client::{by_entry, sdk_attrs};

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

#[async_trait]
impl Queues for SqsQueues {
    fn naming(&self) -> &QueueNaming {
        &self.naming
    }

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
            .message_system_attribute_names(MessageSystemAttributeName::SequenceNumber)
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
                    sequence: attr(MessageSystemAttributeName::SequenceNumber)
                        .and_then(|s| s.parse().ok()),
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
