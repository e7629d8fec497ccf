//! The result index: one SQLite row per job (who sent it, zone, times, worker, labels) so the
//! front end answers status, history and per-zone questions without reading the store.
//!
//! # Layout
//! - this file: the rows, the write side (insert, answers applied) and single-job reads;
//! - [`report`]: zone totals, time buckets and the finished-jobs stream.

mod idempotency;
mod report;
mod schema;
mod totals;
mod upkeep;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::job::{JobResponse, JobResult, Outcome};
pub use idempotency::{Claim, IdempotencyKey};
use report::{buckets, finished_after, zones};
pub use report::{head_count, label_counts};
use schema::migrate;
pub use upkeep::StaleJob;

/// The label whose count is the head count (city cameras).
pub const PERSON: &str = "person";

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database file could not be created, opened or migrated.
    #[error("result index {path} cannot be opened: {source}; check that the data directory is writable")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: crate::error::Cause,
    },
    /// A query failed (a full disk, a locked or damaged database).
    #[error("result index unavailable: {0}; check that the data directory is writable")]
    Query(#[source] rusqlite::Error),
    /// The task running the query stopped (the runtime is shutting down).
    #[error("result index query did not finish: {0}")]
    Stopped(#[source] tokio::task::JoinError),
}

type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Stored and queued; no worker has it yet.
    Queued,
    /// A worker is on it.
    Running,
    /// Finished with a result.
    Done,
    /// Finished without one.
    Failed,
}

impl JobStatus {
    fn parse(s: &str) -> Self {
        match s {
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            _ => JobStatus::Queued,
        }
    }
}

/// A job as the index knows it. Times are ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job.
    pub job_id: Uuid,
    /// The client's id.
    pub client_id: Option<String>,
    /// Upload zone.
    pub zone: Option<String>,
    /// Uploaded file name.
    pub file: Option<String>,
    /// Where it is.
    pub status: JobStatus,
    /// Queued at.
    pub queued_at_ms: i64,
    /// Taken by a worker at.
    pub started_at_ms: Option<i64>,
    /// Finished at.
    pub finished_at_ms: Option<i64>,
    /// The worker's instance id.
    pub worker_instance: Option<String>,
    /// The worker's pool.
    pub worker_pool: Option<String>,
    /// Weights sha256.
    pub model: Option<String>,
    /// Detector time, ms.
    pub detector_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The result, when done.
    pub result: Option<JobResult>,
}

/// A new job, before any worker saw it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job.
    pub job_id: Uuid,
    /// The client's id.
    pub client_id: Option<String>,
    /// Upload zone.
    pub zone: Option<String>,
    /// Uploaded file name.
    pub file: Option<String>,
    /// Queued at, ms.
    pub queued_at_ms: i64,
    /// The submitting token's id ([`crate::frontend::auth::Caller::id`]); `None` without tokens.
    pub submitter: Option<String>,
}

/// Objects of one label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LabelCount {
    /// COCO label.
    pub label: String,
    /// How many.
    pub count: u64,
}

/// Per-zone (or overall) totals.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZoneTotals {
    /// Images with a result.
    pub images: u64,
    /// People counted (the `person` label).
    pub head_count: u64,
    /// Objects per label, people first, then by count.
    pub labels: Vec<LabelCount>,
}

/// One zone: its totals and its latest result.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZoneSummary {
    /// Zone name.
    pub zone: String,
    /// Its totals.
    #[serde(flatten)]
    pub totals: ZoneTotals,
    /// Job id of the latest result.
    pub last_job_id: Uuid,
    /// When it finished, ms since the Unix epoch.
    pub last_finished_at_ms: i64,
    /// People in the latest image.
    pub last_head_count: u64,
}

/// What finished in one time bucket: images with a result and their objects per label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCounts {
    /// Start of the bucket, ms since the Unix epoch (a multiple of the bucket size).
    pub start_ms: i64,
    /// Images done in the bucket.
    pub images: u64,
    /// Their objects per label, people first, then by count.
    pub labels: Vec<LabelCount>,
}

/// A job that finished, as `/api/events` sends it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FinishedEvent {
    /// Its place in the order this index saw jobs finish: the event id.
    pub seq: i64,
    /// The job.
    pub job_id: Uuid,
    /// Done or failed.
    pub status: JobStatus,
    /// Upload zone.
    pub zone: Option<String>,
    /// Uploaded file name.
    pub file: Option<String>,
    /// When it finished, ms since the Unix epoch.
    pub finished_at_ms: i64,
    /// People found.
    pub head_count: u64,
    /// Objects per label, people first.
    pub labels: Vec<LabelCount>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The SQLite-backed index.
#[derive(Clone)]
pub struct ResultIndex {
    db: Arc<Mutex<Connection>>,
}

const COLUMNS: &str = "job_id, client_id, zone, file, status, queued_at_ms, started_at_ms, finished_at_ms,
    worker_instance, worker_pool, model, detector_ms, error, result";

impl ResultIndex {
    /// Opens (creating or migrating) the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |e: crate::error::Cause| IndexError::Open { path: path.to_path_buf(), source: e };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.into()))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(e.into()))?;
        migrate(&conn).map_err(|e| fail(e.into()))?;
        Ok(Self { db: Arc::new(Mutex::new(conn)) })
    }

    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&mut db.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(IndexError::Stopped)?
            .map_err(IndexError::Query)
    }

    /// Records a queued job.
    pub async fn insert(&self, job: NewJob) -> Result<()> {
        self.with_db(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO jobs (job_id, client_id, zone, file, status, queued_at_ms, submitter)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6)",
            )?
            .execute(params![
                job.job_id.to_string(),
                job.client_id,
                job.zone,
                job.file,
                job.queued_at_ms,
                job.submitter
            ])
            .map(|_| ())
        })
        .await
    }

    /// The token id that submitted `job_id`: `Ok(None)` for a job this index does not hold or
    /// that was submitted without tokens.
    pub async fn submitter(&self, job_id: Uuid) -> Result<Option<String>> {
        self.with_db(move |c| {
            c.prepare_cached("SELECT submitter FROM jobs WHERE job_id = ?1")?
                .query_row(params![job_id.to_string()], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
        .await
    }

    /// Forgets a job that could not be queued, or one an operator deletes: its row and labels.
    pub async fn remove(&self, job_id: Uuid) -> Result<()> {
        self.delete_jobs(vec![job_id]).await.map(|_| ())
    }

    /// Applies a worker's response. Idempotent: once a job is done or failed, later responses
    /// (a slow duplicate worker's) change nothing. Returns whether the job just became final.
    pub async fn apply(&self, response: JobResponse) -> Result<bool> {
        self.with_db(move |c| apply(c, &response)).await
    }

    /// One job.
    pub async fn job(&self, job_id: Uuid) -> Result<Option<JobRecord>> {
        self.with_db(move |c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE job_id = ?1"), [job_id.to_string()], record)
                .optional()
        })
        .await
    }

    /// Finished jobs, newest first, optionally of one zone and since a time.
    pub async fn finished(&self, zone: Option<String>, since_ms: Option<i64>, limit: u32) -> Result<Vec<JobRecord>> {
        self.with_db(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE status IN ('done', 'failed')
                 AND (?1 IS NULL OR zone = ?1) AND (?2 IS NULL OR finished_at_ms >= ?2)
                 ORDER BY finished_at_ms DESC, job_id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![zone, since_ms, limit], record)?;
            rows.collect()
        })
        .await
    }

    /// Totals per zone and over all zones.
    pub async fn zones(&self) -> Result<(Vec<ZoneSummary>, ZoneTotals)> {
        self.with_db(zones).await
    }

    /// Jobs that finished after event `after` (see [`FinishedEvent::seq`]), oldest first, at
    /// most `limit`.
    pub async fn finished_after(&self, after: i64, limit: u32) -> Result<Vec<FinishedEvent>> {
        self.with_db(move |c| finished_after(c, after, limit)).await
    }

    /// The latest event's number; 0 before any job finished.
    pub async fn last_seq(&self) -> Result<i64> {
        self.with_db(|c| {
            c.prepare_cached("SELECT value FROM counters WHERE name = 'finished_seq'")?.query_row([], |r| r.get(0))
        })
        .await
    }

    /// Done jobs finished in `[since_ms, until_ms)` (of one zone, or all), counted per bucket of
    /// `bucket_ms` aligned to the Unix epoch, so every client and every call agrees on the
    /// edges. Buckets without a result are left out; oldest first.
    pub async fn buckets(
        &self,
        zone: Option<String>,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<BucketCounts>> {
        assert!(bucket_ms > 0, "buckets must have a positive size");
        self.with_db(move |c| buckets(c, zone.as_deref(), since_ms, until_ms, bucket_ms)).await
    }
}

fn record(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let parse_id = |s: String| Uuid::parse_str(&s).unwrap_or_default();
    let result: Option<String> = row.get(13)?;
    Ok(JobRecord {
        job_id: parse_id(row.get(0)?),
        client_id: row.get(1)?,
        zone: row.get(2)?,
        file: row.get(3)?,
        status: JobStatus::parse(&row.get::<_, String>(4)?),
        queued_at_ms: row.get(5)?,
        started_at_ms: row.get(6)?,
        finished_at_ms: row.get(7)?,
        worker_instance: row.get(8)?,
        worker_pool: row.get(9)?,
        model: row.get(10)?,
        detector_ms: row.get(11)?,
        error: row.get(12)?,
        result: result.and_then(|json| serde_json::from_str(&json).ok()),
    })
}

fn apply(c: &mut Connection, r: &JobResponse) -> rusqlite::Result<bool> {
    let tx = c.transaction()?;
    let id = r.job_id.to_string();
    let status: Option<String> = tx
        .prepare_cached("SELECT status FROM jobs WHERE job_id = ?1")?
        .query_row([&id], |row| row.get(0))
        .optional()?;
    let current = status.as_deref().map(JobStatus::parse);
    match current {
        // A dead-lettered job an operator redrove: a worker's answer takes it up again.
        Some(JobStatus::Failed) if !matches!(r.outcome, Outcome::Failed { .. }) && dead_lettered(&tx, &id)? => {
            tx.prepare_cached(
                "UPDATE jobs SET status = 'queued', finished_at_ms = NULL, finished_seq = NULL, error = NULL
                 WHERE job_id = ?1",
            )?
            .execute([&id])?;
        }
        Some(JobStatus::Done | JobStatus::Failed) => return Ok(false),
        _ => {}
    }
    if current.is_none() {
        // Queued by another replica or before the index was wiped: the response alone says enough.
        let (zone, client_id, file) = match &r.outcome {
            Outcome::Done { result } => {
                (result.zone.clone(), result.detection.id.clone(), result.detection.file.clone())
            }
            _ => (None, None, None),
        };
        tx.prepare_cached(
            "INSERT INTO jobs (job_id, client_id, zone, file, status, queued_at_ms, sent_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?5)",
        )?
        .execute(params![id, client_id, zone, file, r.at_ms])?;
    }
    // The counter survives deletions (retention, an operator's delete-job): event numbers are
    // never given twice, so a reconnecting client's Last-Event-ID stays meaningful.
    let next_seq = "(SELECT value FROM counters WHERE name = 'finished_seq')";
    if matches!(r.outcome, Outcome::Done { .. } | Outcome::Failed { .. }) {
        tx.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = 'finished_seq'")?.execute([])?;
    }
    let became_final = match &r.outcome {
        Outcome::Started => {
            tx.prepare_cached(
                "UPDATE jobs SET status = 'running', started_at_ms = ?2, worker_instance = ?3, worker_pool = ?4
                 WHERE job_id = ?1",
            )?
            .execute(params![id, r.at_ms, r.instance, r.pool])?;
            false
        }
        Outcome::Done { result } => {
            let json = serde_json::to_string(result).unwrap_or_default();
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'done', finished_at_ms = ?2, worker_instance = ?3, worker_pool = ?4,
                     model = ?5, detector_ms = ?6, result = ?7, started_at_ms = COALESCE(started_at_ms, ?2),
                     finished_seq = {next_seq} WHERE job_id = ?1"
                ),
                params![id, r.at_ms, r.instance, r.pool, result.detection.model, r.detector_ms, json],
            )?;
            let zone: Option<String> =
                tx.prepare_cached("SELECT zone FROM jobs WHERE job_id = ?1")?.query_row([&id], |row| row.get(0))?;
            let labels = label_counts(result);
            for (label, count) in &labels {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO labels (job_id, zone, label, count) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, zone, label, count])?;
            }
            if let Some(zone) = &zone {
                totals::add(&tx, zone, &id, r.at_ms, &labels)?;
            }
            true
        }
        Outcome::Failed { reason } => {
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'failed', finished_at_ms = ?2, worker_instance = ?3, worker_pool = ?4,
                     error = ?5, detector_ms = ?6, finished_seq = {next_seq} WHERE job_id = ?1"
                ),
                params![id, r.at_ms, r.instance, r.pool, reason, r.detector_ms],
            )?;
            true
        }
    };
    tx.commit()?;
    Ok(became_final)
}

/// Whether job `id` failed because it was dead-lettered.
fn dead_lettered(tx: &rusqlite::Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    let prefix = format!("{}:%", crate::job::reason::DEAD_LETTERED);
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE job_id = ?1 AND error LIKE ?2)")?
        .query_row(params![id, prefix], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{DetectedObject, DetectionResult, Rectangle, Timings};

    pub(super) fn done(job_id: Uuid, at_ms: i64, labels: &[&str]) -> JobResponse {
        let objects = labels
            .iter()
            .map(|label| DetectedObject {
                label: label.to_string(),
                accuracy: 0.9,
                rectangle: Rectangle { left: 0, top: 0, width: 1, height: 1 },
            })
            .collect();
        let detection = DetectionResult {
            id: None,
            file: None,
            objects,
            width: 8,
            height: 8,
            model: "m".into(),
            timings: Timings::default(),
        };
        JobResponse {
            job_id,
            outcome: Outcome::Done { result: JobResult { job_id, zone: None, detection } },
            instance: "w".into(),
            pool: "local".into(),
            detector_ms: 40.0,
            at_ms,
        }
    }

    pub(super) async fn finish(index: &ResultIndex, zone: Option<&str>, at_ms: i64, labels: &[&str]) -> Uuid {
        let job_id = Uuid::new_v4();
        let job = NewJob {
            job_id,
            client_id: None,
            zone: zone.map(Into::into),
            file: None,
            queued_at_ms: at_ms - 100,
            submitter: None,
        };
        index.insert(job).await.unwrap();
        assert!(index.apply(done(job_id, at_ms, labels)).await.unwrap());
        job_id
    }

    #[tokio::test]
    async fn events_are_numbered_in_the_order_jobs_finish_and_survive_an_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let index = ResultIndex::open(&path).unwrap();
        assert_eq!(index.last_seq().await.unwrap(), 0);
        // Worker clocks disagree: the second to finish here says it finished earlier.
        finish(&index, Some("gate"), 2_000, &["person", "person", "dog"]).await;
        finish(&index, None, 1_000, &[]).await;
        let events = index.finished_after(0, 10).await.unwrap();
        let order: Vec<(i64, i64)> = events.iter().map(|e| (e.seq, e.finished_at_ms)).collect();
        assert_eq!(order, [(1, 2_000), (2, 1_000)], "numbered as seen, not by the workers' clocks");
        assert_eq!((events[0].head_count, events[0].zone.as_deref()), (2, Some("gate")));
        assert_eq!(events[0].labels[1], LabelCount { label: "dog".into(), count: 1 });
        assert_eq!(index.finished_after(1, 10).await.unwrap().len(), 1);
        assert_eq!(index.last_seq().await.unwrap(), 2);
        // A replayed answer changes nothing and takes no new number.
        let job_id = events[0].job_id;
        assert!(!index.apply(done(job_id, 5_000, &["cat"])).await.unwrap());
        assert_eq!(index.last_seq().await.unwrap(), 2);
        // An index written before v2 gets numbers by finish time when it is opened.
        drop(index);
        let old = dir.path().join("v1.db");
        let c = Connection::open(&old).unwrap();
        schema::migrate_to(&c, 1).unwrap();
        c.execute_batch(
            "INSERT INTO jobs (job_id, status, queued_at_ms, finished_at_ms) VALUES
                 ('67e55044-10b1-426f-9247-bb680e5fe0c8', 'done', 1, 2000),
                 ('67e55044-10b1-426f-9247-bb680e5fe0c9', 'failed', 1, 1000);",
        )
        .unwrap();
        drop(c);
        let index = ResultIndex::open(&old).unwrap();
        let order: Vec<(i64, i64)> =
            index.finished_after(0, 10).await.unwrap().iter().map(|e| (e.seq, e.finished_at_ms)).collect();
        assert_eq!(order, [(1, 1_000), (2, 2_000)]);
    }

    #[tokio::test]
    async fn buckets_are_aligned_to_the_epoch_and_count_images_and_objects() {
        let dir = tempfile::tempdir().unwrap();
        let index = ResultIndex::open(&dir.path().join("index.db")).unwrap();
        let base = 1_800_000_000_000; // a multiple of 30 000 ms
        finish(&index, Some("gate"), base, &["person", "person", "bus"]).await;
        finish(&index, Some("gate"), base + 29_999, &["person"]).await; // same bucket, last ms
        finish(&index, Some("yard"), base + 30_000, &["dog"]).await; // the next bucket, first ms
        finish(&index, None, base + 95_000, &[]).await; // an image with nothing in it
        finish(&index, Some("gate"), base + 200_000, &["cat"]).await; // at `until`: left out
        let all = index.buckets(None, base, base + 200_000, 30_000).await.unwrap();
        let starts: Vec<i64> = all.iter().map(|b| b.start_ms - base).collect();
        assert_eq!(starts, [0, 30_000, 90_000], "empty buckets are not rows");
        assert_eq!(all[0].images, 2);
        let first: Vec<(&str, u64)> = all[0].labels.iter().map(|l| (l.label.as_str(), l.count)).collect();
        assert_eq!(first, [("person", 3), ("bus", 1)]);
        assert_eq!((all[2].images, all[2].labels.len()), (1, 0));
        let gate = index.buckets(Some("gate".into()), base, base + 300_000, 60_000).await.unwrap();
        let counts: Vec<(i64, u64)> = gate.iter().map(|b| (b.start_ms - base, b.images)).collect();
        assert_eq!(counts, [(0, 2), (180_000, 1)], "one zone, minute buckets");
        let later = index.buckets(None, base + 30_000, base + 300_000, 30_000).await.unwrap();
        assert_eq!(later.first().map(|b| b.start_ms - base), Some(30_000), "since is inclusive");
    }
}
