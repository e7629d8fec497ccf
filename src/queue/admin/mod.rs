//! Queue administration for operators: look at messages without taking them, move them from a
//! dead-letter queue back to the queue they came from, drop one, or empty a queue.
//!
//! Every [`Queue`] is a [`QueueAdmin`] (a supertrait), so the front end's queues answer these
//! calls whichever backend holds them.
//!
//! # Layout
//! - this file: the trait, what its calls answer, and the backend-neutral way of moving or
//!   dropping messages by receiving them ([`move_by_receiving`], [`drop_by_receiving`]).
//! - [`local`]: the embedded queue: rows read, moved and deleted in place.
//! - `sqs` (`--features aws`): `ReceiveMessage` with a visibility timeout of 0 to peek,
//!   `StartMessageMoveTask` to redrive, `PurgeQueue`.

mod local;
#[cfg(feature = "aws")]
mod sqs;

use std::any::Any;
use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, Queue, QueueError, Receipt};

/// The result of an administration call.
pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// A message as a peek saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The queue's id for the message.
    pub message_id: String,
    /// The body as sent.
    pub body: String,
    /// Receives so far (SQS: including the peeks, which are receives there).
    pub receive_count: u32,
    /// When it was sent, ms since the Unix epoch, where the backend says.
    pub sent_at_ms: Option<i64>,
}

/// How messages were moved back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedriveMethod {
    /// The embedded queue moved its rows to the other queue in one transaction.
    MoveRows,
    /// SQS `StartMessageMoveTask`: SQS moves them in the background.
    MoveTask,
    /// Each message received, sent to the other queue, then deleted (a crash in between
    /// leaves a copy in both, never none).
    ReceiveSendDelete,
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// Messages moved; for [`RedriveMethod::MoveTask`], the messages visible when the task
    /// started (SQS moves them in the background).
    pub moved: u64,
    /// How.
    pub method: RedriveMethod,
    /// Anything the operator should know (the SQS task's handle, why a fallback was used).
    pub note: Option<String>,
}

/// Why an administration call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The queue failed as any call to it can.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// SQS takes one `PurgeQueue` per queue every 60 seconds.
    #[error(
        "queue {queue} was purged less than 60 s ago, and SQS allows one purge per queue every 60 s: \
         try again in a minute"
    )]
    PurgeTooSoon {
        /// Queue name.
        queue: String,
        /// What SQS said.
        #[source]
        cause: crate::error::Cause,
    },
}

/// What an operator may do to a queue. Every [`Queue`] implements it.
#[async_trait]
pub trait QueueAdmin: Send + Sync {
    /// Up to `max` messages, oldest first, without receiving them: the embedded queue reads its
    /// rows and changes nothing; SQS receives with a visibility timeout of 0, so it sees only
    /// visible messages (not those in flight) and each peek counts as a receive.
    async fn peek(&self, max: usize) -> Result<Vec<Peeked>>;

    /// Removes every message, visible, in flight or delayed; returns how many there were (on
    /// SQS the approximate count just before).
    async fn purge(&self) -> Result<u64>;

    /// Removes the message `id`; `false` if the queue holds no such message (SQS: none visible).
    async fn drop_message(&self, id: &str) -> Result<bool>;

    /// Moves every message, or only the message `id`, to `target` with its receive count reset
    /// (a dead-letter queue's messages back to the request queue).
    async fn redrive_to(&self, target: &dyn Queue, id: Option<&str>) -> Result<Redriven>;

    /// This queue as [`Any`], so a backend can tell whether a target is one of its own.
    fn as_any(&self) -> &dyn Any;
}

/// How long a scan hides each message it receives: longer than any scan of a queue an operator
/// looks at by hand, so none is seen twice.
const SCAN_VISIBILITY: Duration = Duration::from_secs(120);
/// A scan's receive waits this long for more (SQS: a long poll asks every server, a short one
/// a sample).
const SCAN_WAIT: Duration = Duration::from_secs(1);
/// Messages per receive (SQS's largest batch).
const SCAN_BATCH: usize = 10;

/// Moves the messages of `from` (every one, or only `only`) to `target` by receiving each, sending
/// its body to `target` and deleting it: for any two queues. Messages passed over are made
/// visible again at the end. Returns how many moved.
pub async fn move_by_receiving(from: &dyn Queue, target: &dyn Queue, only: Option<&str>) -> Result<u64> {
    scan(from, only, Some(target)).await
}

/// Deletes the message `id` of `queue` by receiving messages until it comes; `false` if it did
/// not. Messages passed over are made visible again.
pub async fn drop_by_receiving(queue: &dyn Queue, id: &str) -> Result<bool> {
    Ok(scan(queue, Some(id), None).await? > 0)
}

/// Receives the messages of `queue` until none is left or `only` was found, sends each chosen
/// one to `target` (if any) and deletes it; the others are released (visibility 0) at the end,
/// even after an error. Returns how many were chosen.
async fn scan(queue: &dyn Queue, only: Option<&str>, target: Option<&dyn Queue>) -> Result<u64> {
    let mut passed: Vec<Receipt> = Vec::new();
    let mut chosen = 0;
    let outcome = async {
        let mut seen = HashSet::new();
        loop {
            let batch = queue.receive(SCAN_BATCH, SCAN_WAIT, SCAN_VISIBILITY).await?;
            // Nothing new: the queue is done (or hands back what this scan already holds).
            if !batch.iter().any(|d| seen.insert(d.message_id.clone())) {
                return Ok::<_, QueueError>(());
            }
            let mut found = false;
            for delivery in batch {
                if found || only.is_some_and(|id| id != delivery.message_id) {
                    passed.push(delivery.receipt);
                    continue;
                }
                take(queue, &delivery, target).await?;
                chosen += 1;
                found = only.is_some();
            }
            if found {
                return Ok(());
            }
        }
    }
    .await;
    release(queue, &passed).await;
    outcome?;
    Ok(chosen)
}

/// Sends `delivery` to `target` (if any), then deletes it from `queue`.
async fn take(queue: &dyn Queue, delivery: &Delivery, target: Option<&dyn Queue>) -> Result<(), QueueError> {
    if let Some(target) = target {
        target.send(&delivery.body, Duration::ZERO).await?;
    }
    queue.delete(&delivery.receipt).await
}

/// Makes received messages visible again at once; a message gone meanwhile is skipped.
async fn release(queue: &dyn Queue, receipts: &[Receipt]) {
    for receipt in receipts {
        match queue.extend_visibility(receipt, Duration::ZERO).await {
            Ok(()) | Err(QueueError::StaleReceipt { .. }) => {}
            Err(e) => tracing::warn!(
                queue = %queue.name(), error = %e,
                "a passed-over message stays hidden until its visibility timeout"
            ),
        }
    }
}
