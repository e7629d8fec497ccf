//! Every bad request gets a clear JSON error with the right status, and leaves no image, job
//! message or index row behind.

use base64::Engine;
use serde_json::json;

use crate::support::service::{detect_body, image_bytes, one_at_a_time, Service};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A PNG header declaring 50000×50000 pixels: 7.5 GB once decoded.
fn png_bomb() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 50_000, 50_000);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    // One tiny IDAT chunk (zlib of a single zero byte): a complete-looking file of 60 bytes.
    writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]).unwrap();
    drop(writer);
    out
}

#[test]
fn bad_requests_get_clear_errors_and_leave_nothing_behind() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[("FRONTEND__MAX_BODY_BYTES", "600000")]);
    let bus = image_bytes("bus.jpg");
    let truncated = bus[..bus.len() / 2].to_vec();
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("/api/detect", "text/plain", b"hello".to_vec(), 415, "unsupported_media_type"),
        ("/api/detect", "application/json", Vec::new(), 400, "empty_body"),
        ("/api/detect", "application/json", b"{\"id\": \"x\", ".to_vec(), 400, "bad_json"),
        ("/api/detect", "application/json", json(json!({"id": "x", "image": "not base64!"})), 400, "bad_base64"),
        ("/api/detect", "application/json", json(json!({"image": b64(&bus)})), 400, "missing_id"),
        (
            "/api/detect",
            "application/json",
            json(json!({"id": "x", "image": b64(b"GIF89 is not enough")})),
            400,
            "not_an_image",
        ),
        ("/api/detect", "application/json", json(json!({"id": "x", "image": b64(&truncated)})), 400, "corrupt_image"),
        (
            "/api/detect",
            "application/json",
            json(json!({"id": "x", "image": b64(&png_bomb())})),
            413,
            "too_many_pixels",
        ),
        (
            "/api/detect",
            "application/json",
            json(json!({"id": "x", "image": b64(&vec![0u8; 700_000])})),
            413,
            "body_too_large",
        ),
        ("/api/jobs", "application/xml", b"<image/>".to_vec(), 415, "unsupported_media_type"),
        (
            "/api/jobs",
            "application/json",
            json(json!({"id": "x", "image": b64(&bus), "zone": "../etc"})),
            400,
            "bad_zone",
        ),
        ("/upload", "application/json", b"{}".to_vec(), 415, "unsupported_media_type"),
    ];
    for (path, content_type, body, status, code) in cases {
        let (got, _, answer) = service.post(path, content_type, body);
        assert_eq!((got, answer["error"].as_str()), (status, Some(code)), "{path} {content_type}: {answer}");
        assert!(answer["detail"].as_str().is_some_and(|d| d.len() > 10), "{answer}");
        service.assert_nothing_kept();
    }
    let (status, answer) = service.upload("/upload/zone%20one", "myfile", "bus.jpg", bus.clone());
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_zone")), "{answer}");
    let (status, answer) = service.upload("/upload", "myfile", "notes.txt", b"plain text".to_vec());
    assert_eq!((status, answer["error"].as_str()), (400, Some("not_an_image")), "{answer}");
    let form = reqwest::blocking::multipart::Form::new().text("zone", "1");
    let response =
        reqwest::blocking::Client::new().post(format!("{}/upload", service.url)).multipart(form).send().unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.json::<serde_json::Value>().unwrap()["error"], "missing_file");
    service.assert_nothing_kept();
    assert_eq!(service.get("/api/jobs/not-a-uuid").0, 400);
    assert_eq!(service.get("/api/jobs/67e55044-10b1-426f-9247-bb680e5fe0c8").0, 404);
    assert_eq!(service.get("/api/results?since=yesterday").1["error"], "bad_since");
    assert_eq!(service.get("/api/results?limit=0").1["error"], "bad_limit");
    assert_eq!(service.get("/no/such/route").1["error"], "not_found");
}

#[test]
fn an_unwritable_store_gives_503_with_retry_after_and_loses_nothing() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    // A file where the bucket's directory should be: unwritable even for root, unlike chmod.
    let bucket = service.bucket("skyburst-input");
    std::fs::create_dir_all(bucket.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&bucket);
    std::fs::write(&bucket, b"").unwrap();
    let body = serde_json::to_vec(&detect_body("c", "bus.jpg")).unwrap();
    let (status, retry_after, answer) = service.post("/api/detect", "application/json", body.clone());
    assert_eq!(status, 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(answer["detail"].as_str().unwrap().contains("retry"), "{answer}");
    assert_eq!(service.get("/readyz").0, 200, "the output bucket is still writable");
    assert_eq!(service.queued(), 0);
    assert_eq!(service.index_rows(), 0);
    // Repaired, the same request goes through.
    std::fs::remove_file(&bucket).unwrap();
    service.start_worker("w1");
    let (status, _, answer) = service.post("/api/detect", "application/json", body);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn tokens_guard_every_route_but_the_probes() {
    let _heavy = one_at_a_time();
    let token = "test-token-0123456789";
    let service = Service::start(&[("FRONTEND__TOKENS", token)]);
    let client = reqwest::blocking::Client::new();
    let zones = client.get(format!("{}/api/zones", service.url)).send().unwrap();
    assert_eq!(zones.status().as_u16(), 401);
    assert_eq!(zones.headers()["www-authenticate"], "Bearer");
    let wrong = client.get(format!("{}/api/zones", service.url)).bearer_auth("wrong-token-0123456789").send().unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client.get(format!("{}/api/zones", service.url)).bearer_auth(token).send().unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(service.get("/healthz").0, 200);
    assert_eq!(service.get("/readyz").0, 200);
    // The dashboard's files load without one (the page then asks for it); its event stream
    // takes the token as a query parameter, since EventSource cannot send headers.
    for path in ["/", "/static/app.js", "/static/style.css"] {
        assert_eq!(client.get(format!("{}{path}", service.url)).send().unwrap().status().as_u16(), 200, "{path}");
    }
    let events = |query: &str| client.get(format!("{}/api/events{query}", service.url)).send().unwrap().status();
    assert_eq!(events("").as_u16(), 401);
    assert_eq!(events("?access_token=wrong-token-0123456789").as_u16(), 401);
    assert_eq!(events(&format!("?access_token={token}")).as_u16(), 200);
    let elsewhere = client.get(format!("{}/api/zones?access_token={token}", service.url)).send().unwrap();
    assert_eq!(elsewhere.status().as_u16(), 401, "only the event stream takes a token in its URL");
    // Metrics are behind the token too (Prometheus sends it); refused requests are counted.
    assert_eq!(client.get(format!("{}/metrics", service.url)).send().unwrap().status().as_u16(), 401);
    let metrics = client.get(format!("{}/metrics", service.url)).bearer_auth(token).send().unwrap().text().unwrap();
    let refused = r#"skyburst_http_requests_total{method="GET",route="/api/zones",status="401"} 3"#;
    assert!(metrics.contains(refused), "{refused} missing from\n{metrics}");
}

#[test]
fn a_public_address_without_tokens_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let (code, _, err) = crate::support::run(crate::support::skyburst().args([
        "--data-dir",
        data.path().to_str().unwrap(),
        "serve",
        "--bind",
        "0.0.0.0",
        "--port",
        "0",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("refusing to listen on 0.0.0.0 without authentication"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
}

#[test]
fn the_openapi_document_covers_every_route() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[]);
    let (status, doc) = service.get("/api/openapi.json");
    assert_eq!(status, 200);
    for path in [
        "/api/detect",
        "/upload",
        "/upload/{zone}",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/image",
        "/api/zones",
        "/api/stats",
        "/api/events",
        "/api/results",
        "/api/queues",
        "/api/fleet",
        "/healthz",
        "/readyz",
        "/api/openapi.json",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    for schema in [
        "JobResult",
        "DetectedObject",
        "Rectangle",
        "ErrorBody",
        "Accepted",
        "JobView",
        "ZonesBody",
        "StatsBody",
        "FleetView",
    ] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "schema {schema} missing");
    }
    // Statuses a schema fuzzer once found undocumented.
    for (path, method, status) in [("/api/jobs/{job_id}/image", "get", "400"), ("/upload/{zone}", "post", "415")] {
        assert!(doc["paths"][path][method]["responses"].get(status).is_some(), "{method} {path} lacks {status}");
    }
}
