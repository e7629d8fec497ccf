//! The administration routes' wire formats: what each takes in its query and answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::frontend::error::truncate;
use crate::frontend::views::timestamp;
use crate::queue::admin::{Peeked, RedriveMethod};
use crate::queue::QueueDepth;

/// The longest excerpt of an unreadable body, and the longest `last_error`, in bytes.
const MAX_TEXT: usize = 256;

/// A queue by its name and depth.
#[derive(Debug, Serialize, ToSchema)]
pub struct NamedDepth {
    /// The queue's name.
    pub name: String,
    /// Its messages by state.
    #[serde(flatten)]
    pub depth: QueueDepth,
}

/// `GET /api/admin/queues`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminQueuesBody {
    /// The request queue every worker reads.
    pub requests: NamedDepth,
    /// Its dead-letter queue, `<requests>-dlq`.
    pub dead_letters: NamedDepth,
    /// This front end's response queue.
    pub responses: NamedDepth,
}

/// Query of `GET /api/admin/dead-letters`.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// At most this many, 1..=1000; default 100.
    pub limit: Option<u32>,
}

/// One dead-lettered message. Its body is read leniently: fields it lacks are left out, and a
/// body that is not a job request is shown as an excerpt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    /// The queue's id for the message: what redrive and drop take.
    pub message_id: String,
    /// The job it asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// The job's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Where its image is, `bucket/key` (messages carry keys, never images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Receives so far: on SQS those on the request queue and every peek since; the embedded
    /// queue counts only those since the message was dead-lettered (the move resets it).
    pub receive_count: u32,
    /// When it was sent (RFC 3339), where the queue says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Tries so far, when the body records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The last error, when the body records it (at most 256 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The body's first 256 bytes, when it is not a job request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl From<Peeked> for DeadLetter {
    fn from(peeked: Peeked) -> Self {
        let body = match serde_json::from_str::<Value>(&peeked.body) {
            Ok(Value::Object(fields)) => fields,
            _ => Default::default(),
        };
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        let job_id = text("job_id").and_then(|id| Uuid::parse_str(&id).ok());
        let image = text("bucket").zip(text("key")).map(|(bucket, key)| format!("{bucket}/{key}"));
        Self {
            job_id,
            zone: text("zone"),
            image,
            receive_count: peeked.receive_count,
            sent_at: peeked.sent_at_ms.map(timestamp),
            attempts: body.get("attempts").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
            last_error: text("last_error").map(|e| truncate(e, MAX_TEXT)),
            unreadable: job_id.is_none().then(|| truncate(peeked.body, MAX_TEXT)),
            message_id: peeked.message_id,
        }
    }
}

/// `GET /api/admin/dead-letters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersBody {
    /// The dead-letter queue.
    pub queue: String,
    /// Its messages, oldest first (SQS: only visible ones).
    pub messages: Vec<DeadLetter>,
}

/// Query of `POST /api/admin/dead-letters/redrive`.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveQuery {
    /// Only this message; default: every one.
    pub message_id: Option<String>,
}

/// `POST /api/admin/dead-letters/redrive`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedrivenBody {
    /// The dead-letter queue.
    pub from: String,
    /// The request queue.
    pub to: String,
    /// Messages moved (SQS move task: those visible when it started).
    pub moved: u64,
    /// How they were moved.
    pub method: RedriveMethod,
    /// What else to know: the SQS task, or why the fallback was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `DELETE /api/admin/dead-letters/messages/{message_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DroppedBody {
    /// The dead-letter queue.
    pub queue: String,
    /// The message removed.
    pub message_id: String,
    /// Messages removed: 1.
    pub removed: u64,
}

/// A queue an operator may purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PurgeableQueue {
    /// The request queue: queued jobs are lost (their index rows stay `queued`).
    Requests,
    /// The dead-letter queue.
    DeadLetters,
}

impl PurgeableQueue {
    /// From the path segment, `requests` or `dead-letters`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "requests" => Some(Self::Requests),
            "dead-letters" => Some(Self::DeadLetters),
            _ => None,
        }
    }
}

/// `POST /api/admin/queues/{queue}/purge`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePurgedBody {
    /// The queue's name.
    pub queue: String,
    /// Messages removed (SQS: its approximate depth just before).
    pub removed: u64,
}

/// A bucket by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BucketRole {
    /// `store.input_bucket`: uploaded images.
    Input,
    /// `store.output_bucket`: results and the controller's records.
    Output,
}

/// Query of `POST /api/admin/store/purge`.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorePurgeQuery {
    /// Which bucket.
    #[param(inline)]
    pub bucket: BucketRole,
    /// Only keys starting with this (e.g. `images/`); default: the whole bucket. `control/` and
    /// `releases/` are kept unless this names them.
    pub prefix: Option<String>,
    /// Only objects last written before this: an RFC 3339 time (`2026-11-24T10:00:00Z`) or an
    /// age (`7d`, `12h`, `30m`).
    pub older_than: Option<String>,
}

/// The most keys a purge's answer lists.
pub const MAX_KEYS_LISTED: usize = 1000;

/// `POST /api/admin/store/purge`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorePurgedBody {
    /// The bucket's name.
    pub bucket: String,
    /// The prefix purged.
    pub prefix: String,
    /// The cutoff (RFC 3339), when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Objects removed.
    pub removed: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Objects kept under `control/` or `releases/`, which the prefix did not name.
    pub protected: u64,
    /// The keys removed, sorted; the first 1000.
    pub keys: Vec<String>,
    /// Whether more keys were removed than listed.
    pub keys_truncated: bool,
}

/// `DELETE /api/admin/jobs/{job_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDeletedBody {
    /// The job.
    pub job_id: Uuid,
    /// Whether its image was there and is gone.
    pub image: bool,
    /// Whether its result was there and is gone.
    pub result: bool,
    /// Whether its index row (and label counts) was there and is gone.
    pub index_row: bool,
    /// The objects removed, `bucket/key`.
    pub removed: Vec<String>,
}
