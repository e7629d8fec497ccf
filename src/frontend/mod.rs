//! The HTTP front end (`skyburst serve`): takes images, stores and queues them, waits for the
//! workers' answers, and serves status, history and zone totals.
//!
//! # Layout
//! - [`intake`]: check → store → index → queue, undone on failure; waiting for answers.
//! - [`api`]: routes that take images; [`query`]: routes that read; [`stats`]: counts per time
//!   bucket; [`events`]: finished jobs as Server-Sent Events; [`health`]: probes.
//! - [`listener`]: the response-queue reader; [`waiters`]: requests waiting for answers.
//! - [`dashboard`]: the page at `/`; [`auth`]: bearer tokens; [`error`]: JSON errors; [`views`]: response bodies;
//!   [`fleet`]: the versioned `/api/fleet` wire format;
//!   [`openapi`]: the OpenAPI document; [`metrics`]: Prometheus metrics.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod fleet;
pub mod health;
pub mod intake;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod stats;
pub mod views;
pub mod waiters;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use tokio::sync::watch;

use crate::index::ResultIndex;
use crate::queue::Queue;
use crate::store::ObjectStore;
use error::ApiError;

/// The values handlers need from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Synchronous wait before `202`.
    pub wait: Duration,
    /// Largest body.
    pub max_body: usize,
    /// Largest image, in pixels.
    pub max_pixels: u64,
    /// Bucket for uploads.
    pub input_bucket: String,
    /// Bucket for results.
    pub output_bucket: String,
    /// This replica's name.
    pub instance_id: String,
    /// Long-poll wait of the response listener.
    pub long_poll: Duration,
}

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Config values.
    pub settings: Settings,
    /// The shared request queue.
    pub requests: Arc<dyn Queue>,
    /// Its dead-letter queue.
    pub dead_letters: Arc<dyn Queue>,
    /// This front end's response queue.
    pub responses: Arc<dyn Queue>,
    /// Images and results.
    pub store: Arc<dyn ObjectStore>,
    /// The result index.
    pub index: ResultIndex,
    /// Requests waiting for answers.
    pub waiters: waiters::Waiters,
    /// Turns true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Prometheus metrics, served at `/metrics`.
    pub metrics: Arc<metrics::FrontendMetrics>,
    /// Counts finished jobs; `/api/events` streams wake on each change.
    pub finished: Arc<watch::Sender<u64>>,
}

/// Registers every route; [`serve`] and tests share it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    dashboard::routes(cfg);
    cfg.route("/api/detect", web::post().to(api::detect))
        .route("/upload", web::post().to(api::upload))
        .route("/upload/{zone}", web::post().to(api::upload_zone))
        .route("/api/jobs", web::post().to(api::create_job))
        .route("/api/jobs/{job_id}", web::get().to(query::job_status))
        .route("/api/jobs/{job_id}/image", web::get().to(query::job_image))
        .route("/api/zones", web::get().to(query::zones))
        .route("/api/stats", web::get().to(stats::stats))
        .route("/api/events", web::get().to(events::events))
        .route("/api/results", web::get().to(query::results))
        .route("/api/queues", web::get().to(query::queues))
        .route("/api/fleet", web::get().to(query::fleet))
        .route("/api/openapi.json", web::get().to(openapi::openapi_json))
        .route("/metrics", web::get().to(metrics::metrics_text))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}

async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("no route {} {}; see /api/openapi.json", req.method(), req.path())))
}

fn query_error(err: actix_web::error::QueryPayloadError, _: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::bad_request("bad_query", format!("bad query string: {err}")).into()
}

/// Serves on `listener` until `shutdown` turns true (see [`crate::shutdown`]): then readiness
/// turns false, waiting requests get `202` with their status URL, in-flight requests finish,
/// and the server exits.
pub async fn serve(state: AppState, listener: TcpListener, tokens: auth::Tokens) -> anyhow::Result<()> {
    let mut stop = state.shutdown.clone();
    let responses = tokio::spawn(listener::run(state.clone(), state.shutdown.clone()));
    let data = web::Data::new(state);
    let tokens = web::Data::new(tokens);
    // Handlers spend their time waiting on the queue, not computing: two event loops keep up
    // with hundreds of waiting requests and leave the cores to the workers.
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(tokens.clone())
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(middleware::from_fn(auth::require_token))
            // Outermost, so requests the token check refuses are counted too.
            .wrap(middleware::from_fn(metrics::record))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        tracing::info!("shutting down: answering waiting requests with 202, then exiting");
        handle.stop(true).await;
    });
    server.await?;
    let _ = responses.await;
    Ok(())
}
