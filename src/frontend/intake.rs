//! Taking an image in: check it, store it, index it, queue it — undoing each step if a later
//! one fails, so a rejected or failed request leaves nothing behind.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use uuid::Uuid;

use super::body::{Bounded, Limits};
use super::error::ApiError;
use super::views::{status_url, Accepted};
use super::AppState;
use crate::index::{Claim, IdempotencyKey, JobStatus, NewJob};
use crate::job::{self, JobRequest, Outcome};
use skyburst_detector::preprocess;

/// Longest zone name: camera ids such as `1` or `north-gate-3` fit with room to spare.
pub const MAX_ZONE: usize = 32;
/// Longest client id echoed back (a UUID is 36).
pub const MAX_CLIENT_ID: usize = 128;

/// An image and what came with it.
pub struct Upload {
    /// The image file's bytes.
    pub bytes: Vec<u8>,
    /// The client's id.
    pub client_id: Option<String>,
    /// Upload zone, validated.
    pub zone: Option<String>,
    /// File name, if multipart.
    pub file: Option<String>,
    /// The submitting token's id, recorded so a `submit` token reads only its own jobs.
    pub submitter: Option<String>,
}

/// Checks a zone name: 1..=32 of `A-Z a-z 0-9 _ -`.
pub fn check_zone(zone: &str) -> Result<(), ApiError> {
    let ok = (1..=MAX_ZONE).contains(&zone.len())
        && zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_zone",
            format!("zone {zone:?} must be 1..={MAX_ZONE} characters of A-Z, a-z, 0-9, '-' and '_'"),
        ))
    }
}

/// Reads the whole body under `limits` ([`Bounded`]): refused before reading when the client
/// declares a length over the limit, and as soon as it passes the limit or falls below the
/// minimum rate otherwise.
pub async fn read_body(req: &HttpRequest, payload: web::Payload, limits: Limits) -> Result<Vec<u8>, ApiError> {
    let declared = declared_length(req, limits.max)?;
    let (mut payload, verdict) = Bounded::new(payload, limits, None);
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            verdict
                .error()
                .unwrap_or_else(|| ApiError::bad_request("bad_body", format!("could not read the body: {e}")))
        })?;
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("empty_body", "the request body is empty"));
    }
    Ok(body)
}

/// The declared `Content-Length`, refused before reading when it is over `limit`.
pub fn declared_length(req: &HttpRequest, limit: usize) -> Result<Option<usize>, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => Err(super::body::too_large(limit).closing()),
        other => Ok(other),
    }
}

/// The request's media type (`application/json`), lower-cased, parameters dropped.
pub fn media_type(req: &HttpRequest) -> String {
    let value = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// `Ok` if the request's media type is `expected`, else 415.
pub fn require_media_type(req: &HttpRequest, expected: &str) -> Result<(), ApiError> {
    let media = media_type(req);
    if media == expected {
        Ok(())
    } else {
        Err(wrong_media_type(&media, expected))
    }
}

/// 415 naming what the route accepts.
pub fn wrong_media_type(found: &str, expected: &str) -> ApiError {
    let found = if found.is_empty() { "none" } else { found };
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type {found} is not accepted here; send {expected}"),
    )
}

/// Longest `Idempotency-Key`: a UUID is 36 characters; Stripe allows 255.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`: 1..=255 visible ASCII characters, else `400`.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().unwrap_or("");
    let ok = (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    match ok {
        true => Ok(Some(key.to_string())),
        false => Err(ApiError::bad_request(
            "bad_idempotency_key",
            format!(
                "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY} visible ASCII characters (a UUID is a good key)"
            ),
        )),
    }
}

/// A submission's job, and the channel that yields its final outcome when one was asked for.
pub struct Submitted {
    /// The job: a new one, or the one an earlier request with the same `Idempotency-Key` made.
    pub job_id: Uuid,
    /// Yields the final outcome (when `wait` was set).
    pub waiter: Option<tokio::sync::oneshot::Receiver<Outcome>>,
}

/// Stores, indexes and queues an image; returns the job id and, when `wait` is set, a channel
/// that yields the job's final outcome. With an idempotency `key` already used by this
/// token within a day for the same request, nothing is stored: the earlier job is returned.
pub async fn submit(state: &AppState, upload: Upload, wait: bool, key: Option<String>) -> Result<Submitted, ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::unavailable("this front end is shutting down"));
    }
    if wait && state.waiters.len() >= state.settings.max_waiting {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_waiting",
            format!(
                "{} requests are already waiting for their answers (frontend.max_waiting); nothing was queued, \
                 retry later or submit with POST /api/jobs and poll",
                state.settings.max_waiting
            ),
        ));
    }
    if let Some(floor) = &state.settings.disk_floor {
        floor.check()?;
    }
    preprocess::inspect(&upload.bytes, state.settings.max_pixels)?;
    let job_id = Uuid::new_v4();
    let Some(key) = key else { return queue(state, upload, wait, job_id).await };
    let key = claim_key(state, &upload, &key, job_id).await?;
    match key {
        Ok(key) => {
            let queued = queue(state, upload, wait, job_id).await;
            if queued.is_err() {
                let _ = state.index.release_key(key, job_id).await;
            }
            queued
        }
        Err(earlier) => Ok(replay(state, earlier, wait).await),
    }
}

/// Claims `key` for `job_id`: `Ok(Ok(key))` to go on, `Ok(Err(job))` for a retry of `job`, or
/// `422` when the key was used for a different request.
async fn claim_key(
    state: &AppState,
    upload: &Upload,
    key: &str,
    job_id: Uuid,
) -> Result<Result<IdempotencyKey, Uuid>, ApiError> {
    let field = |f: &Option<String>| f.as_deref().unwrap_or("").as_bytes().to_vec();
    let parts = [upload.bytes.as_slice(), &field(&upload.zone), &field(&upload.client_id), &field(&upload.file)];
    let key = IdempotencyKey::new(upload.submitter.as_deref(), key, &parts);
    match state.index.claim_key(key.clone(), job_id, job::now_ms()).await? {
        Claim::New => Ok(Ok(key)),
        Claim::Existing(earlier) => Ok(Err(earlier)),
        Claim::Mismatch(earlier) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!(
                "Idempotency-Key {:?} was used within the last 24 h for job {earlier} with a different request; \
                 use a new key for a new request",
                key.key
            ),
        )),
    }
}

/// The earlier job of a retried submission; a waiter gets its outcome at once if it is final.
async fn replay(state: &AppState, job_id: Uuid, wait: bool) -> Submitted {
    tracing::info!(%job_id, "idempotent retry: the earlier job is returned");
    let waiter = wait.then(|| state.waiters.register(job_id));
    if wait {
        if let Ok(Some(record)) = state.index.job(job_id).await {
            let outcome = match record.status {
                JobStatus::Done => record.result.map(|result| Outcome::Done { result }),
                JobStatus::Failed => Some(Outcome::Failed { reason: record.error.unwrap_or_default() }),
                _ => None,
            };
            if let Some(outcome) = outcome {
                state.waiters.complete(job_id, outcome);
            }
        }
    }
    Submitted { job_id, waiter }
}

/// Store → index → queue, each undone if a later one fails, so a refused request leaves
/// nothing behind.
async fn queue(state: &AppState, upload: Upload, wait: bool, job_id: Uuid) -> Result<Submitted, ApiError> {
    let (bucket, key) = (state.settings.input_bucket.clone(), job::image_key(job_id));
    state.store.put(&bucket, &key, upload.bytes).await?;
    let now = job::now_ms();
    let new_job = NewJob {
        job_id,
        client_id: upload.client_id.clone(),
        zone: upload.zone.clone(),
        file: upload.file.clone(),
        queued_at_ms: now,
        submitter: upload.submitter.clone(),
    };
    if let Err(e) = state.index.insert(new_job).await {
        let _ = state.store.delete(&bucket, &key).await;
        return Err(e.into());
    }
    let mut waiter = wait.then(|| state.waiters.register(job_id));
    let request = JobRequest {
        job_id,
        bucket: bucket.clone(),
        key: key.clone(),
        zone: upload.zone,
        client_id: upload.client_id,
        file: upload.file,
        reply_queue: state.responses.name().to_string(),
        enqueued_at_ms: now,
        attempts: 0,
        last_error: None,
        alone: false,
    };
    let body = serde_json::to_string(&request).expect("a JobRequest always serializes");
    if let Err(e) = state.requests.send(&body, Duration::ZERO).await {
        waiter.take();
        state.waiters.forget(job_id);
        let _ = state.index.remove(job_id).await;
        let _ = state.store.delete(&bucket, &key).await;
        return Err(e.into());
    }
    // Without this mark the reconciler would queue the job a second time (harmless: the index
    // keeps the first answer).
    if let Err(e) = state.index.mark_sent(job_id, job::now_ms()).await {
        tracing::warn!(%job_id, error = %e, "queued, but the index did not record it");
    }
    state.metrics.job_queued();
    tracing::info!(%job_id, zone = request.zone.as_deref().unwrap_or(""), "job queued");
    Ok(Submitted { job_id, waiter })
}

/// `202` with the job's status URL.
pub async fn accepted(state: &AppState, job_id: Uuid) -> HttpResponse {
    let status = match state.index.job(job_id).await {
        Ok(Some(record)) => record.status,
        _ => JobStatus::Queued,
    };
    HttpResponse::Accepted().insert_header((actix_web::http::header::LOCATION, status_url(job_id))).json(Accepted {
        job_id,
        status,
        status_url: status_url(job_id),
    })
}

/// Waits for the job's outcome up to `frontend.wait_seconds` or until shutdown: the result
/// (200), the failure (422), or `202` with the status URL; the job goes on either way.
pub async fn answer(state: &AppState, job_id: Uuid, waiter: tokio::sync::oneshot::Receiver<Outcome>) -> HttpResponse {
    let mut shutdown = state.shutdown.clone();
    let outcome = tokio::select! {
        outcome = waiter => outcome.ok(),
        _ = tokio::time::sleep(state.settings.wait) => None,
        _ = shutdown.wait_for(|stop| *stop) => None,
    };
    match outcome {
        Some(Outcome::Done { result }) => HttpResponse::Ok().json(result),
        Some(Outcome::Failed { reason }) => {
            let detail = format!("job {job_id} failed: {reason}");
            actix_web::ResponseError::error_response(&ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "detection_failed",
                detail,
            ))
        }
        Some(Outcome::Started) | None => {
            state.waiters.forget(job_id);
            accepted(state, job_id).await
        }
    }
}
