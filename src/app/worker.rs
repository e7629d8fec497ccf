//! A worker's parts: its queues and store, its detector thread and its heartbeats.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::backends::{backends_for, Backends};
use crate::config::Config;
use crate::worker::{DetectorThread, Heartbeats, ReplyQueues, Worker, WorkerSettings};

/// A worker with its detector loaded.
pub async fn worker(config: &Config, instance: String) -> anyhow::Result<Worker> {
    let Backends { queues, store, .. } = backends_for(config, "worker", Some(&instance)).await?;
    let settings = WorkerSettings {
        instance,
        pool: config.worker.pool.clone(),
        jobs_per_receive: config.worker.jobs_per_receive,
        batch_size: config.detector.batch_size,
        long_poll: Duration::from_secs(config.queue.long_poll_seconds),
        visibility: Duration::from_secs(config.queue.visibility_timeout_seconds),
        output_bucket: config.store.output_bucket.clone(),
        max_attempts: config.queue.max_attempts,
        deadline: Duration::from_secs_f64(config.worker.job_deadline_seconds),
    };
    let detector = DetectorThread::spawn(Arc::new(super::detector(config)?), config.detector.threads)
        .context("cannot start the detector thread")?;
    let heartbeats = Arc::new(Heartbeats::new(
        store.clone(),
        config.store.output_bucket.clone(),
        &settings.instance,
        &settings.pool,
        Duration::from_secs_f64(config.worker.heartbeat_seconds),
    ));
    let queues_used = (queues.requests, queues.dead_letters);
    Ok(Worker::new(settings, queues_used, ReplyQueues::new(queues.open), store, detector, heartbeats))
}
