//! Queues with an owner: a tag names who created (or adopted) a queue, and only that owner
//! changes or deletes it. Queue names are account-wide, so two ChatRoomSets configured with the
//! same prefix would otherwise share, repair and delete each other's queues.

use super::{Ensured, QueueAttributes, QueueError, Queues, Tags};
use crate::rooms::RoomId;

/// The tag naming a queue's owner.
pub const OWNER_TAG: &str = "chatflow.dev/owner";

fn owner_tags(owner: &str) -> Tags {
    Tags::from([(OWNER_TAG.to_owned(), owner.to_owned())])
}

/// Ensures the room's queue for `owner`: creates it tagged, adopts one without an owner tag when
/// `adopt_untagged` says so, and sets drifted attributes back. A queue tagged for another owner
/// is left untouched ([`QueueError::OwnedByOther`]), and so is an untagged one otherwise
/// ([`QueueError::Untagged`]): someone else's queue with a matching name is never taken over by
/// default.
pub async fn ensure_owned(
    queues: &dyn Queues,
    room: RoomId,
    attrs: &QueueAttributes,
    owner: &str,
    adopt_untagged: bool,
) -> Result<Ensured, QueueError> {
    let mut created = false;
    let tags = match queues.queue_tags(room).await {
        Ok(tags) => tags,
        Err(QueueError::NotFound { .. }) => {
            match queues
                .create_queue_tagged(room, attrs, &owner_tags(owner))
                .await
            {
                Ok(()) => created = true,
                Err(QueueError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            // Created now, or by someone else in between: the tags tell which.
            queues.queue_tags(room).await?
        }
        Err(e) => return Err(e),
    };
    match tags.get(OWNER_TAG) {
        Some(o) if o == owner => {}
        Some(other) => {
            return Err(QueueError::OwnedByOther {
                room,
                owner: other.clone(),
            });
        }
        // Just created: a read right after may not show the tags yet.
        None if adopt_untagged || created => queues.tag_queue(room, &owner_tags(owner)).await?,
        None => return Err(QueueError::Untagged { room }),
    }
    if created && tags.get(OWNER_TAG).map(String::as_str) == Some(owner) {
        // A create succeeds only when the queue has exactly these attributes.
        return Ok(Ensured::Ready);
    }
    let drifted = attrs.drift(&queues.queue_attributes(room).await?);
    if drifted.is_empty() {
        return Ok(Ensured::Ready);
    }
    let keys: Vec<String> = drifted.keys().cloned().collect();
    queues.set_queue_attributes(room, drifted).await?;
    Ok(Ensured::Repaired(keys))
}

/// What [`delete_owned`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The queue was the owner's and is gone.
    Deleted,
    /// There was no queue.
    Absent,
    /// The queue is not the owner's (another owner, or none): kept.
    Kept {
        /// The owner its tag names, if any.
        owner: Option<String>,
    },
}

/// Deletes the room's queue if `owner` owns it.
pub async fn delete_owned(
    queues: &dyn Queues,
    room: RoomId,
    owner: &str,
) -> Result<Deletion, QueueError> {
    let tags = match queues.queue_tags(room).await {
        Ok(tags) => tags,
        Err(QueueError::NotFound { .. }) => return Ok(Deletion::Absent),
        Err(e) => return Err(e),
    };
    match tags.get(OWNER_TAG) {
        Some(o) if o == owner => {
            queues.delete_queue(room).await?;
            Ok(Deletion::Deleted)
        }
        other => Ok(Deletion::Kept {
            owner: other.cloned(),
        }),
    }
}
