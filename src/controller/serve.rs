//! The controller's HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz`.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use super::metrics::Metrics;

/// Binds `addr` (port 0 picks one) and serves until the returned server is stopped.
pub fn metrics_server(
    addr: &str,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for /metrics: {e}; pick another controller.metrics_port")
    })?;
    let bound = listener.local_addr()?;
    let data = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics_text))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
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
