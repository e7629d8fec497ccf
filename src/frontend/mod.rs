//! The HTTP front end (`skyburst serve`): takes images, stores and queues them, waits for the
//! workers' answers, and serves status, history and zone totals.
//!
//! # Layout
//! - [`intake`]: check → store → index → queue, undone on failure; waiting for answers;
//!   [`body`]: request bodies within their size, rate and multipart framing limits.
//! - [`api`]: routes that take images; [`query`]: routes that read; [`stats`]: counts per time
//!   bucket; [`events`]: finished jobs as Server-Sent Events; [`health`]: probes.
//! - [`listener`]: the response-queue reader; [`waiters`]: requests waiting for answers.
//! - [`dead_letters`]: fails dead-lettered jobs; [`upkeep`]: the reconciler and retention;
//!   [`disk`]: the free-space floor below which uploads are refused.
//! - [`dashboard`]: the page at `/`; [`auth`]: bearer tokens; [`error`]: JSON errors; [`views`]: response bodies;
//!   [`fleet`]: the versioned `/api/fleet` wire format;
//!   [`openapi`]: the OpenAPI document; [`metrics`]: Prometheus metrics.
//! - [`admin`]: the administration routes under `/api/admin/` (queues, dead letters, purges,
//!   deleting a job).

pub mod admin;
pub mod api;
pub mod auth;
pub mod body;
pub mod dashboard;
pub mod dead_letters;
pub mod disk;
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
pub mod upkeep;
pub mod views;
pub mod waiters;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{middleware, web, App, HttpServer, ResponseError};
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
    /// How long a body may take: this, plus its size at `body_min_rate`.
    pub body_grace: Duration,
    /// Slowest body accepted after the grace period, bytes per second.
    pub body_min_rate: u64,
    /// Longest multipart file name, in bytes.
    pub max_file_name: usize,
    /// Synchronous requests waiting for an answer at once.
    pub max_waiting: usize,
    /// Open connections per event loop.
    pub max_connections: usize,
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
    /// Deliveries before the dead-letter queue (`queue.max_receives`), for the reason a
    /// dead-lettered job shows.
    pub max_receives: u32,
    /// What the upkeep task keeps and for how long.
    pub retention: upkeep::Retention,
    /// Uploads are refused with `507` below this much free space in the data directory.
    pub disk_floor: Option<disk::Floor>,
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
    /// Other front ends' response queues, by name: a dead-lettered job's answer goes to the
    /// front end that queued it.
    pub replies: crate::worker::ReplyQueues,
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
    /// The latest readiness probe.
    pub probe: health::ProbeCache,
}

/// Registers every route; [`serve`] and tests share it. Each path answers its methods, and
/// `405` with `Allow` to any other.
pub fn routes(cfg: &mut web::ServiceConfig) {
    dashboard::routes(cfg);
    cfg.service(resource("/api/detect", "POST").route(web::post().to(api::detect)))
        .service(resource("/upload", "POST").route(web::post().to(api::upload)))
        .service(resource("/upload/{zone}", "POST").route(web::post().to(api::upload_zone)))
        .service(resource("/api/jobs", "POST").route(web::post().to(api::create_job)));
    cfg.service(resource("/api/jobs/{job_id}", "GET").route(web::get().to(query::job_status)))
        .service(resource("/api/jobs/{job_id}/image", "GET").route(web::get().to(query::job_image)))
        .service(resource("/api/zones", "GET").route(web::get().to(query::zones)))
        .service(resource("/api/stats", "GET").route(web::get().to(stats::stats)))
        .service(resource("/api/events", "GET").route(web::get().to(events::events)))
        .service(resource("/api/results", "GET").route(web::get().to(query::results)))
        .service(resource("/api/queues", "GET").route(web::get().to(query::queues)))
        .service(resource("/api/fleet", "GET").route(web::get().to(query::fleet)))
        .service(resource("/api/openapi.json", "GET").route(web::get().to(openapi::openapi_json)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics::metrics_text)))
        .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)));
    admin::routes(cfg);
}

/// A path whose only method is `allow`: any other gets `405` with `Allow` and a JSON body.
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: actix_web::HttpRequest| async move {
        let detail = format!("{} is not allowed on {}; use {allow}", req.method(), req.path());
        let mut response = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail).error_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    }))
}

async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("no route {} {}; see /api/openapi.json", req.method(), req.path())))
}

fn query_error(err: actix_web::error::QueryPayloadError, _: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::bad_request("bad_query", format!("bad query string: {err}")).into()
}

/// Serves on `listener` (HTTPS with `certificates`, which are reloaded as they change) until
/// `shutdown` turns true (see [`crate::shutdown`]): then readiness
/// turns false, waiting requests get `202` with their status URL, in-flight requests finish,
/// and the server exits.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    tokens: auth::Tokens,
    certificates: Option<Arc<crate::tls::server::Certificates>>,
) -> anyhow::Result<()> {
    let mut stop = state.shutdown.clone();
    let max_connections = state.settings.max_connections;
    let responses = tokio::spawn(listener::run(state.clone(), state.shutdown.clone()));
    let dead_letters = tokio::spawn(dead_letters::run(state.clone(), state.shutdown.clone()));
    let upkeep = tokio::spawn(upkeep::run(state.clone(), state.shutdown.clone()));
    let data = web::Data::new(state);
    let guard = web::Data::new(auth::LoopbackHostOnly(!tokens.enabled() && listener.local_addr()?.ip().is_loopback()));
    let tokens = web::Data::new(tokens);
    // Handlers spend their time waiting on the queue, not computing: two event loops keep up
    // with hundreds of waiting requests and leave the cores to the workers.
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(tokens.clone())
            .app_data(guard.clone())
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(middleware::from_fn(auth::require_token))
            // Outermost, so requests the token check refuses are counted too.
            .wrap(middleware::from_fn(metrics::record))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(2)
    .max_connections(max_connections)
    .tls_handshake_timeout(crate::tls::HANDSHAKE_TIMEOUT)
    .disable_signals()
    .shutdown_timeout(10);
    let server = match certificates {
        Some(certificates) => {
            tokio::spawn(certificates.clone().watch("frontend", None, stop.clone()));
            server.listen_rustls_0_23(listener, certificates.server_config())?
        }
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        tracing::info!("shutting down: answering waiting requests with 202, then exiting");
        handle.stop(true).await;
    });
    server.await?;
    let _ = tokio::join!(responses, dead_letters, upkeep);
    Ok(())
}
