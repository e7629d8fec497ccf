//! Optional bearer-token authentication. Tokens are compared by their sha256 digests so the
//! comparison takes the same time whichever byte differs.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Routes a load balancer or orchestrator probes without credentials.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];
/// The one route that also takes the token as `?access_token=`: a browser's `EventSource`
/// cannot send headers.
const QUERY_TOKEN_PATH: &str = "/api/events";

/// The accepted tokens' digests; empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    /// From the configured tokens.
    pub fn new(tokens: &[String]) -> Self {
        Self(tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect())
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.iter().fold(false, |found, t| found | (*t == digest))
    }
}

/// `?access_token=` on [`QUERY_TOKEN_PATH`].
fn query_token(req: &ServiceRequest) -> Option<String> {
    if req.path() != QUERY_TOKEN_PATH {
        return None;
    }
    let query = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string()).ok()?;
    query.get("access_token").cloned()
}

/// Rejects requests without a valid `Authorization: Bearer <token>` when tokens are set.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let tokens = req.app_data::<web::Data<Tokens>>().map(|t| t.get_ref().clone()).unwrap_or_default();
    let open = OPEN_PATHS.contains(&req.path()) || super::dashboard::serves(req.path());
    if !tokens.enabled() || open {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or_else(|| query_token(&req));
    match presented {
        Some(token) if tokens.accepts(&token) => next.call(req).await.map(ServiceResponse::map_into_boxed_body),
        _ => {
            let error = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send `Authorization: Bearer <token>` with one of the tokens in frontend.tokens",
            );
            Ok(req.into_response(error.error_response()))
        }
    }
}
