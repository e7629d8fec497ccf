//! Jobs and the messages about them: the request a front end queues, the responses a worker
//! sends back, and where each job's image and result are kept (docs/architecture.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::result::DetectionResult;

/// Store key of a job's uploaded image, in the input bucket.
pub fn image_key(job_id: Uuid) -> String {
    format!("images/{job_id}")
}

/// Store key of a job's final response, in the output bucket.
pub fn result_key(job_id: Uuid) -> String {
    format!("results/{job_id}.json")
}

/// The request message: references to the stored image, never its bytes (SQS caps a message
/// at 256 KiB; a phone photo is several MB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Made by the front end; the key of everything about the job.
    pub job_id: Uuid,
    /// Bucket holding the image.
    pub bucket: String,
    /// Key of the image in `bucket`.
    pub key: String,
    /// The upload zone (camera), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The client's id, echoed back in the result (CloudDetect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The uploaded file's name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Queue to send responses to (the front end's own).
    pub reply_queue: String,
    /// When the front end queued the job, ms since the Unix epoch.
    pub enqueued_at_ms: i64,
    /// Attempts that ended in an error a worker reported (deliveries to a worker that crashed
    /// are not counted here: see `queue.max_receives`). A worker re-queues the job with this
    /// one higher, or moves it to the dead-letter queue at `queue.max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// The error that ended the last attempt: the reason a dead-lettered job shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Run in a batch of its own: a batch it was in ran past its deadline, and only alone can
    /// it be told whether it was the one that hung.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alone: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a job that has no answer is failed, as the `reason` of [`Outcome::Failed`] starts: the
/// client and an operator can tell a dead-lettered job from one whose image was bad.
pub mod reason {
    /// Moved to the dead-letter queue: too many deliveries or failed attempts.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// The detector ran past `worker.job_deadline_seconds` on it.
    pub const DEADLINE: &str = "deadline";
    /// Lost before it was queued (its image is gone too).
    pub const LOST: &str = "lost";

    /// `"<code>: <detail>"`.
    pub fn with(code: &str, detail: impl std::fmt::Display) -> String {
        format!("{code}: {detail}")
    }
}

/// What a worker reports about a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResponse {
    /// The job.
    pub job_id: Uuid,
    /// What happened.
    pub outcome: Outcome,
    /// The worker's instance id.
    pub instance: String,
    /// The worker's pool.
    pub pool: String,
    /// Detector time spent on the job (preprocess + inference + postprocess), ms.
    #[serde(default)]
    pub detector_ms: f64,
    /// When the worker sent this, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The state a response moves a job to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// A worker took the job.
    Started,
    /// Finished with a result.
    Done {
        /// The result.
        result: JobResult,
    },
    /// Finished without a result (e.g. the image could not be decoded).
    Failed {
        /// Why, for the client.
        reason: String,
    },
}

impl Outcome {
    /// Done or failed: no further response will come.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Started)
    }
}

/// The result of a job as clients see it: the CloudDetect shape plus job id and zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// The server-made job id.
    pub job_id: Uuid,
    /// The upload zone, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Detections, the client's `id` and the file name.
    #[serde(flatten)]
    pub detection: DetectionResult,
}

/// Milliseconds since the Unix epoch, the time unit of every message.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Timings;

    #[test]
    fn responses_round_trip_through_json() {
        let job_id = Uuid::new_v4();
        let result = JobResult {
            job_id,
            zone: Some("3".into()),
            detection: DetectionResult {
                id: Some("client-1".into()),
                file: None,
                objects: vec![],
                width: 10,
                height: 20,
                model: "abc".into(),
                timings: Timings::default(),
            },
        };
        let response = JobResponse {
            job_id,
            outcome: Outcome::Done { result },
            instance: "w1".into(),
            pool: "local".into(),
            detector_ms: 1.5,
            at_ms: 7,
        };
        let json = serde_json::to_string(&response).unwrap();
        assert!(json.contains(r#""status":"done""#), "{json}");
        assert!(json.contains(r#""id":"client-1""#), "flattened CloudDetect fields: {json}");
        assert_eq!(serde_json::from_str::<JobResponse>(&json).unwrap(), response);
    }

    #[test]
    fn requests_reject_unknown_fields() {
        let json = r#"{"job_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","bucket":"b","key":"k","reply_queue":"r","enqueued_at_ms":1,"image":"AAAA"}"#;
        assert!(serde_json::from_str::<JobRequest>(json).is_err());
    }
}
