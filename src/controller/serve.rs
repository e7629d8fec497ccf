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

/// Binds `addr` (port 0 picks one) and serves until the returned server is stopped.
pub fn metrics_server(
    addr: &str,
    metrics: Arc<Metrics>,
    extras: Extras,
) -> anyhow::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for /metrics: {e}; pick another controller.metrics_port")
    })?;
    let bound = listener.local_addr()?;
    let data = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics_text))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }));
        #[cfg(feature = "aws")]
        let app = match &extras.vendor {
            Some(vendor) => app
                .app_data(web::Data::from(vendor.clone()))
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
        let _ = &extras;
        app
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, bound))
}

async fn metrics_text(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(metrics.encode())
}

/// `POST /v1/credentials`: 200 with the credentials, 400 for a malformed request, 403 for a
/// token that is wrong, spent or not this server's, 503 (retry) when the cloud, the store or
/// STS did not answer.
#[cfg(feature = "aws")]
async fn vend(
    vendor: web::Data<crate::credentials::vendor::CredentialVendor>,
    metrics: web::Data<Metrics>,
    request: web::Json<crate::credentials::CredentialsRequest>,
) -> HttpResponse {
    use crate::credentials::vendor::VendError;
    let kind = if request.token.is_some() { "token" } else { "refresh" };
    match vendor.vend(&request).await {
        Ok(credentials) => {
            metrics.credentials(kind, "vended");
            tracing::info!(instance = %request.instance_id, kind, "credentials vended");
            HttpResponse::Ok().json(credentials)
        }
        Err(e) => {
            let (mut response, outcome) = match &e {
                VendError::Refused(_) => (HttpResponse::Forbidden(), "refused"),
                VendError::BadRequest(_) => (HttpResponse::BadRequest(), "bad_request"),
                VendError::Unavailable(_) => {
                    let mut r = HttpResponse::ServiceUnavailable();
                    r.insert_header(("Retry-After", "5"));
                    (r, "unavailable")
                }
            };
            metrics.credentials(kind, outcome);
            tracing::warn!(instance = %request.instance_id, kind, error = %e, "credentials not vended");
            response.json(serde_json::json!({ "error": e.to_string() }))
        }
    }
}
