//! The front end's Prometheus metrics at `/metrics`: requests and their latency by route
//! pattern and status, queue depths (read when scraped), jobs by outcome, and detector time as
//! the workers report it in their answers.
//!
//! Routes are labelled by their pattern (`/api/jobs/{job_id}`), never by the raw path, and
//! unmatched paths share one label: a scanner probing random URLs cannot grow the series set.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::AppState;
use crate::job::Outcome;
use crate::queue::QueueDepth;

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Request latency buckets: 1 ms to 33 s, doubling. A synchronous detection takes 50–200 ms
/// on a quiet machine and up to the `wait_seconds` limit (30 s by default) under a backlog.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Detector buckets: 10 ms to 2.9 s in steps of 1.5×; one image takes ≈ 50 ms on a free core.
fn detector_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.010, 1.5, 15))
}

/// The front end's metrics.
pub struct FrontendMetrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: HistogramFamily,
    queue_messages: Family<QueueLabels, Gauge>,
    jobs_queued: Counter,
    jobs_finished: Family<OutcomeLabel, Counter>,
    detector_seconds: Histogram,
    waiting: Gauge,
    scrape_errors: Counter,
}

impl FrontendMetrics {
    /// Registers every metric under the `skyburst_` prefix.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("skyburst"),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            queue_messages: Family::default(),
            jobs_queued: Counter::default(),
            jobs_finished: Family::default(),
            detector_seconds: detector_histogram(),
            waiting: Gauge::default(),
            scrape_errors: Counter::default(),
        };
        let r = &mut m.registry;
        r.register("http_requests", "HTTP requests by method, route pattern and status", m.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            m.latency.clone(),
        );
        r.register("queue_messages", "Messages per queue and state when scraped", m.queue_messages.clone());
        r.register("jobs_queued", "Jobs this front end put on the request queue", m.jobs_queued.clone());
        r.register("jobs_finished", "Jobs answered by a worker, by outcome", m.jobs_finished.clone());
        r.register(
            "detector_seconds",
            "Detector time per finished job (preprocess, inference, postprocess) as workers report it",
            m.detector_seconds.clone(),
        );
        r.register("waiting_requests", "Requests waiting for their job's answer", m.waiting.clone());
        r.register("metrics_queue_errors", "Scrapes that could not read a queue's depth", m.scrape_errors.clone());
        m
    }

    /// Counts one request and its latency.
    fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = RouteLabels { method: method.into(), route: route.into(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// Counts a job put on the request queue.
    pub fn job_queued(&self) {
        self.jobs_queued.inc();
    }

    /// Counts a job's final answer (once: the listener calls this only when the answer moved the
    /// job to a final state, so a replayed message is not counted twice).
    pub fn job_finished(&self, outcome: &Outcome, detector_ms: f64) {
        let outcome = match outcome {
            Outcome::Started => return,
            Outcome::Done { .. } => "done",
            Outcome::Failed { .. } => "failed",
        };
        self.jobs_finished.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
        if outcome == "done" && detector_ms.is_finite() && detector_ms >= 0.0 {
            self.detector_seconds.observe(detector_ms / 1000.0);
        }
    }

    fn set_depth(&self, queue: &str, depth: QueueDepth) {
        for (state, value) in [("visible", depth.visible), ("in_flight", depth.in_flight), ("delayed", depth.delayed)] {
            let labels = QueueLabels { queue: queue.into(), state: state.into() };
            self.queue_messages.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for FrontendMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A method's label: the standard methods by name, anything else `other`, so made-up methods
/// cannot grow `/metrics` (routes are patterns or `unmatched`, statuses three digits).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// Middleware: times every request and counts it by method, route pattern and status. It wraps
/// the token check, so refused requests (401) are counted too.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method()).to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let result = next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    if let Some(state) = state {
        let (route, status) = match &result {
            // The router has matched by now: the response's request knows its pattern.
            Ok(res) => (res.request().match_pattern(), res.status().as_u16()),
            Err(e) => (None, e.as_response_error().status_code().as_u16()),
        };
        let route = route.unwrap_or_else(|| UNMATCHED.to_owned());
        state.metrics.request(&method, &route, status, started.elapsed().as_secs_f64());
    }
    result
}

/// Prometheus metrics in the OpenMetrics text format. Behind the bearer token when tokens are
/// on: Prometheus sends it with `authorization: {credentials: …}` in the scrape config.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "OpenMetrics text: requests, latency, queue depths, jobs, detector time", content_type = "application/openmetrics-text"),
    ),
    security(("bearer" = []))
)]
pub async fn metrics_text(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    for (name, queue) in
        [("requests", &state.requests), ("dead_letters", &state.dead_letters), ("responses", &state.responses)]
    {
        match queue.depth().await {
            Ok(depth) => metrics.set_depth(name, depth),
            // The other figures are still worth serving; the stale gauge keeps its last value.
            Err(e) => {
                metrics.scrape_errors.inc();
                tracing::warn!(queue = name, error = %e, "cannot read the queue depth for /metrics");
            }
        }
    }
    metrics.waiting.set(i64::try_from(state.waiters.len()).unwrap_or(i64::MAX));
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        use actix_web::http::Method;
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"FOO123").unwrap()), "other");
    }
    use crate::job::JobResult;
    use crate::result::{DetectionResult, Timings};

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let m = FrontendMetrics::new();
        m.request("POST", "/api/detect", 200, 0.05);
        m.request("GET", "/api/jobs/{job_id}", 404, 0.001);
        m.job_queued();
        m.job_finished(&Outcome::Started, 0.0);
        let detection = DetectionResult {
            id: None,
            file: None,
            objects: vec![],
            width: 1,
            height: 1,
            model: "m".into(),
            timings: Timings::default(),
        };
        let result = JobResult { job_id: uuid::Uuid::nil(), zone: None, detection };
        m.job_finished(&Outcome::Done { result }, 48.0);
        m.job_finished(&Outcome::Failed { reason: "not an image".into() }, 0.0);
        m.set_depth("requests", QueueDepth { visible: 3, in_flight: 2, delayed: 0 });
        let text = m.encode();
        for line in [
            r#"skyburst_http_requests_total{method="POST",route="/api/detect",status="200"} 1"#,
            r#"skyburst_http_requests_total{method="GET",route="/api/jobs/{job_id}",status="404"} 1"#,
            r#"skyburst_http_request_duration_seconds_bucket{le="0.064",method="POST",route="/api/detect",status="200"} 1"#,
            r#"skyburst_http_request_duration_seconds_bucket{le="0.032",method="POST",route="/api/detect",status="200"} 0"#,
            "skyburst_jobs_queued_total 1",
            r#"skyburst_jobs_finished_total{outcome="done"} 1"#,
            r#"skyburst_jobs_finished_total{outcome="failed"} 1"#,
            "skyburst_detector_seconds_count 1",
            "skyburst_detector_seconds_sum 0.048",
            r#"skyburst_queue_messages{queue="requests",state="visible"} 3"#,
            r#"skyburst_queue_messages{queue="requests",state="in_flight"} 2"#,
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains(r#"outcome="started""#), "a started job is not finished");
    }
}
