//! The controller's HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, and, when
//! the controller vends Nova workers their AWS credentials, `POST /v1/credentials`.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use super::metrics::Metrics;

/// What the endpoint serves besides the metrics.
#[derive(Clone, Default)]
pub struct Extras {
    /// Answers `POST /v1/credentials`.
    #[cfg(feature = "aws")]
    pub vendor: Option<Arc<crate::credentials::vendor::CredentialVendor>>,
}

/// Binds `addr` (port 0 picks one) and serves, over HTTPS with `certificates`, until the
/// returned server is stopped.
pub fn metrics_server(
    addr: &str,
    metrics: Arc<Metrics>,
    extras: Extras,
    certificates: Option<Arc<crate::tls::server::Certificates>>,
) -> anyhow::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for /metrics: {e}; pick another controller.metrics_port")
    })?;
    let bound = listener.local_addr()?;
    let data = web::Data::from(metrics);
    // One table for the server's worker threads, so an address's budget is the same whichever
    // thread answers it.
    let limiter = web::Data::new(crate::credentials::rate::RateLimiter::default());
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics_text))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }));
        #[cfg(feature = "aws")]
        let app = match &extras.vendor {
            Some(vendor) => app
                .app_data(web::Data::from(vendor.clone()))
                .app_data(limiter.clone())
                .app_data(web::JsonConfig::default().limit(4096).error_handler(|e, _| {
                    let message = format!("the body must be JSON {{instance_id, token | refresh_token}}: {e}");
                    actix_web::error::InternalError::from_response(
                        e,
                        HttpResponse::BadRequest().json(serde_json::json!({ "error": message })),
                    )
                    .into()
                }))
                .route(crate::credentials::PATH, web::post().to(vend)),
            None => app,
        };
        #[cfg(not(feature = "aws"))]
        let _ = (&extras, &limiter);
        app
    })
    .workers(1)
    .tls_handshake_timeout(crate::tls::HANDSHAKE_TIMEOUT)
    .disable_signals();
    let server = match certificates {
        Some(certificates) => server.listen_rustls_0_23(listener, certificates.server_config())?,
        None => server.listen(listener)?,
    }
    .run();
    Ok((server, bound))
}

async fn metrics_text(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(metrics.encode())
}

/// What every refused request is told: which check failed stays in the controller's log, so
/// a prober learns nothing about which servers, tokens or refresh tokens exist.
#[cfg(feature = "aws")]
const REFUSED: &str = "refused: this instance id and token do not entitle credentials";

/// `POST /v1/credentials`: 200 with the credentials, 400 for a malformed request, 403 (one
/// message for every reason) for a token that is wrong, spent or not this server's, 429 when the
/// source address sent too many requests, 503 (retry) when the cloud, the store or STS did not
/// answer.
#[cfg(feature = "aws")]
async fn vend(
    vendor: web::Data<crate::credentials::vendor::CredentialVendor>,
    limiter: web::Data<crate::credentials::rate::RateLimiter>,
    metrics: web::Data<Metrics>,
    req: actix_web::HttpRequest,
    request: web::Json<crate::credentials::CredentialsRequest>,
) -> HttpResponse {
    use crate::credentials::vendor::VendError;
    let kind = if request.token.is_some() { "token" } else { "refresh" };
    let address = req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if let Err(wait) = limiter.check(address, std::time::Instant::now()) {
        metrics.credentials(kind, "rate_limited");
        tracing::warn!(%address, "credentials requests over the rate limit");
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", wait.as_secs().max(1).to_string()))
            .json(serde_json::json!({ "error": "too many requests from this address; retry later" }));
    }
    match vendor.vend(&request).await {
        Ok(credentials) => {
            metrics.credentials(kind, "vended");
            tracing::info!(instance = %request.instance_id, kind, "credentials vended");
            HttpResponse::Ok().json(credentials)
        }
        Err(e) => {
            let (mut response, outcome, message) = match &e {
                VendError::Refused(_) => (HttpResponse::Forbidden(), "refused", REFUSED.to_string()),
                VendError::BadRequest(_) => (HttpResponse::BadRequest(), "bad_request", e.to_string()),
                VendError::Unavailable(_) => {
                    let mut r = HttpResponse::ServiceUnavailable();
                    r.insert_header(("Retry-After", "5"));
                    (r, "unavailable", "the cloud, the store or STS did not answer; retry in 5 s".to_string())
                }
            };
            metrics.credentials(kind, outcome);
            tracing::warn!(instance = %request.instance_id, %address, kind, error = %e, "credentials not vended");
            response.json(serde_json::json!({ "error": message }))
        }
    }
}
