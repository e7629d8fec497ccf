//! The dashboard at `/`: three static files compiled into the binary (no build step), which
//! then read the JSON API and `/api/events`. Served without a token, so that the page can load
//! and ask for one; everything it reads is behind the token when tokens are on.

use actix_web::{web, HttpResponse};

/// (path, content type, contents) of each file.
const FILES: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("static/index.html")),
    ("/static/app.js", "text/javascript; charset=utf-8", include_str!("static/app.js")),
    ("/static/style.css", "text/css; charset=utf-8", include_str!("static/style.css")),
];

/// Whether `path` is one of the dashboard's files (open, like the probes).
pub fn serves(path: &str) -> bool {
    FILES.iter().any(|(p, _, _)| *p == path)
}

/// Registers a GET route per file.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for (path, content_type, body) in FILES {
        cfg.service(super::resource(path, "GET").route(web::get().to(move || async move { file(content_type, body) })));
    }
}

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Revalidate, so a new binary's page is never mixed with an old script.
        .insert_header(("Cache-Control", "no-cache"))
        // The page loads nothing from elsewhere and runs only its own script.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob:; style-src 'self'; frame-ancestors 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}
