//! The routes that take images: the CloudDetect JSON API, the classic multipart upload (with
//! zones) and the asynchronous job API.

use actix_multipart::Multipart;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::ToSchema;

use super::body::{self, Bounded, Limits};
use super::error::{ApiError, ErrorBody};
use super::intake::{self, check_zone, Upload, MAX_CLIENT_ID};
use super::views::Accepted;
use super::{AppState, Settings};
use crate::job::JobResult;

/// The CloudDetect request body. Borrowed from the request bytes: the image is most of a
/// 250 kB body and copying it costs more than parsing it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DetectRequest<'a> {
    /// The client's id (e.g. a UUID), echoed back; never used as a key. Required by
    /// `/api/detect`, optional for `/api/jobs`.
    pub id: Option<String>,
    /// The image file, base64 (standard alphabet; line breaks and a `data:` prefix allowed).
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub image: std::borrow::Cow<'a, str>,
    /// Upload zone (camera), optional.
    pub zone: Option<String>,
}

const JSON: &str = "application/json";
const MULTIPART: &str = "multipart/form-data";

fn parse_json(body: &[u8], require_id: bool) -> Result<Upload, ApiError> {
    let request: DetectRequest = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { "bad_request_fields" } else { "bad_json" };
        ApiError::bad_request(
            code,
            format!("the body is not a valid request: {e}; expected {{\"id\": \"...\", \"image\": \"<base64>\"}}"),
        )
    })?;
    let client_id = match request.id {
        Some(id) if id.is_empty() || id.len() > MAX_CLIENT_ID => {
            return Err(ApiError::bad_request("bad_id", format!("\"id\" must be 1..={MAX_CLIENT_ID} characters")))
        }
        Some(id) => Some(id),
        None if require_id => {
            return Err(ApiError::bad_request(
                "missing_id",
                "the request has no \"id\"; send {\"id\": \"<uuid>\", \"image\": \"<base64>\"}",
            ))
        }
        None => None,
    };
    if let Some(zone) = &request.zone {
        check_zone(zone)?;
    }
    Ok(Upload { bytes: decode_base64(&request.image)?, client_id, zone: request.zone, file: None, submitter: None })
}

fn decode_base64(text: &str) -> Result<Vec<u8>, ApiError> {
    let text = match text.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text,
    };
    // Line-wrapped base64 (76 columns, as many encoders write it) is accepted; most bodies have
    // no whitespace and are decoded in place.
    let compact: std::borrow::Cow<'_, [u8]> = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        text.bytes().filter(|b| !b.is_ascii_whitespace()).collect::<Vec<u8>>().into()
    } else {
        text.as_bytes().into()
    };
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| ApiError::bad_request("bad_base64", format!("\"image\" is not valid base64: {e}")))
}

async fn parse_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    settings: &Settings,
    zone: Option<String>,
) -> Result<Upload, ApiError> {
    let limits = Limits::of(settings);
    intake::declared_length(req, limits.max)?;
    let boundary = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(body::boundary);
    let (payload, verdict) = Bounded::new(payload, limits, boundary.as_deref());
    let malformed = |e: actix_multipart::MultipartError| {
        verdict
            .error()
            .unwrap_or_else(|| ApiError::bad_request("bad_multipart", format!("malformed multipart body: {e}")))
    };
    let mut form = Multipart::new(req.headers(), payload);
    let submitter = super::auth::caller(req).id;
    let mut upload = Upload { bytes: Vec::new(), client_id: None, zone, file: None, submitter };
    let mut files = 0;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(malformed)?;
        let name = field.name().unwrap_or("").to_string();
        let filename = field.content_disposition().and_then(|cd| cd.get_filename()).map(str::to_string);
        if let Some(name) = filename.as_deref().filter(|n| n.len() > settings.max_file_name) {
            return Err(ApiError::bad_request(
                "file_name_too_long",
                format!(
                    "the file name is {} bytes, above the limit of {} (frontend.max_file_name_bytes); rename the file",
                    name.len(),
                    settings.max_file_name
                ),
            ));
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.next().await {
            value.extend_from_slice(&chunk.map_err(malformed)?);
        }
        if filename.is_some() || name == "myfile" {
            files += 1;
            upload.bytes = value;
            upload.file = filename.filter(|f| !f.is_empty());
        } else if name == "zone" && upload.zone.is_none() {
            let zone = String::from_utf8_lossy(&value).trim().to_string();
            check_zone(&zone)?;
            upload.zone = Some(zone);
        } else if name == "id" {
            upload.client_id = Some(String::from_utf8_lossy(&value).chars().take(MAX_CLIENT_ID).collect());
        }
    }
    match files {
        1 => Ok(upload),
        0 => Err(ApiError::bad_request("missing_file", "the form has no file; send one image as field \"myfile\"")),
        n => {
            Err(ApiError::bad_request("too_many_files", format!("the form has {n} files; send one image per request")))
        }
    }
}

/// Detect objects in one base64 image and wait for the result (CloudDetect).
#[utoipa::path(
    post, path = "/api/detect", request_body = DetectRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key (per token) within 24 h returns the job the first request made, never a second one; 1..=255 visible ASCII characters, e.g. a UUID")),
    responses(
        (status = 200, description = "The result", body = JobResult),
        (status = 202, description = "Still running after frontend.wait_seconds", body = Accepted),
        (status = 400, description = "Bad JSON, base64, id or image", body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "The worker could not process the image (or it failed: dead_lettered, deadline), or the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 503, description = "Store or queue down; retry later", body = ErrorBody),
        (status = 507, description = "Free space in the data directory is below store.min_free_mb; uploads resume when space is freed", body = ErrorBody),
    )
)]
pub async fn detect(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    intake::require_media_type(&req, JSON)?;
    let key = intake::idempotency_key(&req)?;
    let body = intake::read_body(&req, payload, Limits::of(&state.settings)).await?;
    let upload = Upload { submitter: super::auth::caller(&req).id, ..parse_json(&body, true)? };
    let submitted = intake::submit(&state, upload, true, key).await?;
    Ok(intake::answer(&state, submitted.job_id, submitted.waiter.expect("a waiter was asked for")).await)
}

/// Upload one image as a multipart form (field `myfile` or any single file field) and wait.
#[utoipa::path(
    post, path = "/upload",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key (per token) within 24 h returns the job the first request made, never a second one; 1..=255 visible ASCII characters, e.g. a UUID")),
    request_body(content = String, content_type = "multipart/form-data", description = "one image file, optional `zone` and `id` fields"),
    responses(
        (status = 200, description = "The result, with the file name", body = JobResult),
        (status = 202, description = "Still running", body = Accepted),
        (status = 400, description = "No file, several files, or not an image", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = ErrorBody),
        (status = 422, description = "The worker could not process the image (or it failed: dead_lettered, deadline), or the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 503, description = "Store or queue down", body = ErrorBody),
        (status = 507, description = "Free space in the data directory is below store.min_free_mb; uploads resume when space is freed", body = ErrorBody),
    )
)]
pub async fn upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload_to(state, req, payload, None).await
}

/// Upload one image to a zone (camera) and wait.
#[utoipa::path(
    post, path = "/upload/{zone}",
    params(("zone" = String, Path, description = "1..=32 of A-Z a-z 0-9 - _"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key (per token) within 24 h returns the job the first request made, never a second one; 1..=255 visible ASCII characters, e.g. a UUID")),
    request_body(content = String, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The result", body = JobResult),
        (status = 202, description = "Still running", body = Accepted),
        (status = 400, description = "Bad zone, no file, or not an image", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = ErrorBody),
        (status = 422, description = "The worker could not process the image (or it failed: dead_lettered, deadline), or the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 503, description = "Store or queue down", body = ErrorBody),
        (status = 507, description = "Free space in the data directory is below store.min_free_mb; uploads resume when space is freed", body = ErrorBody),
    )
)]
pub async fn upload_zone(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    zone: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let zone = zone.into_inner();
    check_zone(&zone)?;
    upload_to(state, req, payload, Some(zone)).await
}

async fn upload_to(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    zone: Option<String>,
) -> Result<HttpResponse, ApiError> {
    intake::require_media_type(&req, MULTIPART)?;
    let key = intake::idempotency_key(&req)?;
    let upload = parse_multipart(&req, payload, &state.settings, zone).await?;
    let submitted = intake::submit(&state, upload, true, key).await?;
    Ok(intake::answer(&state, submitted.job_id, submitted.waiter.expect("a waiter was asked for")).await)
}

/// Queue an image (JSON like `/api/detect`, or multipart like `/upload`) and return at once.
#[utoipa::path(
    post, path = "/api/jobs", request_body = DetectRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key (per token) within 24 h returns the job the first request made, never a second one; 1..=255 visible ASCII characters, e.g. a UUID")),
    responses(
        (status = 202, description = "Queued", body = Accepted),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another request", body = ErrorBody),
        (status = 503, description = "Store or queue down", body = ErrorBody),
        (status = 507, description = "Free space in the data directory is below store.min_free_mb; uploads resume when space is freed", body = ErrorBody),
    )
)]
pub async fn create_job(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let media = intake::media_type(&req);
    let key = intake::idempotency_key(&req)?;
    let upload = match media.as_str() {
        JSON => {
            let body = intake::read_body(&req, payload, Limits::of(&state.settings)).await?;
            Upload { submitter: super::auth::caller(&req).id, ..parse_json(&body, false)? }
        }
        MULTIPART => parse_multipart(&req, payload, &state.settings, None).await?,
        other => return Err(intake::wrong_media_type(other, "application/json or multipart/form-data")),
    };
    let submitted = intake::submit(&state, upload, false, key).await?;
    Ok(intake::accepted(&state, submitted.job_id).await)
}
