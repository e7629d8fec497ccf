//! [`QueueAdmin`] for SQS. A peek is a `ReceiveMessage` with a visibility timeout of 0: it sees
//! only visible messages (never those in flight), at most 10 a call, and counts as a receive.
//! A redrive of a whole queue is a `StartMessageMoveTask` (SQS moves the messages in the
//! background); one message, or an endpoint without move tasks (moto), is moved by receive,
//! send and delete. A purge is `PurgeQueue`, which SQS takes once per queue every 60 s.

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::start_message_move_task::StartMessageMoveTaskError;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName as Attribute};

use super::{drop_by_receiving, move_by_receiving, AdminError, Peeked, QueueAdmin, RedriveMethod, Redriven, Result};
use crate::queue::sqs::{unavailable, SqsQueue, MAX_BATCH};
use crate::queue::{Queue, QueueError};

/// A peek's long poll: enough for SQS to ask every server, short on an empty queue.
const PEEK_WAIT: Duration = Duration::from_secs(1);

#[async_trait]
impl QueueAdmin for SqsQueue {
    async fn peek(&self, max: usize) -> Result<Vec<Peeked>> {
        let mut found: Vec<Peeked> = Vec::new();
        // Each look may return messages already seen (they stay visible): stop when one adds none.
        for _ in 0..max.div_ceil(MAX_BATCH) + 2 {
            let before = found.len();
            for peeked in self.look(max - before).await? {
                if found.len() < max && !found.iter().any(|f| f.message_id == peeked.message_id) {
                    found.push(peeked);
                }
            }
            if found.len() == before || found.len() >= max {
                break;
            }
        }
        found.sort_by_key(|p| p.sent_at_ms);
        Ok(found)
    }

    async fn purge(&self) -> Result<u64> {
        let depth = self.depth().await?;
        match self.client().purge_queue().queue_url(self.url().await?).send().await {
            Ok(_) => Ok(depth.visible + depth.in_flight + depth.delayed),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_purge_queue_in_progress()) => {
                let message = skyburst_providers::error_chain(&e);
                Err(AdminError::PurgeTooSoon { queue: self.name.clone(), cause: crate::error::explained(message, e) })
            }
            Err(e) => Err(unavailable(&self.name, e).into()),
        }
    }

    async fn drop_message(&self, id: &str) -> Result<bool> {
        drop_by_receiving(self, id).await
    }

    async fn redrive_to(&self, target: &dyn Queue, id: Option<&str>) -> Result<Redriven> {
        let mut note = None;
        if let (None, Some(target)) = (id, target.as_any().downcast_ref::<SqsQueue>()) {
            match self.start_move_task(target).await {
                Ok(redriven) => return Ok(redriven),
                Err(e) => {
                    tracing::warn!(queue = %self.name, error = %e, "StartMessageMoveTask failed; moving by receive, send and delete");
                    // The cause alone: the queue answered, only the move task did not.
                    let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
                    note = Some(format!(
                        "StartMessageMoveTask failed ({reason}); moved by receive, send and delete instead"
                    ));
                }
            }
        }
        let moved = move_by_receiving(self, target, id).await?;
        Ok(Redriven { moved, method: RedriveMethod::ReceiveSendDelete, note })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl SqsQueue {
    /// One `ReceiveMessage` of up to `max` (1..=10) messages with a visibility timeout of 0.
    async fn look(&self, max: usize) -> Result<Vec<Peeked>> {
        let timeouts = self.long_poll_timeouts(PEEK_WAIT);
        let answer = self
            .client()
            .receive_message()
            .queue_url(self.url().await?)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(PEEK_WAIT.as_secs() as i32)
            .visibility_timeout(0)
            .message_system_attribute_names(Attribute::ApproximateReceiveCount)
            .message_system_attribute_names(Attribute::SentTimestamp)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| unavailable(&self.name, e))?;
        Ok(answer.messages().iter().filter_map(peeked).collect())
    }

    /// Starts SQS's own move of every message to `target`; one attempt, so an endpoint without
    /// move tasks falls back at once.
    async fn start_move_task(&self, target: &SqsQueue) -> Result<Redriven> {
        let source = self.queues.arn(self).await?;
        let destination = self.queues.arn(target).await?;
        let visible = self.depth().await?.visible;
        let answer = self
            .client()
            .start_message_move_task()
            .source_arn(source)
            .destination_arn(destination)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().retry_config(RetryConfig::standard().with_max_attempts(1)),
            )
            .send()
            .await
            .map_err(|e| move_task_failed(&self.name, e))?;
        let handle = answer.task_handle().unwrap_or("without a handle");
        let note = format!(
            "SQS moves the messages in the background (task {handle}); the count is what was visible when it started"
        );
        Ok(Redriven { moved: visible, method: RedriveMethod::MoveTask, note: Some(note) })
    }
}

/// A failed `StartMessageMoveTask`. An answer without an error code (moto's HTML 500) most likely
/// means the endpoint has no move tasks, and says so.
fn move_task_failed(queue: &str, e: SdkError<StartMessageMoveTaskError, HttpResponse>) -> QueueError {
    let uncoded = e.as_service_error().is_some_and(|s| s.code().is_none());
    match (uncoded, e.raw_response().map(|r| r.status().as_u16())) {
        (true, Some(status)) => {
            let message = format!("HTTP {status} without an error code: the endpoint may not implement it");
            QueueError::Unavailable { queue: queue.to_string(), cause: crate::error::explained(message, e) }
        }
        _ => unavailable(queue, e),
    }
}

/// A received message as a peek reports it.
fn peeked(message: &Message) -> Option<Peeked> {
    let attribute = |name: &Attribute| message.attributes().and_then(|a| a.get(name));
    Some(Peeked {
        message_id: message.message_id()?.to_string(),
        body: message.body().unwrap_or_default().to_string(),
        receive_count: attribute(&Attribute::ApproximateReceiveCount).and_then(|c| c.parse().ok()).unwrap_or(0),
        sent_at_ms: attribute(&Attribute::SentTimestamp).and_then(|t| t.parse().ok()),
    })
}
