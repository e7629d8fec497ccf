//! The job queue seam: what the front end, the workers and the controller need from SQS or the
//! embedded SQLite queue. At-least-once delivery: a received message stays hidden for a
//! visibility timeout and comes back unless it is deleted, so a crashed receiver loses nothing.
//!
//! [`admin`] adds what operators need on top: peek, purge, drop one message, redrive.

pub mod admin;
mod doorbell;
pub mod local;
#[cfg(feature = "aws")]
pub mod sqs;

use std::time::Duration;

use async_trait::async_trait;

/// The result of a queue operation.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// One message handed to a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue's id for the message, stable across receives.
    pub message_id: String,
    /// The body as sent (JSON for every message Skyburst sends).
    pub body: String,
    /// Proof of this receive; needed to delete the message or extend its visibility.
    pub receipt: Receipt,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

/// A receipt handle: names one receive of one message. A later receive of the same message
/// issues a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// Messages in a queue, as SQS reports them (`ApproximateNumberOfMessages*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and neither deleted nor returned yet.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl QueueDepth {
    /// Work waiting or in progress (delayed excluded): what scaling policies count.
    pub fn backlog(&self) -> u64 {
        self.visible + self.in_flight
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached or read; retry later.
    #[error("queue {queue} is unavailable: {cause}; check that it exists and is reachable, then retry")]
    Unavailable {
        /// Queue name.
        queue: String,
        /// What failed underneath (SQLite, the SDK) or what the backend said.
        #[source]
        cause: crate::error::Cause,
    },
    /// No queue of that name (SQS): it has to be created.
    #[error("queue {queue} does not exist; create it with `skyburst aws bootstrap`")]
    Missing {
        /// Queue name.
        queue: String,
    },
    /// The receipt no longer names the latest receive (the visibility timeout passed and
    /// someone else received the message); the holder has lost the message.
    #[error("receipt for a message on {queue} is stale: its visibility timeout passed and it was received again")]
    StaleReceipt {
        /// Queue name.
        queue: String,
    },
}

impl QueueError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Unavailable { .. })
    }
}

/// A named message queue with SQS semantics; its administration ([`admin::QueueAdmin`]: peek,
/// purge, drop, redrive) comes with it.
#[async_trait]
pub trait Queue: admin::QueueAdmin + Send + Sync {
    /// The queue's name, for logs and errors.
    fn name(&self) -> &str;

    /// Appends a message, visible after `delay`; returns its id.
    async fn send(&self, body: &str, delay: Duration) -> Result<String>;

    /// Waits up to `wait` for at least one visible message, then takes up to `max` of them and
    /// hides them for `visibility`.
    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Delivery>>;

    /// Removes a received message for good. Deleting a message that is already gone succeeds.
    async fn delete(&self, receipt: &Receipt) -> Result<()>;

    /// Keeps a received message hidden for `timeout` from now (long batches).
    async fn extend_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<()>;

    /// Current counts.
    async fn depth(&self) -> Result<QueueDepth>;

    /// Deletes messages sent more than `retention` ago, at most `limit`; returns how many. SQS
    /// does this itself (the queue's `MessageRetentionPeriod`), so there it deletes nothing.
    async fn expire(&self, retention: Duration, limit: u32) -> Result<u64> {
        let _ = (retention, limit);
        Ok(0)
    }
}
