//! Scoped tokens, route by route: `submit` sends images and reads its own jobs, `read` reads
//! everything, `admin` does everything; a job of another `submit` token is a `404`.

use std::time::Duration;

use serde_json::Value;

use crate::support::service::{detect_body, one_at_a_time, Service};

const SUBMIT: &str = "submit-token-0123456789";
const OTHER_SUBMIT: &str = "other-submit-token-0123";
const READ: &str = "read-token-0123456789ab";
const ADMIN: &str = "admin-token-0123456789a";

fn status(client: &reqwest::blocking::Client, method: &str, url: &str, token: Option<&str>) -> u16 {
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == "POST" {
        request = request.json(&detect_body("scope", "bus.jpg"));
    }
    request.send().unwrap().status().as_u16()
}

#[test]
fn each_route_answers_each_scope_as_documented() {
    let _heavy = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let text = format!("# scopes\n{SUBMIT} submit\n{OTHER_SUBMIT} submit\n{READ} read\n{ADMIN} admin\n");
    std::fs::write(&file, text).unwrap();
    let service =
        Service::start_with_config(Some(&format!("[frontend]\ntokens_file = {:?}\n", file.display().to_string())), &[]);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let url = |path: &str| format!("{}{path}", service.url);
    let job = |token: &str| -> String {
        let response = client.post(url("/api/jobs")).bearer_auth(token).json(&detect_body("mine", "bus.jpg")).send();
        let body: Value = response.unwrap().json().unwrap();
        body["job_id"].as_str().unwrap_or_else(|| panic!("{body}")).to_string()
    };
    let mine = job(SUBMIT);
    let theirs = job(OTHER_SUBMIT);

    // (method, path, [no token, submit, read, admin])
    let table: Vec<(&str, String, [u16; 4])> = vec![
        ("POST", "/api/jobs".into(), [401, 202, 403, 202]),
        ("GET", format!("/api/jobs/{mine}"), [401, 200, 200, 200]),
        ("GET", format!("/api/jobs/{theirs}"), [401, 404, 200, 200]),
        ("GET", format!("/api/jobs/{mine}/image"), [401, 200, 200, 200]),
        ("GET", format!("/api/jobs/{theirs}/image"), [401, 404, 200, 200]),
        ("GET", "/api/zones".into(), [401, 403, 200, 200]),
        ("GET", "/api/stats".into(), [401, 403, 200, 200]),
        ("GET", "/api/results".into(), [401, 403, 200, 200]),
        ("GET", "/api/queues".into(), [401, 403, 200, 200]),
        // No controller: the fleet status is missing, once the scope lets the request in.
        ("GET", "/api/fleet".into(), [401, 403, 404, 404]),
        ("GET", "/metrics".into(), [401, 403, 200, 200]),
        ("GET", "/api/events".into(), [401, 403, 200, 200]),
        ("GET", "/api/openapi.json".into(), [401, 200, 200, 200]),
        ("GET", "/healthz".into(), [200, 200, 200, 200]),
        ("GET", "/readyz".into(), [200, 200, 200, 200]),
        ("GET", "/".into(), [200, 200, 200, 200]),
    ];
    for (method, path, expected) in &table {
        let got = [None, Some(SUBMIT), Some(READ), Some(ADMIN)].map(|token| status(&client, method, &url(path), token));
        assert_eq!(&got, expected, "{method} {path} (no token, submit, read, admin)");
    }
    // The event stream's query-string token is taken for reading only.
    let events = |token: &str| client.get(url(&format!("/api/events?access_token={token}"))).send().unwrap().status();
    assert_eq!(events(SUBMIT).as_u16(), 401);
    assert_eq!(events(READ).as_u16(), 200);
    // A refusal says which scope is missing.
    let refused: Value = client.get(url("/api/zones")).bearer_auth(SUBMIT).send().unwrap().json().unwrap();
    assert!(refused["detail"].as_str().unwrap().contains("read scope"), "{refused}");
}
