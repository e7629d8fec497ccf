//! The dashboard at `/`: three static files compiled into the binary (no build step), which
//! then read the JSON API and `/api/events`. Served without a token, so that the page can load
//! and ask for one; everything it reads is behind the token when tokens are on.

use actix_web::HttpResponse;

const INDEX: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/app.js");
const STYLE: &str = include_str!("static/style.css");

/// The paths the dashboard's files are served at (open, like the probes).
pub const PATHS: [&str; 3] = ["/", "/static/app.js", "/static/style.css"];

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Revalidate, so a new binary's page is never mixed with an old script.
        .insert_header(("Cache-Control", "no-cache"))
        // The page loads nothing from elsewhere and runs only its own script.
        .insert_header(("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; style-src 'self'"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

/// The dashboard page.
pub async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

/// Its script.
pub async fn script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// Its style sheet.
pub async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}
