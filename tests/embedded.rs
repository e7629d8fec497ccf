//! The embedded deployment end to end: real `serve` and `worker` processes, real HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::service::{detect_body, image_bytes, one_at_a_time, Service};
use crate::support::{image, run, skyburst};

fn labels(result: &Value) -> Vec<String> {
    result["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_json_api_finds_the_people_and_the_bus() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    let (status, result) = service.post_json("/api/detect", &detect_body("client-42", "bus.jpg"));
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["id"], "client-42");
    let found = labels(&result);
    assert!(found.iter().filter(|l| *l == "person").count() >= 3, "{found:?}");
    assert!(found.contains(&"bus".to_string()), "{found:?}");
    assert_eq!((result["width"].as_u64(), result["height"].as_u64()), (Some(810), Some(1080)));
    assert_eq!(result["model"].as_str().unwrap().len(), 64, "weights sha256");
    let job_id = result["job_id"].as_str().unwrap();
    let job = service.get(&format!("/api/jobs/{job_id}")).1;
    assert_eq!(job["status"], "done");
    assert_eq!(job["worker"], "w1");
    assert_eq!(job["result"]["objects"], result["objects"]);
    let stored = reqwest::blocking::get(format!("{}/api/jobs/{job_id}/image", service.url)).unwrap();
    assert_eq!(stored.headers()["content-type"], "image/jpeg");
    assert_eq!(stored.bytes().unwrap().to_vec(), image_bytes("bus.jpg"));
    let results = service.get("/api/results?limit=10").1;
    assert_eq!(results["results"].as_array().unwrap().len(), 1);
}

#[test]
fn multipart_uploads_with_zones_update_the_zone_totals() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    let (status, result) = service.upload("/upload/gate-1", "myfile", "bus.jpg", image_bytes("bus.jpg"));
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["file"], "bus.jpg");
    assert_eq!(result["zone"], "gate-1");
    // Any single file field is accepted, not only the classic `myfile`.
    let (status, result) = service.upload("/upload/gate-2", "photo", "zidane.jpg", image_bytes("zidane.jpg"));
    assert_eq!(status, 200, "{result}");
    let (status, _) = service.upload("/upload/gate-2", "myfile", "zidane.jpg", image_bytes("zidane.jpg"));
    assert_eq!(status, 200);
    let zones = service.get("/api/zones").1;
    let zone = |name: &str| zones["zones"].as_array().unwrap().iter().find(|z| z["zone"] == name).unwrap().clone();
    let gate1 = zone("gate-1");
    assert_eq!(gate1["images"], 1);
    assert!(gate1["head_count"].as_u64().unwrap() >= 3, "{gate1}");
    assert_eq!(gate1["labels"][0]["label"], "person", "people first: {gate1}");
    assert!(gate1["labels"].as_array().unwrap().iter().any(|l| l["label"] == "bus"));
    let gate2 = zone("gate-2");
    assert_eq!(gate2["images"], 2);
    assert_eq!(gate2["head_count"].as_u64().unwrap(), 2 * gate2["last_head_count"].as_u64().unwrap());
    assert_eq!(zones["totals"]["images"], 3);
    let per_zone = gate1["head_count"].as_u64().unwrap() + gate2["head_count"].as_u64().unwrap();
    assert_eq!(zones["totals"]["head_count"].as_u64().unwrap(), per_zone);
    let only_gate2 = service.get("/api/results?zone=gate-2").1;
    assert_eq!(only_gate2["results"].as_array().unwrap().len(), 2);
    // The same images per 30-second bucket: the window's buckets add up to the totals.
    let (status, stats) = service.get("/api/stats?bucket=30s");
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["bucket_seconds"], 30);
    let buckets = stats["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 61, "60 buckets before now, plus the one holding now");
    assert!(buckets.iter().all(|b| b["start_ms"].as_i64().unwrap() % 30_000 == 0), "edges on the epoch's 30 s");
    let sum = |field: &str| buckets.iter().map(|b| b[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("images"), 3);
    assert_eq!(sum("head_count"), per_zone);
    let gate2_stats = service.get("/api/stats?bucket=1h&zone=gate-2").1;
    assert_eq!(
        gate2_stats["buckets"].as_array().unwrap().iter().map(|b| b["images"].as_u64().unwrap()).sum::<u64>(),
        2
    );
    let (status, refused) = service.get("/api/stats?bucket=1ms");
    assert_eq!((status, refused["error"].as_str()), (400, Some("bad_bucket")), "{refused}");
}

#[test]
fn a_slow_answer_gets_202_and_the_job_completes_later() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[("FRONTEND__WAIT_SECONDS", "1")]);
    let (status, accepted) = service.post_json("/api/detect", &detect_body("c1", "zidane.jpg"));
    assert_eq!(status, 202, "no worker yet: {accepted}");
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["status_url"], format!("/api/jobs/{job_id}"));
    assert_eq!(service.get(accepted["status_url"].as_str().unwrap()).1["status"], "queued");
    // The asynchronous API, JSON with a zone.
    let mut body = detect_body("c2", "bus.jpg");
    body["zone"] = json!("7");
    let (status, second) = service.post_json("/api/jobs", &body);
    assert_eq!(status, 202, "{second}");
    service.start_worker("late");
    let first = service.wait_for_job(&job_id, Duration::from_secs(60));
    assert_eq!(first["status"], "done");
    assert_eq!(first["id"], "c1");
    assert!(labels(&first["result"]).contains(&"person".to_string()));
    let second = service.wait_for_job(second["job_id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(second["zone"], "7");
    assert!(labels(&second["result"]).contains(&"bus".to_string()));
}

#[test]
fn up_runs_everything_and_load_checks_the_answers() {
    let _heavy = one_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let mut up = skyburst()
        .args(["--data-dir", data.path().to_str().unwrap(), "up", "--workers", "1", "--port", "0"])
        .env("SKYBURST_DETECTOR__MODEL_DIR", crate::support::model_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(up.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("up prints its URL").to_string();
    let labels_csv = data.path().join("labels.csv");
    std::fs::write(&labels_csv, "file,labels\nbus.jpg,bus;person\nzidane.jpg,person;tie\n").unwrap();
    let csv = data.path().join("load.csv");
    let images = image("bus.jpg").parent().unwrap().to_path_buf();
    for mode in ["json", "multipart", "async"] {
        let (code, out, err) =
            run(skyburst().args(["load", "--url", &url, "--requests", "4", "--concurrency", "2"]).args([
                "--mode".as_ref(),
                mode.as_ref(),
                "--images".as_ref(),
                images.as_os_str(),
                "--expect".as_ref(),
                labels_csv.as_os_str(),
                "--csv".as_ref(),
                csv.as_os_str(),
            ]));
        assert_eq!(code, 0, "{mode}: {out}\n{err}");
        assert!(out.contains("succeeded 4  failed 0"), "{out}");
        assert!(out.contains("correct     4/4"), "{out}");
        let rows = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(rows.lines().count(), 5, "header + one row per request: {rows}");
    }
    crate::support::service::signal(up.id(), nix::sys::signal::Signal::SIGTERM);
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("skyburst up: stopped"), "{rest}");
}

#[test]
fn an_image_that_fails_to_decode_is_answered_failed_with_the_reason() {
    let _heavy = one_at_a_time();
    // A valid 64×64 PNG header whose pixel data is cut short: the front end's header check
    // passes it, the worker's decoder does not.
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, 64, 64);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]).unwrap();
    drop(writer);
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    use base64::Engine;
    let body = json!({ "id": "broken", "image": base64::engine::general_purpose::STANDARD.encode(png) });
    let (status, answer) = service.post_json("/api/detect", &body);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "detection_failed");
    assert!(answer["detail"].as_str().unwrap().contains("could not be decoded"), "{answer}");
    let failed = service.get("/api/results").1["results"][0].clone();
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("could not be decoded"), "{failed}");
}

/// The value of the sample `series` (name and labels exactly as exposed) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

#[test]
fn metrics_count_requests_by_route_pattern_jobs_by_outcome_and_detector_time() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    let (status, result) = service.post_json("/api/detect", &detect_body("m1", "bus.jpg"));
    assert_eq!(status, 200, "{result}");
    let job_id = result["job_id"].as_str().unwrap();
    assert_eq!(service.get(&format!("/api/jobs/{job_id}")).0, 200);
    assert_eq!(service.get("/no/such/page").0, 404);
    let response = reqwest::blocking::get(format!("{}/metrics", service.url)).unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = response.text().unwrap();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"));
    assert_eq!(value(r#"skyburst_http_requests_total{method="POST",route="/api/detect",status="200"}"#), 1.0);
    // Labelled by pattern, not by the job id in the path; unknown paths share one label.
    assert_eq!(value(r#"skyburst_http_requests_total{method="GET",route="/api/jobs/{job_id}",status="200"}"#), 1.0);
    assert_eq!(value(r#"skyburst_http_requests_total{method="GET",route="unmatched",status="404"}"#), 1.0);
    assert!(!text.contains(job_id), "no series per job id");
    let latency =
        value(r#"skyburst_http_request_duration_seconds_sum{method="POST",route="/api/detect",status="200"}"#);
    assert!(latency > 0.0 && latency < 30.0, "{latency}");
    assert_eq!(value("skyburst_jobs_queued_total"), 1.0);
    assert_eq!(value(r#"skyburst_jobs_finished_total{outcome="done"}"#), 1.0);
    assert_eq!(value("skyburst_detector_seconds_count"), 1.0);
    let detector = value("skyburst_detector_seconds_sum");
    assert!(detector > 0.0 && detector < latency, "detector {detector} s within the request's {latency} s");
    assert_eq!(value(r#"skyburst_queue_messages{queue="requests",state="visible"}"#), 0.0);
    assert_eq!(value(r#"skyburst_queue_messages{queue="dead_letters",state="visible"}"#), 0.0);
}

#[test]
fn a_ramp_adds_users_to_the_cap_and_writes_its_csv_and_charts() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    let out_dir = tempfile::tempdir().unwrap();
    let csv = out_dir.path().join("ramp.csv");
    let images = image("bus.jpg").parent().unwrap().to_path_buf();
    let (code, out, err) = run(skyburst()
        .args(["load", "--url", &service.url, "--ramp", "--users-start", "1", "--users-step", "1"])
        .args(["--step-seconds", "1", "--users-max", "3", "--think-ms", "50", "--slo-ms", "5000"])
        .arg("--images")
        .arg(&images)
        .arg("--csv")
        .arg(&csv));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stopped: reached --users-max within the SLO"), "{out}");
    assert!(out.contains("max users with 100 % success within the SLO: 3"), "{out}");
    // One table row per step: 1, 2 and 3 users, every request answered.
    let steps: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("users"))
        .skip(1)
        .take_while(|l| !l.starts_with("stopped"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(steps.iter().map(|s| s[0]).collect::<Vec<_>>(), ["1", "2", "3"], "{out}");
    assert!(steps.iter().all(|s| s[1].parse::<usize>().unwrap() > 0 && s[2] == "0"), "{out}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    let header: Vec<&str> = rows.lines().next().unwrap().split(',').collect();
    assert!(header.ends_with(&["started_s", "users"]), "{header:?}");
    let users_column: std::collections::BTreeSet<&str> =
        rows.lines().skip(1).map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(users_column.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);
    for chart in ["response-time", "throughput", "outcomes"] {
        let png = out_dir.path().join(format!("ramp-{chart}.png"));
        assert!(image::open(&png).is_ok(), "{} is not a readable PNG", png.display());
    }
}

#[test]
fn a_ramp_stops_at_the_first_failure() {
    let _heavy = one_at_a_time();
    // No worker: every synchronous request waits 1 s and gets 202, which is not an answer.
    let service = Service::start(&[("FRONTEND__WAIT_SECONDS", "1")]);
    let images = image("bus.jpg").parent().unwrap().to_path_buf();
    let (code, out, err) = run(skyburst()
        .args(["load", "--url", &service.url, "--ramp", "--step-seconds", "5", "--users-max", "4"])
        .arg("--images")
        .arg(&images));
    assert_eq!(code, 1, "no step was good: {out}\n{err}");
    assert!(out.contains("stopped: first failure at 1 users (HTTP 202"), "{out}");
    assert!(out.contains("max users with 100 % success within the SLO: 0"), "{out}");
}

#[test]
fn a_short_experiment_writes_its_table_and_charts() {
    let _heavy = one_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let images = image("bus.jpg").parent().unwrap().to_path_buf();
    let (code, stdout, err) = run(skyburst()
        .env("SKYBURST_DETECTOR__MODEL_DIR", crate::support::model_dir())
        .args(["experiment", "--workers", "1,2", "--seconds-per-size", "8", "--step-seconds", "1"])
        .args(["--users-max", "3", "--slo-ms", "5000"])
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(out.path()));
    assert_eq!(code, 0, "{stdout}\n{err}");
    let table = std::fs::read_to_string(out.path().join("experiment.md")).unwrap();
    let rows: Vec<Vec<&str>> =
        table.lines().skip(2).map(|l| l.trim_matches('|').split('|').map(str::trim).collect()).collect();
    assert_eq!(rows.len(), 2, "{table}");
    for (row, workers) in rows.iter().zip(["1", "2"]) {
        assert_eq!(row[0], workers, "{table}");
        let users: usize = row[1].parse().unwrap();
        assert!((1..=3).contains(&users), "{table}");
        assert!(row[2].parse::<f64>().unwrap() > 0.0, "a mean response time: {table}");
    }
    assert!(stdout.contains(&table), "the table is printed too");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("experiment.json")).unwrap()).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 2);
    for png in ["experiment.png", "workers-1-ramp-throughput.png", "workers-2-confirm-response-time.png"] {
        assert!(image::open(out.path().join(png)).is_ok(), "{png}");
    }
    assert!(!out.path().join(".data-workers-1").exists(), "each fleet's data directory is removed");
}

/// Server-Sent Events read on a thread: (id, event, data) per frame.
struct EventReader {
    frames: std::sync::mpsc::Receiver<(String, String, String)>,
}

impl EventReader {
    fn open(url: &str, last_event_id: Option<&str>) -> Self {
        let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
        let mut request = client.get(format!("{url}/api/events"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (tx, frames) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in std::io::BufRead::lines(std::io::BufReader::new(response)) {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    let frame = (std::mem::take(&mut id), std::mem::take(&mut event), std::mem::take(&mut data));
                    if tx.send(frame).is_err() {
                        return;
                    }
                } else if let Some((field, value)) = line.split_once(": ") {
                    match field {
                        "id" => id = value.into(),
                        "event" => event = value.into(),
                        "data" => data = value.into(),
                        _ => {}
                    }
                }
            }
        });
        Self { frames }
    }

    /// The next `job` event: (id, data).
    fn next_job(&self) -> (String, Value) {
        loop {
            let (id, event, data) = self.frames.recv_timeout(Duration::from_secs(60)).expect("an event within 60 s");
            if event == "job" {
                return (id, serde_json::from_str(&data).unwrap());
            }
        }
    }
}

#[test]
fn events_stream_finished_jobs_and_catch_up_after_a_restart() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    let events = EventReader::open(&service.url, None);
    let (first, _) = events.frames.recv_timeout(Duration::from_secs(10)).map(|f| (f.0, f.1)).unwrap();
    assert_eq!(first, "", "the stream opens with its retry interval, not an event");
    assert_eq!(service.upload("/upload/gate-1", "myfile", "bus.jpg", image_bytes("bus.jpg")).0, 200);
    let (id, job) = events.next_job();
    assert_eq!((id.as_str(), job["zone"].as_str(), job["status"].as_str()), ("1", Some("gate-1"), Some("done")));
    assert!(job["head_count"].as_u64().unwrap() >= 3, "{job}");
    assert_eq!(job["labels"][0]["label"], "person");
    // The front end restarts; a job finishes while nobody listens.
    drop(events);
    service.restart_serve();
    assert_eq!(service.upload("/upload/gate-2", "myfile", "zidane.jpg", image_bytes("zidane.jpg")).0, 200);
    // Reconnecting with the last id seen replays what was missed, then goes on live.
    let events = EventReader::open(&service.url, Some(&id));
    let (id, job) = events.next_job();
    assert_eq!((id.as_str(), job["zone"].as_str()), ("2", Some("gate-2")));
    assert_eq!(service.upload("/upload/gate-1", "myfile", "bus.jpg", image_bytes("bus.jpg")).0, 200);
    assert_eq!(events.next_job().0, "3");
    let (status, refused) = service.get("/api/events?after=soon");
    assert_eq!(status, 400, "{refused}");
}

#[test]
fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[]);
    let page = reqwest::blocking::get(format!("{}/", service.url)).unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let html = page.text().unwrap();
    for needle in [r#"<script src="/static/app.js">"#, r#"id="zones""#, r#"id="stats-chart""#, r#"id="fleet-chart""#] {
        assert!(html.contains(needle), "{needle} missing from the page");
    }
    let script = reqwest::blocking::get(format!("{}/static/app.js", service.url)).unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let script = script.text().unwrap();
    for call in ["/api/zones", "/api/stats?bucket=30s", "/api/fleet", "new EventSource("] {
        assert!(script.contains(call), "the script uses {call}");
    }
    assert!(!script.contains("innerHTML"), "names and labels go in as text, never as HTML");
}
