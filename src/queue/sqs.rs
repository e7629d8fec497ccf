//! Queues on Amazon SQS: long polling, visibility timeout and its extension, depth from the
//! `ApproximateNumberOfMessages*` attributes, and a redrive policy to a dead-letter queue (set by
//! `skyburst aws bootstrap`). A queue's URL is looked up on first use and kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use skyburst_providers::aws::AwsSession;
use skyburst_providers::error_chain;
use tokio::sync::OnceCell;

use super::{Delivery, Queue, QueueDepth, QueueError, Receipt, Result};

/// SQS's longest long poll and largest receive.
const MAX_WAIT: Duration = Duration::from_secs(20);
pub(super) const MAX_BATCH: usize = 10;

/// The SQS client every queue of a process shares.
#[derive(Clone, Debug)]
pub struct SqsQueues {
    client: aws_sdk_sqs::Client,
    /// The session's attempt timeout: a long poll may take its wait on top.
    pub(super) attempt_timeout: Duration,
}

impl SqsQueues {
    /// A client on `session`'s region, credentials, endpoint and timeouts.
    pub fn new(session: &AwsSession) -> Self {
        let attempt_timeout =
            session.sdk.timeout_config().and_then(|t| t.operation_attempt_timeout()).unwrap_or(Duration::from_secs(4));
        let mut config = aws_sdk_sqs::config::Builder::from(&session.sdk);
        if let Some(log) = &session.call_log {
            config = config.interceptor(log.clone());
        }
        Self { client: aws_sdk_sqs::Client::from_conf(config.build()), attempt_timeout }
    }

    /// The queue `name`; its URL is looked up on first use.
    pub fn queue(&self, name: &str) -> SqsQueue {
        SqsQueue { queues: self.clone(), name: name.to_string(), url: Arc::new(OnceCell::new()) }
    }

    /// Creates `name` if it does not exist (idempotent: same attributes, same queue) and
    /// returns it.
    pub async fn create(&self, name: &str, attributes: HashMap<QueueAttributeName, String>) -> Result<SqsQueue> {
        let answer = self
            .client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| unavailable(name, e))?;
        let queue = self.queue(name);
        if let Some(url) = answer.queue_url() {
            let _ = queue.url.set(url.to_string());
        }
        Ok(queue)
    }

    /// Creates `name` with `attributes`, or sets them on the queue of that name that exists
    /// with others (`skyburst aws bootstrap` after a config change). True if it was created.
    pub async fn ensure(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<(SqsQueue, bool)> {
        let queue = self.queue(name);
        match queue.url().await {
            Ok(_) => {}
            Err(QueueError::Missing { .. }) => return Ok((self.create(name, attributes).await?, true)),
            Err(e) => return Err(e),
        }
        self.client
            .set_queue_attributes()
            .queue_url(queue.url().await?)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| unavailable(name, e))?;
        Ok((queue, false))
    }

    /// The queue's ARN (for a redrive policy).
    pub async fn arn(&self, queue: &SqsQueue) -> Result<String> {
        let url = queue.url().await?;
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| unavailable(&queue.name, e))?;
        answer
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| QueueError::Unavailable { queue: queue.name.clone(), cause: "SQS gave no QueueArn".into() })
    }
}

/// One SQS queue.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    pub(super) queues: SqsQueues,
    pub(super) name: String,
    url: Arc<OnceCell<String>>,
}

impl SqsQueue {
    pub(super) fn client(&self) -> &aws_sdk_sqs::Client {
        &self.queues.client
    }

    /// Timeouts for a receive that may legitimately take its whole long-poll `wait`: the
    /// session's attempt timeout on top of it, for that call only.
    pub(super) fn long_poll_timeouts(&self, wait: Duration) -> aws_sdk_sqs::config::timeout::TimeoutConfig {
        let attempt = wait + self.queues.attempt_timeout;
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(attempt)
            .operation_timeout(2 * attempt)
            .build()
    }

    /// The queue's URL, looked up once.
    pub async fn url(&self) -> Result<&str> {
        let url = self
            .url
            .get_or_try_init(|| async {
                let answer = self.client().get_queue_url().queue_name(&self.name).send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_queue_does_not_exist()) {
                        QueueError::Missing { queue: self.name.clone() }
                    } else {
                        unavailable(&self.name, e)
                    }
                })?;
                answer.queue_url().map(str::to_string).ok_or_else(|| QueueError::Unavailable {
                    queue: self.name.clone(),
                    cause: "SQS answered GetQueueUrl without a URL".into(),
                })
            })
            .await?;
        Ok(url)
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &str, delay: Duration) -> Result<String> {
        let answer = self
            .client()
            .send_message()
            .queue_url(self.url().await?)
            .message_body(body)
            .delay_seconds(delay.as_secs().min(900) as i32)
            .send()
            .await
            .map_err(|e| unavailable(&self.name, e))?;
        Ok(answer.message_id().unwrap_or_default().to_string())
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Delivery>> {
        let wait = wait.min(MAX_WAIT);
        let timeouts = self.long_poll_timeouts(wait);
        let answer = self
            .client()
            .receive_message()
            .queue_url(self.url().await?)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(visibility.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| unavailable(&self.name, e))?;
        Ok(answer
            .messages()
            .iter()
            .filter_map(|m| {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Delivery {
                    message_id: m.message_id()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receipt: Receipt(m.receipt_handle()?.to_string()),
                    receive_count: count,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &Receipt) -> Result<()> {
        match self.client().delete_message().queue_url(self.url().await?).receipt_handle(&receipt.0).send().await {
            Ok(_) => Ok(()),
            // Gone already (deleted, or moved to the dead-letter queue): nothing left to do.
            Err(e) if stale(&e) => Ok(()),
            Err(e) => Err(unavailable(&self.name, e)),
        }
    }

    async fn extend_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        let answer = self
            .client()
            .change_message_visibility()
            .queue_url(self.url().await?)
            .receipt_handle(&receipt.0)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(e) if stale(&e) => Err(QueueError::StaleReceipt { queue: self.name.clone() }),
            Err(e) => Err(unavailable(&self.name, e)),
        }
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let answer = self
            .client()
            .get_queue_attributes()
            .queue_url(self.url().await?)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| unavailable(&self.name, e))?;
        let count = |name: QueueAttributeName| {
            answer.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

/// The receipt no longer names a message in flight. SQS says so with a code of its own, or with
/// `InvalidParameterValue` about the receipt handle (an expired one).
fn stale<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    let Some(service) = e.as_service_error() else { return false };
    let (code, message) = (service.code().unwrap_or_default(), service.message().unwrap_or_default());
    code.contains("ReceiptHandleIsInvalid")
        || code.contains("MessageNotInflight")
        || (code.contains("InvalidParameterValue") && message.contains("ReceiptHandle"))
}

/// A failed SQS call, kept as the cause; the message is the service's code and words.
pub(super) fn unavailable<E, R>(queue: &str, e: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let message = match e.as_service_error() {
        Some(s) => format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or_default()),
        None => error_chain(&e),
    };
    QueueError::Unavailable { queue: queue.to_string(), cause: crate::error::explained(message, e) }
}
