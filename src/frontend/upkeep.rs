//! Upkeep: what keeps a deployment true and bounded for a month without a person. A background
//! task of every front end, off the request path, in small batches:
//!
//! - **Reconciler**: a job still unfinished a minute after it was queued is looked at. If its
//!   message was never sent (the front end stopped between the index and the queue) it is
//!   queued now, or failed `lost` when its image is gone too; if its answer is in the output
//!   bucket but not in the index (the answer went to a response queue nobody reads any more),
//!   the answer is applied.
//! - **Retention**: jobs that finished more than `store.retention_days` ago are deleted with
//!   their image and result; idempotency keys after a day; the embedded queues' messages after
//!   `queue.retention_days` (dead letters after `queue.dead_letter_retention_days`); readiness
//!   stamps and heartbeats nobody wrote for a day. Once an hour the store is also swept for
//!   those records, and (the embedded store) for images and results older than the retention
//!   that no index row names: a sweep lists its prefixes, so it is not run every pass.
//!
//! Several front ends may run it at once: every step is idempotent.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use uuid::Uuid;

use super::AppState;
use crate::index::StaleJob;
use crate::job::{self, reason, JobRequest, JobResponse, Outcome};
use crate::store::purge::{purge, PurgeFilter};
use crate::store::StoreError;

/// What is kept, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Finished jobs: index rows, images and results (`store.retention_days`).
    pub jobs: Duration,
    /// Messages of the request and response queues (embedded only; SQS keeps its own).
    pub messages: Duration,
    /// Messages of the dead-letter queue (embedded only).
    pub dead_letters: Duration,
    /// Whether to sweep the store for objects older than `jobs` (the embedded store; S3's
    /// lifecycle rules do it there).
    pub sweep_store: bool,
}

/// An unfinished job is looked at once it is this old: the index-to-queue gap is milliseconds.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// Rows, objects or messages handled per batch; each batch is one short transaction.
const BATCH: u32 = 500;
/// Unfinished jobs looked at per pass.
const STALE_BATCH: u32 = 100;
/// Control records (readiness stamps, heartbeats) nobody wrote for this long are removed.
const CONTROL_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Front ends' readiness stamps, one per front end that ever ran.
const READINESS: &str = "control/readyz/";
/// How often the store is swept (listed) for what the index does not name.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How often upkeep runs: every minute, or a quarter of the retention when that is shorter
/// (a retention of minutes, in tests and soaks), but not more than every 5 s.
pub fn interval(retention: &Retention) -> Duration {
    (retention.jobs / 4).clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Runs until `shutdown` turns true; the first pass comes a few seconds after start.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let every = interval(&state.settings.retention);
    let mut wait = Duration::from_secs(5).min(every);
    let mut swept_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = every;
        let reconciled = reconcile(&state).await;
        let sweep = swept_at.is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
        if sweep {
            swept_at = Some(tokio::time::Instant::now());
        }
        let expired = retain(&state, sweep).await;
        if reconciled + expired > 0 {
            tracing::info!(reconciled, expired, "upkeep");
        }
    }
}

/// Looks at unfinished jobs older than [`STALE_AFTER`]; returns how many it moved on.
pub async fn reconcile(state: &AppState) -> u64 {
    let before = job::now_ms() - STALE_AFTER.as_millis() as i64;
    let stale = match state.index.stale(before, STALE_BATCH).await {
        Ok(stale) => stale,
        Err(e) => {
            tracing::warn!(error = %e, "upkeep: cannot read unfinished jobs");
            return 0;
        }
    };
    let mut moved = 0;
    for job in stale {
        let job_id = job.job_id;
        let outcome = match answer_in_store(state, job_id).await {
            Ok(false) if !job.sent => requeue(state, &job).await,
            other => other,
        };
        match outcome {
            Ok(true) => moved += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(%job_id, error = %e, "upkeep: cannot reconcile a job; trying again later"),
        }
    }
    moved
}

/// Applies the job's answer from the output bucket, if a worker left one there.
async fn answer_in_store(state: &AppState, job_id: Uuid) -> anyhow::Result<bool> {
    let bytes = match state.store.get(&state.settings.output_bucket, &job::result_key(job_id)).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let response: JobResponse = serde_json::from_slice(&bytes)?;
    Ok(super::listener::record(state, response).await?)
}

/// Queues a job whose message was never sent, or fails it when its image is gone.
async fn requeue(state: &AppState, job: &StaleJob) -> anyhow::Result<bool> {
    let (bucket, key) = (&state.settings.input_bucket, job::image_key(job.job_id));
    match state.store.head(bucket, &key).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            let detail = "the front end stopped before queueing the job, and its image is gone";
            fail(state, job.job_id, reason::with(reason::LOST, detail)).await?;
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    }
    let request = JobRequest {
        job_id: job.job_id,
        bucket: bucket.clone(),
        key,
        zone: job.zone.clone(),
        client_id: job.client_id.clone(),
        file: job.file.clone(),
        reply_queue: state.responses.name().to_string(),
        enqueued_at_ms: job.queued_at_ms,
        attempts: 0,
        last_error: None,
        alone: false,
    };
    let body = serde_json::to_string(&request).expect("a JobRequest always serializes");
    state.requests.send(&body, Duration::ZERO).await?;
    state.index.mark_sent(job.job_id, job::now_ms()).await?;
    tracing::warn!(job_id = %job.job_id, "upkeep: queued a job its front end never queued");
    Ok(true)
}

async fn fail(state: &AppState, job_id: Uuid, reason: String) -> anyhow::Result<()> {
    let response = JobResponse {
        job_id,
        outcome: Outcome::Failed { reason },
        instance: state.settings.instance_id.clone(),
        pool: String::new(),
        detector_ms: 0.0,
        at_ms: job::now_ms(),
    };
    super::listener::record(state, response).await?;
    Ok(())
}

/// One retention pass, with a sweep of the store when `sweep`; returns how many jobs, keys,
/// messages and objects it deleted.
pub async fn retain(state: &AppState, sweep_store: bool) -> u64 {
    let r = &state.settings.retention;
    let now = job::now_ms();
    let mut deleted = expire_jobs(state, now - r.jobs.as_millis() as i64).await;
    deleted += batches("idempotency keys", || state.index.expire_keys(now, BATCH)).await;
    for (queue, keep) in
        [(&state.requests, r.messages), (&state.responses, r.messages), (&state.dead_letters, r.dead_letters)]
    {
        deleted += batches(queue.name(), || queue.expire(keep, BATCH)).await;
    }
    if !sweep_store {
        return deleted;
    }
    let output = &state.settings.output_bucket;
    deleted += sweep(state, output, READINESS, CONTROL_RETENTION).await;
    if r.sweep_store {
        // The controller removes the heartbeats of instances its pools no longer list; with a
        // fixed fleet (`up --workers N`) there is no controller. On S3 it is always there.
        deleted += sweep(state, output, crate::control::HEARTBEATS, CONTROL_RETENTION).await;
        deleted += sweep(state, &state.settings.input_bucket, "images/", r.jobs).await;
        deleted += sweep(state, output, "results/", r.jobs).await;
    }
    deleted
}

/// Deletes finished jobs older than `before_ms` and their objects, a batch at a time.
async fn expire_jobs(state: &AppState, before_ms: i64) -> u64 {
    let mut deleted = 0;
    loop {
        let ids = match state.index.expire(before_ms, BATCH).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "upkeep: cannot delete old jobs from the index");
                return deleted;
            }
        };
        for id in &ids {
            delete_objects(state, *id).await;
        }
        deleted += ids.len() as u64;
        if ids.len() < BATCH as usize {
            return deleted;
        }
    }
}

/// Deletes a job's image and result; a failure is logged and the store sweep retries it.
pub async fn delete_objects(state: &AppState, job_id: Uuid) {
    let s = &state.settings;
    for (bucket, key) in [(&s.input_bucket, job::image_key(job_id)), (&s.output_bucket, job::result_key(job_id))] {
        if let Err(e) = state.store.delete(bucket, &key).await {
            tracing::warn!(%job_id, %key, error = %e, "upkeep: cannot delete an object");
        }
    }
}

/// Runs `step` until it deletes fewer than a batch; returns the total.
async fn batches<E, N, F>(what: &str, mut step: impl FnMut() -> F) -> u64
where
    E: std::fmt::Display,
    N: TryInto<u64>,
    F: std::future::Future<Output = Result<N, E>>,
{
    let mut total = 0;
    loop {
        match step().await {
            Ok(n) => {
                let n: u64 = n.try_into().unwrap_or(0);
                total += n;
                if n < u64::from(BATCH) {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "upkeep: cannot delete old entries");
                return total;
            }
        }
    }
}

/// Deletes the objects under `prefix` last written more than `keep` ago (an operator's purge,
/// [`crate::store::purge`], with an age).
async fn sweep(state: &AppState, bucket: &str, prefix: &str, keep: Duration) -> u64 {
    let filter = PurgeFilter { prefix: prefix.to_string(), older_than: Some(SystemTime::now() - keep) };
    match purge(state.store.as_ref(), bucket, &filter).await {
        Ok(purged) => purged.keys.len() as u64,
        Err(e) => {
            tracing::warn!(bucket, prefix, error = %e, "upkeep: cannot delete old objects");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_runs_every_minute_or_more_often_for_short_retentions() {
        let retention = |jobs| Retention { jobs, messages: jobs, dead_letters: jobs, sweep_store: true };
        assert_eq!(interval(&retention(Duration::from_secs(30 * 86_400))), Duration::from_secs(60));
        assert_eq!(interval(&retention(Duration::from_secs(120))), Duration::from_secs(30));
        assert_eq!(interval(&retention(Duration::from_secs(1))), Duration::from_secs(5));
    }
}
