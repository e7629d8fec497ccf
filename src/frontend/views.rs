//! The JSON bodies the front end answers with (besides results and errors).

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::index::{JobRecord, JobStatus, ZoneSummary, ZoneTotals};
use crate::job::JobResult;
use crate::queue::QueueDepth;

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Where to ask about a job.
pub fn status_url(job_id: Uuid) -> String {
    format!("/api/jobs/{job_id}")
}

/// `202 Accepted`: the job is queued (or still running after the synchronous wait).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The job's id.
    pub job_id: Uuid,
    /// `queued` or `running`.
    pub status: JobStatus,
    /// `GET` this for the result.
    pub status_url: String,
}

/// A job's state and, when done, its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// The job's id.
    pub job_id: Uuid,
    /// queued, running, done or failed.
    pub status: JobStatus,
    /// The client's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Upload zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Uploaded file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// When it was queued (RFC 3339).
    pub queued_at: String,
    /// When a worker took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The worker's instance id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The worker's pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Detector time, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_ms: Option<f64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result, when done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// This document.
    pub status_url: String,
    /// The uploaded image.
    pub image_url: String,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            job_id: r.job_id,
            status: r.status,
            id: r.client_id,
            zone: r.zone,
            file: r.file,
            queued_at: timestamp(r.queued_at_ms),
            started_at: r.started_at_ms.map(timestamp),
            finished_at: r.finished_at_ms.map(timestamp),
            worker: r.worker_instance,
            pool: r.worker_pool,
            detector_ms: r.detector_ms,
            error: r.error,
            result: r.result,
            status_url: status_url(r.job_id),
            image_url: format!("/api/jobs/{}/image", r.job_id),
        }
    }
}

/// `GET /api/results`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultsBody {
    /// Finished jobs, newest first.
    pub results: Vec<JobView>,
}

/// One zone in `GET /api/zones`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZoneView {
    /// Totals and latest result.
    #[serde(flatten)]
    pub summary: ZoneSummary,
    /// When the latest result finished (RFC 3339).
    pub last_finished_at: String,
    /// The latest image.
    pub last_image_url: String,
}

/// `GET /api/zones`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZonesBody {
    /// Per zone, by name.
    pub zones: Vec<ZoneView>,
    /// Over all zones.
    pub totals: ZoneTotals,
}

impl ZonesBody {
    /// Adds times and URLs to the index's summaries.
    pub fn new(zones: Vec<ZoneSummary>, totals: ZoneTotals) -> Self {
        let zones = zones
            .into_iter()
            .map(|summary| ZoneView {
                last_finished_at: timestamp(summary.last_finished_at_ms),
                last_image_url: format!("/api/jobs/{}/image", summary.last_job_id),
                summary,
            })
            .collect();
        Self { zones, totals }
    }
}

/// `GET /api/queues`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesBody {
    /// The shared request queue.
    pub requests: QueueDepth,
    /// Dead-lettered requests (`queue.max_receives` deliveries or `queue.max_attempts` failed
    /// attempts), kept for an operator; their jobs are failed `dead_lettered`.
    pub dead_letters: QueueDepth,
    /// This front end's response queue.
    pub responses: QueueDepth,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}
