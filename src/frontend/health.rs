//! Liveness and readiness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use tokio::sync::Mutex;

use super::error::ErrorBody;
use super::views::Health;
use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// How long a readiness probe's answer is reused: however often `/readyz` is called (a load
/// balancer per second, a flood), the store takes at most one write and the queue one count a
/// second.
const PROBE_TTL: Duration = Duration::from_secs(1);

/// The latest readiness probe, shared by every `/readyz` call: one probe runs at a time and the
/// others wait for its answer.
#[derive(Clone, Default)]
pub struct ProbeCache {
    latest: Arc<Mutex<Option<Probe>>>,
}

/// When a probe ran, and the problem it found.
type Probe = (Instant, Option<String>);

impl ProbeCache {
    /// The queue and store problem, if any, probing at most once per [`PROBE_TTL`].
    async fn problem(&self, state: &AppState) -> Option<String> {
        let mut latest = self.latest.lock().await;
        if let Some((_, problem)) = latest.as_ref().filter(|(at, _)| at.elapsed() < PROBE_TTL) {
            return problem.clone();
        }
        let problem = probe(state).await;
        *latest = Some((Instant::now(), problem.clone()));
        problem
    }
}

/// Checks the free space, counts the request queue and writes a stamp to the store.
async fn probe(state: &AppState) -> Option<String> {
    if let Some(problem) = state.settings.disk_floor.as_ref().and_then(|floor| floor.problem()) {
        return Some(problem);
    }
    if let Err(e) = state.requests.depth().await {
        return Some(e.to_string());
    }
    let key = format!("control/readyz/{}", state.settings.instance_id);
    let stamp = crate::job::now_ms().to_string().into_bytes();
    state.store.put(&state.settings.output_bucket, &key, stamp).await.err().map(|e| e.to_string())
}

/// Ready for traffic: not shutting down, free space above `store.min_free_mb`, the queue
/// answers and the store takes a write (probed at most once a second).
#[utoipa::path(
    get, path = "/readyz",
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Not ready", body = ErrorBody))
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let problem =
        if *state.shutdown.borrow() { Some("shutting down".to_string()) } else { state.probe.problem(&state).await };
    match problem {
        None => HttpResponse::Ok().json(Health { status: "ok".into() }),
        Some(problem) => HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "5")).json(ErrorBody {
            error: "not_ready".into(),
            detail: super::error::truncate(problem, super::error::MAX_DETAIL),
        }),
    }
}
