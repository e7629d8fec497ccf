//! API errors: every failure is JSON `{"error", "detail"}` with the status that tells the
//! client what to do (fix the request: 4xx; retry later: 503 with `Retry-After`).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::index::IndexError;
use crate::queue::QueueError;
use crate::store::StoreError;
use skyburst_detector::ImageError;

/// Seconds a client should wait before retrying after a 503: long enough for a restarted
/// store or queue (a few seconds locally), short enough not to stall a camera's upload loop.
const RETRY_AFTER_SECONDS: u64 = 5;

/// The longest `detail` an error answers, in bytes: enough for any message of ours with the
/// value that caused it, never a client's whole input echoed back (a 9 MB zone name, say).
pub const MAX_DETAIL: usize = 512;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A short machine-readable code, e.g. `bad_base64`.
    pub error: String,
    /// What went wrong and what to do about it.
    pub detail: String,
}

/// An error answered to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {code}: {detail}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// Close the connection after answering: the body was cut before its end, so what follows
    /// on the connection is not a request.
    close: bool,
}

impl ApiError {
    /// An error with any status; a `detail` longer than [`MAX_DETAIL`] is cut, saying so.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: truncate(detail.into(), MAX_DETAIL), close: false }
    }

    /// The same error, answered with `Connection: close`.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// 400: the request is wrong; `code` names what.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 503: a dependency is down; nothing was kept, retry after a while.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{detail}; nothing was stored or queued, retry in {RETRY_AFTER_SECONDS} s"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.close {
            response.force_close();
        }
        response.json(ErrorBody { error: self.code.to_string(), detail: self.detail.clone() })
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Empty => Self::bad_request("empty_image", e.to_string()),
            ImageError::NotAnImage(_) => Self::bad_request("not_an_image", e.to_string()),
            ImageError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_pixels", e.to_string()),
            ImageError::TooSmall { .. } => Self::bad_request("image_too_small", e.to_string()),
            ImageError::Corrupt(_) => Self::bad_request("corrupt_image", e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(e.to_string()),
            _ => Self::unavailable(e),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        Self::unavailable(e)
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        Self::unavailable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(400), MAX_DETAIL);
        assert!(cut.len() <= MAX_DETAIL && cut.ends_with('…'), "{} bytes", cut.len());
        let e = ApiError::bad_request("bad_zone", format!("zone {:?} is bad", "x".repeat(9 << 20)));
        assert!(e.detail.len() <= MAX_DETAIL);
    }
}
