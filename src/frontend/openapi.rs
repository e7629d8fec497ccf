//! The OpenAPI document, served at `/api/openapi.json`: every route and schema.

use actix_web::HttpResponse;
use utoipa::OpenApi;

use super::{admin, api, events, health, metrics, query, stats};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Skyburst", description = "Elastic image recognition: YOLOv3-tiny (COCO) behind a queue."),
    paths(
        api::detect, api::upload, api::upload_zone, api::create_job,
        query::job_status, query::job_image, query::zones, stats::stats, events::events, query::results, query::queues, query::fleet,
        health::healthz, health::readyz, openapi_json, metrics::metrics_text,
        admin::queues, admin::dead_letters, admin::redrive, admin::drop_message, admin::purge_queue,
        admin::purge_store, admin::delete_job,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
