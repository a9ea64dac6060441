//! SQS errors in the queue layer's terms, from the SDK's typed, per-operation errors: a missing
//! queue, a name taken with other attributes, throttling, or anything else the service said.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchError;
use aws_sdk_sqs::operation::delete_queue::DeleteQueueError;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::operation::list_queue_tags::ListQueueTagsError;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
use aws_sdk_sqs::operation::set_queue_attributes::SetQueueAttributesError;
use aws_sdk_sqs::operation::tag_queue::TagQueueError;

use super::QueueError;

/// What the queue layer needs to know of a service error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The queue does not exist.
    Missing,
    /// CreateQueue met a queue of that name with other attributes.
    NameTaken,
    /// The service asked the caller to slow down.
    Throttled,
    /// Anything else.
    Other,
}

/// An operation's typed error, classified.
pub trait Classify: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static {
    /// Which kind of failure this is.
    fn kind(&self) -> Kind;
}

fn kind(missing: bool, throttled: bool) -> Kind {
    match (missing, throttled) {
        (true, _) => Kind::Missing,
        (_, true) => Kind::Throttled,
        _ => Kind::Other,
    }
}

impl Classify for CreateQueueError {
    fn kind(&self) -> Kind {
        if self.is_queue_name_exists() {
            Kind::NameTaken
        } else {
            kind(false, self.is_request_throttled())
        }
    }
}

/// Operations on an existing queue: missing or throttled, else other.
macro_rules! on_queue {
    ($($error:ty),* $(,)?) => {
        $(impl Classify for $error {
            fn kind(&self) -> Kind {
                kind(self.is_queue_does_not_exist(), self.is_request_throttled())
            }
        })*
    };
}

on_queue!(
    GetQueueUrlError,
    GetQueueAttributesError,
    SetQueueAttributesError,
    DeleteQueueError,
    SendMessageBatchError,
    ReceiveMessageError,
    DeleteMessageBatchError,
    ListQueueTagsError,
    TagQueueError,
);

/// The queue layer's error for a failed call on `queue`.
pub fn classify<E: Classify>(queue: &str, err: SdkError<E, HttpResponse>) -> QueueError {
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("Unknown").to_owned();
            let message = se.err().message().unwrap_or_default().to_owned();
            match se.err().kind() {
                Kind::Missing => QueueError::NotFound {
                    queue: queue.into(),
                },
                Kind::NameTaken => QueueError::AlreadyExists {
                    queue: queue.into(),
                    message,
                },
                kind => QueueError::Service {
                    code,
                    message,
                    retryable: status >= 500 || kind == Kind::Throttled,
                },
            }
        }
        _ => QueueError::Transport(DisplayErrorContext(&err).to_string()),
    }
}
