//! The queues and the object store a process uses: the embedded ones (SQLite, files) or the
//! AWS ones (SQS, S3), as `queue.backend` and `store.backend` say.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::aws;
use crate::config::{Config, QueueBackend, StoreBackend};
use crate::queue::local::LocalQueues;
use crate::queue::Queue;
use crate::store::local::LocalStore;
use crate::store::ObjectStore;
use crate::worker::reply::OpenQueue;

/// The queues a process uses.
pub struct Queues {
    /// The shared request queue, with its dead-letter redrive.
    pub requests: Arc<dyn Queue>,
    /// `<requests>-dlq`.
    pub dead_letters: Arc<dyn Queue>,
    /// Opens any other queue (response queues) by name.
    pub open: OpenQueue,
}

/// What a process reads and writes: its queues and its object store.
pub struct Backends {
    /// The queues `queue.backend` names.
    pub queues: Queues,
    /// The store `store.backend` names.
    pub store: Arc<dyn ObjectStore>,
    /// The AWS session, when the config uses AWS at all.
    pub aws: Option<aws::Session>,
}

/// Opens the queues and the store the config names. `role` names the process in the AWS call
/// log (`serve`, `worker`, `controller`, ...). Checks that the request queue exists, so a
/// wrong endpoint or a missing bootstrap is reported at start-up.
pub async fn backends(config: &Config, role: &str) -> anyhow::Result<Backends> {
    backends_for(config, role, None).await
}

/// As [`backends`], for the worker of `instance`: with `credentials.token` set (a Nova
/// worker), its AWS credentials are vended by the controller.
pub async fn backends_for(config: &Config, role: &str, instance: Option<&str>) -> anyhow::Result<Backends> {
    let aws = aws::session_for(config, role, instance).await?;
    let queues = match config.queue.backend {
        QueueBackend::Embedded => embedded_queues(config)?,
        QueueBackend::Sqs => aws::sqs_queues(config, aws.as_ref()).await?,
    };
    let store = open_store(config, aws.as_ref())?;
    Ok(Backends { queues, store, aws })
}

/// The store alone (commands that need no queue).
pub async fn store(config: &Config, role: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let aws = aws::session_for(config, role, None).await?;
    open_store(config, aws.as_ref())
}

fn open_store(config: &Config, aws: Option<&aws::Session>) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match config.store.backend {
        StoreBackend::Embedded => {
            Arc::new(LocalStore::new(config.embedded.data_dir.join("store")).durable(&config.store.input_bucket))
        }
        StoreBackend::S3 => aws::s3_store(aws)?,
    })
}

/// The embedded queues, all in `<data_dir>/queue.db`.
fn embedded_queues(config: &Config) -> anyhow::Result<Queues> {
    let path = config.embedded.data_dir.join("queue.db");
    let q = &config.queue;
    let db = LocalQueues::open(&path, Duration::from_millis(q.poll_interval_ms))
        .with_context(|| format!("cannot open the embedded queue at {}", path.display()))?;
    let dlq_name = format!("{}-dlq", q.requests);
    let requests = Arc::new(db.durable_queue(&q.requests, Some((&dlq_name, q.max_receives))));
    let dead_letters = Arc::new(db.queue(&dlq_name, None));
    let open: OpenQueue = Arc::new(move |name: &str| Arc::new(db.queue(name, None)) as Arc<dyn Queue>);
    Ok(Queues { requests, dead_letters, open })
}

/// The name of the response queue of front end `instance_id`: `<responses_prefix>-<instance_id>`.
pub fn response_queue_name(config: &Config, instance_id: &str) -> String {
    format!("{}-{instance_id}", config.queue.responses_prefix)
}

/// The response queue of front end `instance_id` ([`response_queue_name`]); on SQS it is
/// created if missing (each front-end instance owns one).
pub async fn response_queue(config: &Config, backends: &Backends, instance_id: &str) -> anyhow::Result<Arc<dyn Queue>> {
    let name = response_queue_name(config, instance_id);
    match config.queue.backend {
        QueueBackend::Sqs => aws::create_response_queue(config, backends.aws.as_ref(), &name).await,
        QueueBackend::Embedded => Ok((backends.queues.open)(&name)),
    }
}
