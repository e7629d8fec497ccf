//! The administration routes under `/api/admin/` (the `admin` scope): queue depths, the
//! dead-letter queue (list, redrive, drop), purging a queue or part of a bucket, and deleting a
//! job with its image, result and index row. `skyburst admin` calls them.
//!
//! Reads are `GET`; everything that removes or moves is `POST` or `DELETE` and answers what it
//! removed. Wire formats are in [`views`].

pub mod views;

use std::time::SystemTime;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorBody};
use super::{resource, AppState};
use crate::job;
use crate::queue::admin::AdminError;
use crate::queue::Queue;
use crate::store::purge::{purge, PurgeFilter};
use crate::store::{ObjectStore, StoreError};
use views::{
    AdminQueuesBody, BucketRole, DeadLetter, DeadLettersBody, DeadLettersQuery, DroppedBody, JobDeletedBody,
    NamedDepth, PurgeableQueue, QueuePurgedBody, RedriveQuery, RedrivenBody, StorePurgeQuery, StorePurgedBody,
    MAX_KEYS_LISTED,
};

/// The most dead letters one `GET /api/admin/dead-letters` returns.
const MAX_LIMIT: u32 = 1000;

/// Registers the administration routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/admin/queues", "GET").route(web::get().to(queues)))
        .service(resource("/api/admin/queues/{queue}/purge", "POST").route(web::post().to(purge_queue)))
        .service(resource("/api/admin/dead-letters", "GET").route(web::get().to(dead_letters)))
        .service(resource("/api/admin/dead-letters/redrive", "POST").route(web::post().to(redrive)))
        .service(
            resource("/api/admin/dead-letters/messages/{message_id}", "DELETE").route(web::delete().to(drop_message)),
        )
        .service(resource("/api/admin/store/purge", "POST").route(web::post().to(purge_store)))
        .service(resource("/api/admin/jobs/{job_id}", "DELETE").route(web::delete().to(delete_job)));
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Queue(e) => e.into(),
            AdminError::PurgeTooSoon { .. } => Self::new(StatusCode::CONFLICT, "purge_too_soon", e.to_string()),
        }
    }
}

async fn named(queue: &dyn Queue) -> Result<NamedDepth, ApiError> {
    Ok(NamedDepth { name: queue.name().to_string(), depth: queue.depth().await? })
}

/// The request, dead-letter and response queues: names and messages visible, in flight and
/// delayed.
#[utoipa::path(
    get, path = "/api/admin/queues",
    responses(
        (status = 200, description = "Depths", body = AdminQueuesBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 503, description = "A queue cannot be read", body = ErrorBody),
    )
)]
pub async fn queues(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(AdminQueuesBody {
        requests: named(state.requests.as_ref()).await?,
        dead_letters: named(state.dead_letters.as_ref()).await?,
        responses: named(state.responses.as_ref()).await?,
    }))
}

/// The dead-lettered messages, oldest first, without taking them: the embedded queue's rows are
/// read unchanged; on SQS only visible messages are seen, and each look counts as a receive.
#[utoipa::path(
    get, path = "/api/admin/dead-letters", params(DeadLettersQuery),
    responses(
        (status = 200, description = "The messages", body = DeadLettersBody),
        (status = 400, description = "A bad limit", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 503, description = "The queue cannot be read", body = ErrorBody),
    )
)]
pub async fn dead_letters(
    state: web::Data<AppState>,
    query: web::Query<DeadLettersQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("bad_limit", format!("limit={limit} must be in 1..={MAX_LIMIT}")));
    }
    let peeked = state.dead_letters.peek(limit as usize).await?;
    Ok(HttpResponse::Ok().json(DeadLettersBody {
        queue: state.dead_letters.name().to_string(),
        messages: peeked.into_iter().map(DeadLetter::from).collect(),
    }))
}

/// Moves dead-lettered messages back to the request queue, receive counts reset: every one, or
/// the one `message_id` names. Embedded: rows moved in one transaction; SQS: a
/// `StartMessageMoveTask` for all (receive, send and delete where the endpoint has no move
/// tasks), receive, send and delete for one.
#[utoipa::path(
    post, path = "/api/admin/dead-letters/redrive", params(RedriveQuery),
    responses(
        (status = 200, description = "What was moved", body = RedrivenBody),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such message in the dead-letter queue", body = ErrorBody),
        (status = 503, description = "A queue cannot be reached", body = ErrorBody),
    )
)]
pub async fn redrive(state: web::Data<AppState>, query: web::Query<RedriveQuery>) -> Result<HttpResponse, ApiError> {
    let id = query.into_inner().message_id;
    let redriven = state.dead_letters.redrive_to(state.requests.as_ref(), id.as_deref()).await?;
    if let (Some(id), 0) = (&id, redriven.moved) {
        return Err(no_message(&state, id));
    }
    tracing::warn!(moved = redriven.moved, method = ?redriven.method, "dead letters redriven by an operator");
    Ok(HttpResponse::Ok().json(RedrivenBody {
        from: state.dead_letters.name().to_string(),
        to: state.requests.name().to_string(),
        moved: redriven.moved,
        method: redriven.method,
        note: redriven.note,
    }))
}

fn no_message(state: &AppState, id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no message {id:?} in {} (see GET /api/admin/dead-letters; SQS shows only visible messages)",
        state.dead_letters.name()
    ))
}

/// Removes one dead-lettered message.
#[utoipa::path(
    delete, path = "/api/admin/dead-letters/messages/{message_id}",
    params(("message_id" = String, Path, description = "As `GET /api/admin/dead-letters` lists it")),
    responses(
        (status = 200, description = "Removed", body = DroppedBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such message in the dead-letter queue", body = ErrorBody),
        (status = 503, description = "The queue cannot be reached", body = ErrorBody),
    )
)]
pub async fn drop_message(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if !state.dead_letters.drop_message(&id).await? {
        return Err(no_message(&state, &id));
    }
    tracing::warn!(message_id = %id, "dead letter dropped by an operator");
    let queue = state.dead_letters.name().to_string();
    Ok(HttpResponse::Ok().json(DroppedBody { queue, message_id: id, removed: 1 }))
}

/// Removes every message of the request queue or of the dead-letter queue. SQS takes one purge
/// per queue every 60 s (`409` `purge_too_soon` within them).
#[utoipa::path(
    post, path = "/api/admin/queues/{queue}/purge",
    params(("queue" = inline(PurgeableQueue), Path, description = "`requests` or `dead-letters`")),
    responses(
        (status = 200, description = "Purged", body = QueuePurgedBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 404, description = "Not `requests` or `dead-letters`", body = ErrorBody),
        (status = 409, description = "SQS purged this queue less than 60 s ago", body = ErrorBody),
        (status = 503, description = "The queue cannot be reached", body = ErrorBody),
    )
)]
pub async fn purge_queue(state: web::Data<AppState>, queue: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let queue = match PurgeableQueue::parse(&queue) {
        Some(PurgeableQueue::Requests) => state.requests.as_ref(),
        Some(PurgeableQueue::DeadLetters) => state.dead_letters.as_ref(),
        None => return Err(ApiError::not_found(format!("no queue {queue:?}; purge `requests` or `dead-letters`"))),
    };
    let removed = queue.purge().await?;
    tracing::warn!(queue = %queue.name(), removed, "queue purged by an operator");
    Ok(HttpResponse::Ok().json(QueuePurgedBody { queue: queue.name().to_string(), removed }))
}

/// Removes the objects of a bucket under a prefix, optionally only those older than a time or an
/// age. `control/` (the controller's lease and heartbeats) and `releases/` (worker releases) are
/// kept unless the prefix names them.
#[utoipa::path(
    post, path = "/api/admin/store/purge", params(StorePurgeQuery),
    responses(
        (status = 200, description = "What was removed", body = StorePurgedBody),
        (status = 400, description = "A bad bucket, prefix or time", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub async fn purge_store(
    state: web::Data<AppState>,
    query: web::Query<StorePurgeQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let bucket = match query.bucket {
        BucketRole::Input => &state.settings.input_bucket,
        BucketRole::Output => &state.settings.output_bucket,
    };
    let older_than = query.older_than.as_deref().map(parse_older_than).transpose()?;
    let filter = PurgeFilter { prefix: query.prefix.unwrap_or_default(), older_than };
    filter.check().map_err(|e| ApiError::bad_request("bad_prefix", format!("prefix: {e}")))?;
    let purged = purge(state.store.as_ref(), bucket, &filter).await?;
    tracing::warn!(%bucket, prefix = %filter.prefix, removed = purged.keys.len(), "objects purged by an operator");
    let removed = purged.keys.len();
    let mut keys = purged.keys;
    keys.truncate(MAX_KEYS_LISTED);
    Ok(HttpResponse::Ok().json(StorePurgedBody {
        bucket: bucket.clone(),
        prefix: filter.prefix,
        older_than: older_than.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        removed: removed as u64,
        bytes: purged.bytes,
        protected: purged.protected,
        keys_truncated: removed > keys.len(),
        keys,
    }))
}

/// `older_than`: an age (`7d`, `12h`) before now, or an RFC 3339 time.
fn parse_older_than(text: &str) -> Result<SystemTime, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_older_than",
            format!("older_than={text:?} is neither an RFC 3339 time (2026-11-24T10:00:00Z) nor an age (7d, 12h, 30m)"),
        )
    };
    if let Ok(age) = humantime::parse_duration(text) {
        return SystemTime::now().checked_sub(age).ok_or_else(bad);
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| bad())
}

/// Deletes a job: its image (input bucket), its result (output bucket) and its index row with
/// its label counts. A job still queued comes back as failed (its image is gone) when a worker
/// takes it: drop or purge its message first.
#[utoipa::path(
    delete, path = "/api/admin/jobs/{job_id}",
    params(("job_id" = Uuid, Path, description = "The job")),
    responses(
        (status = 200, description = "What was removed", body = JobDeletedBody),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No image, result or index row of this job", body = ErrorBody),
        (status = 503, description = "The store or the index cannot be reached", body = ErrorBody),
    )
)]
pub async fn delete_job(state: web::Data<AppState>, job_id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let job_id = super::query::parse_job_id(&job_id)?;
    let s = &state.settings;
    let store = state.store.as_ref();
    let image = remove_object(store, &s.input_bucket, &job::image_key(job_id)).await?;
    let result = remove_object(store, &s.output_bucket, &job::result_key(job_id)).await?;
    let index_row = state.index.delete_jobs(vec![job_id]).await? > 0;
    if image.is_none() && result.is_none() && !index_row {
        return Err(ApiError::not_found(format!("no job {job_id}: no image, result or index row")));
    }
    tracing::warn!(%job_id, "job deleted by an operator");
    Ok(HttpResponse::Ok().json(JobDeletedBody {
        job_id,
        image: image.is_some(),
        result: result.is_some(),
        index_row,
        removed: image.into_iter().chain(result).collect(),
    }))
}

/// Deletes `bucket/key` if it is there; returns `bucket/key` if it was.
async fn remove_object(store: &dyn ObjectStore, bucket: &str, key: &str) -> Result<Option<String>, ApiError> {
    match store.head(bucket, key).await {
        Ok(_) => {
            store.delete(bucket, key).await?;
            Ok(Some(format!("{bucket}/{key}")))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_than_takes_an_age_or_a_time() {
        let week = parse_older_than("7d").unwrap();
        let expected = SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
        assert!(expected.duration_since(week).unwrap_or_default().as_secs() < 5);
        let time = parse_older_than("2026-11-24T10:00:00Z").unwrap();
        assert_eq!(humantime::format_rfc3339(time).to_string(), "2026-11-24T10:00:00Z");
        for bad in ["yesterday", "", "7", "2026-13-01T00:00:00Z", "99999999999999999999d"] {
            assert_eq!(parse_older_than(bad).unwrap_err().status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
