//! Liveness and readiness.

use actix_web::{web, HttpResponse};

use super::error::ErrorBody;
use super::views::Health;
use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// Ready for traffic: not shutting down, the queue answers and the store takes a write.
#[utoipa::path(
    get, path = "/readyz",
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Not ready", body = ErrorBody))
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let problem = if *state.shutdown.borrow() {
        Some("shutting down".to_string())
    } else if let Err(e) = state.requests.depth().await {
        Some(e.to_string())
    } else {
        let key = format!("control/readyz/{}", state.settings.instance_id);
        let stamp = crate::job::now_ms().to_string().into_bytes();
        state.store.put(&state.settings.output_bucket, &key, stamp).await.err().map(|e| e.to_string())
    };
    match problem {
        None => HttpResponse::Ok().json(Health { status: "ok".into() }),
        Some(problem) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(ErrorBody { error: "not_ready".into(), detail: problem }),
    }
}
