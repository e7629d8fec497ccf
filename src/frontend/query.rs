//! The routes that read: job status and image, per-zone totals, result history, queue depths.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::fleet::FleetView;
use super::views::{JobView, QueuesBody, ResultsBody, ZonesBody};
use super::AppState;
use crate::index::{JobRecord, JobStatus};
use crate::job::{self, JobResponse, Outcome};
use skyburst_detector::preprocess;

/// Most results one `GET /api/results` returns.
const MAX_LIMIT: u32 = 1000;

pub(super) fn parse_job_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::bad_request("bad_job_id", format!("{text:?} is not a job id (a UUID)")))
}

/// A job's status and result.
#[utoipa::path(
    get, path = "/api/jobs/{job_id}",
    params(("job_id" = Uuid, Path, description = "The id returned when the job was queued")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn job_status(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    job_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job_id = parse_job_id(&job_id)?;
    readable(&state, &req, job_id).await?;
    let record = state.index.job(job_id).await?;
    if let Some(record) = &record {
        if matches!(record.status, JobStatus::Done | JobStatus::Failed) {
            return Ok(HttpResponse::Ok().json(JobView::from(record.clone())));
        }
    }
    // Another replica may have queued it, or this index missed the answer: the output bucket
    // holds every final response.
    match state.store.get(&state.settings.output_bucket, &job::result_key(job_id)).await {
        Ok(bytes) => {
            if let Ok(response) = serde_json::from_slice::<JobResponse>(&bytes) {
                state.index.apply(response.clone()).await?;
                if let Some(record) = state.index.job(job_id).await? {
                    return Ok(HttpResponse::Ok().json(JobView::from(record)));
                }
                return Ok(HttpResponse::Ok().json(JobView::from(record_from(response))));
            }
        }
        Err(e) if e.is_retryable() && record.is_none() => return Err(e.into()),
        Err(_) => {}
    }
    match record {
        Some(record) => Ok(HttpResponse::Ok().json(JobView::from(record))),
        None => Err(ApiError::not_found(format!("no job {job_id}"))),
    }
}

fn record_from(response: JobResponse) -> JobRecord {
    let (status, result, error) = match response.outcome {
        Outcome::Done { result } => (JobStatus::Done, Some(result), None),
        Outcome::Failed { reason } => (JobStatus::Failed, None, Some(reason)),
        Outcome::Started => (JobStatus::Running, None, None),
    };
    JobRecord {
        job_id: response.job_id,
        client_id: result.as_ref().and_then(|r| r.detection.id.clone()),
        zone: result.as_ref().and_then(|r| r.zone.clone()),
        file: result.as_ref().and_then(|r| r.detection.file.clone()),
        status,
        queued_at_ms: response.at_ms,
        started_at_ms: None,
        finished_at_ms: Some(response.at_ms),
        worker_instance: Some(response.instance),
        worker_pool: Some(response.pool),
        model: result.as_ref().map(|r| r.detection.model.clone()),
        detector_ms: Some(response.detector_ms),
        error,
        result,
    }
}

/// `Ok` if the caller may read `job_id`: a `submit`-scoped token only its own jobs, as far as
/// this front end's index knows; for any other job it gets the same `404` as for one that does
/// not exist, so it learns nothing of other clients' jobs.
async fn readable(state: &AppState, req: &actix_web::HttpRequest, job_id: Uuid) -> Result<(), ApiError> {
    let caller = super::auth::caller(req);
    if caller.scopes.read || caller.scopes.admin {
        return Ok(());
    }
    match caller.may_read_job(state.index.submitter(job_id).await?.as_deref()) {
        true => Ok(()),
        false => Err(ApiError::not_found(format!("no job {job_id}"))),
    }
}

/// The image a job was queued with.
#[utoipa::path(
    get, path = "/api/jobs/{job_id}/image",
    params(("job_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The image bytes", content_type = "image/*"),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such job or image", body = ErrorBody),
        (status = 503, description = "The store cannot be read", body = ErrorBody),
    )
)]
pub async fn job_image(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    job_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job_id = parse_job_id(&job_id)?;
    readable(&state, &req, job_id).await?;
    let bytes = state.store.get(&state.settings.input_bucket, &job::image_key(job_id)).await?;
    let mime = preprocess::inspect(&bytes, u64::MAX)
        .map(|info| info.format.to_mime_type())
        .unwrap_or("application/octet-stream");
    Ok(HttpResponse::Ok().content_type(mime).body(bytes))
}

/// Per zone: images, objects per label (people first), the latest result; and totals.
#[utoipa::path(get, path = "/api/zones", responses((status = 200, description = "Zones", body = ZonesBody)))]
pub async fn zones(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (zones, totals) = state.index.zones().await?;
    Ok(HttpResponse::Ok().json(ZonesBody::new(zones, totals)))
}

/// Filters for `GET /api/results`.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Only this zone.
    pub zone: Option<String>,
    /// Only jobs finished at or after this time (RFC 3339, e.g. 2026-11-24T10:00:00Z).
    pub since: Option<String>,
    /// At most this many, 1..=1000; default 100.
    pub limit: Option<u32>,
}

/// Finished jobs, newest first.
#[utoipa::path(
    get, path = "/api/results", params(ResultsQuery),
    responses(
        (status = 200, description = "Results", body = ResultsBody),
        (status = 400, description = "Bad filter", body = ErrorBody),
    )
)]
pub async fn results(state: web::Data<AppState>, query: web::Query<ResultsQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if let Some(zone) = &query.zone {
        super::intake::check_zone(zone)?;
    }
    let since_ms = query.since.as_deref().map(|text| parse_time("since", "bad_since", text)).transpose()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("bad_limit", format!("limit={limit} must be in 1..={MAX_LIMIT}")));
    }
    let records = state.index.finished(query.zone, since_ms, limit).await?;
    Ok(HttpResponse::Ok().json(ResultsBody { results: records.into_iter().map(JobView::from).collect() }))
}

/// An RFC 3339 time from query parameter `name`, as ms since the Unix epoch; `code` names the
/// error.
pub(super) fn parse_time(name: &str, code: &'static str, text: &str) -> Result<i64, ApiError> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        ApiError::bad_request(code, format!("{name}={text:?} is not an RFC 3339 time ({e}); e.g. 2026-11-24T10:00:00Z"))
    })?;
    Ok(time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

/// Messages waiting, in flight and delayed on the request, dead-letter and response queues.
#[utoipa::path(get, path = "/api/queues", responses((status = 200, description = "Depths", body = QueuesBody), (status = 503, body = ErrorBody)))]
pub async fn queues(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(QueuesBody {
        requests: state.requests.depth().await?,
        dead_letters: state.dead_letters.depth().await?,
        responses: state.responses.depth().await?,
    }))
}

/// The fleet as the controller last wrote it (`control/status.json`), in the versioned
/// [`FleetView`] format: every pool and instance with state, activity and heartbeat age, and the
/// latest decisions.
#[utoipa::path(
    get, path = "/api/fleet",
    responses(
        (status = 200, description = "The fleet and the latest decisions (wire format version 1)", body = FleetView),
        (status = 404, description = "No controller has written a status yet", body = ErrorBody),
        (status = 503, description = "The store cannot be read, or the status is not one this version reads", body = ErrorBody),
    )
)]
pub async fn fleet(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let bytes = match state.store.get(&state.settings.output_bucket, crate::control::STATUS).await {
        Ok(bytes) => bytes,
        Err(crate::store::StoreError::NotFound { .. }) => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "no_fleet_status",
                "no controller has written a fleet status yet; start `skyburst controller` (or `skyburst up` without --workers)",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let status: crate::control::FleetStatus = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unreadable_fleet_status",
            format!(
                "the controller's status cannot be read ({e}); a controller of another version may have written it"
            ),
        )
    })?;
    Ok(HttpResponse::Ok().json(FleetView::from(status)))
}
