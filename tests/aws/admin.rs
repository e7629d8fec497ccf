//! Administration on SQS and S3 (moto), through `skyburst admin`: dead letters peeked, redriven
//! (moto has no `StartMessageMoveTask`, so by receive, send and delete) and completed by a
//! worker; a dead letter dropped; both queues purged; bucket purges keeping `control/`; a job
//! deleted from S3 and the index. The front end's calls are checked against its policies.

use std::time::{Duration, Instant};

use serde_json::Value;
use skyburst::queue::sqs::SqsQueues;
use skyburst::queue::Queue;
use skyburst::store::s3::S3Store;
use skyburst::store::{ObjectStore, StoreError};

use crate::support::moto::{self, config_file, endpoint, unique};
use crate::support::service::{detect_body, one_at_a_time, Service};
use crate::support::{run, skyburst};

const ADMIN: &str = "admin-token-0123456789a";
const USER: &str = "user-token-0123456789ab";

fn admin(service: &Service, args: &[&str]) -> Value {
    let mut command = skyburst();
    command.args(["admin", "--url", &service.url]).args(args).arg("--json").env("BEARER_TOKEN", ADMIN);
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 0, "admin {args:?}: {stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn depth(service: &Service, queue: &str) -> u64 {
    let q = &admin(service, &["queues"])[queue];
    ["visible", "in_flight", "delayed"].iter().map(|k| q[k].as_u64().unwrap()).sum()
}

fn wait_for(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dead_letters_purges_and_job_deletion_on_sqs_and_s3() {
    let _heavy = one_at_a_time();
    let endpoint = endpoint();
    let name = unique("adm");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{ADMIN} admin\n{USER} submit,read\n")).unwrap();
    let mut config: toml::Table =
        toml::from_str(&moto::aws_config(&endpoint, &name).replace("max_receives = 10", "max_receives = 1")).unwrap();
    assert_eq!(
        config["queue"]["max_receives"].as_integer(),
        Some(1),
        "the example's max_receives changed: update this test"
    );
    moto::set(&mut config, "frontend", "tokens_file", toml::Value::String(tokens.display().to_string()));
    let text = toml::to_string(&config).unwrap();
    let file = config_file(&text);
    let (code, stdout, stderr) = run(skyburst().arg("--config").arg(file.path()).args(["aws", "bootstrap"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let calls = dir.path().join("calls.log");
    let mut service = Service::start_with_config(Some(&text), &[("AWS__CALL_LOG", calls.to_str().unwrap())]);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let url = service.url.clone();
    let get = |path: &str| -> (u16, Value) {
        let response = http.get(format!("{url}{path}")).bearer_auth(ADMIN).send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    };
    let post_job = |id: &str| -> String {
        let request = http.post(format!("{url}/api/jobs")).bearer_auth(USER).json(&detect_body(id, "bus.jpg"));
        let body: Value = request.send().unwrap().json().unwrap();
        body["job_id"].as_str().unwrap_or_else(|| panic!("{body}")).to_string()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime.block_on(moto::session(&endpoint));
    let sqs = SqsQueues::new(&session);
    let (requests, dlq) = (sqs.queue(&format!("{name}-requests")), sqs.queue(&format!("{name}-requests-dlq")));

    // Two jobs taken by a receiver that dies; their next receive dead-letters them (max 1).
    let jobs = [post_job("a"), post_job("b")];
    let second = Duration::from_secs(1);
    assert_eq!(runtime.block_on(requests.receive(10, second, second)).unwrap().len(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(runtime.block_on(requests.receive(10, second, second)).unwrap().is_empty());
    let peeked = admin(&service, &["dead-letters"]);
    let mut listed: Vec<&str> =
        peeked["messages"].as_array().unwrap().iter().map(|m| m["job_id"].as_str().unwrap()).collect();
    listed.sort();
    let mut expected: Vec<&str> = jobs.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(listed, expected, "{peeked}");
    assert!(peeked["messages"][0]["receive_count"].as_u64().unwrap() >= 1, "{peeked}");

    // Redrive: moto lacks StartMessageMoveTask, so the fallback moves them, and says so.
    let redriven = admin(&service, &["redrive", "--yes"]);
    match redriven["method"].as_str() {
        Some("receive_send_delete") => {
            assert_eq!(redriven["moved"], 2, "{redriven}");
            assert!(redriven["note"].as_str().unwrap().contains("StartMessageMoveTask"), "{redriven}");
        }
        Some("move_task") => {}
        _ => panic!("{redriven}"),
    }
    wait_for("the dead letters back in the request queue", Duration::from_secs(30), || {
        depth(&service, "dead_letters") == 0 && depth(&service, "requests") == 2
    });
    service.start_worker("w1");
    for job in &jobs {
        wait_for("a redriven job done", Duration::from_secs(120), || {
            get(&format!("/api/jobs/{job}")).1["status"] == "done"
        });
    }

    // Drop one of two dead letters by id (the other is passed over and released); then purge.
    for body in ["junk one", "junk two"] {
        runtime.block_on(dlq.send(body, Duration::ZERO)).unwrap();
    }
    let peeked = admin(&service, &["dead-letters"]);
    let junk = peeked["messages"].as_array().unwrap().iter().find(|m| m["unreadable"] == "junk two").unwrap();
    let id = junk["message_id"].as_str().unwrap();
    assert_eq!(admin(&service, &["drop-message", id, "--yes"])["removed"], 1);
    let (code, _, stderr) =
        run(skyburst().args(["admin", "--url", &service.url, "drop-message", id, "--yes"]).env("BEARER_TOKEN", ADMIN));
    assert!(code == 1 && stderr.contains("404"), "{stderr}");
    assert_eq!(
        admin(&service, &["dead-letters"])["messages"].as_array().unwrap().len(),
        1,
        "the other one was released"
    );
    assert_eq!(admin(&service, &["purge-queue", "dead-letters", "--yes"])["removed"], 1);
    let mut worker = service.workers.remove(0);
    let _ = worker.kill();
    let _ = worker.wait();
    post_job("c");
    assert!(admin(&service, &["purge-queue", "requests", "--yes"])["removed"].as_u64().unwrap() >= 1);
    wait_for("the purged request queue empty", Duration::from_secs(10), || depth(&service, "requests") == 0);

    // Delete a job: image, result and index row; then it is unknown.
    let s3 = S3Store::new(&session);
    let (input, output) = (format!("{name}-input"), format!("{name}-output"));
    let deleted = admin(&service, &["delete-job", &jobs[0], "--yes"]);
    assert_eq!(
        (&deleted["image"], &deleted["result"], &deleted["index_row"]),
        (&true.into(), &true.into(), &true.into())
    );
    let gone =
        |bucket: &str, key: String| matches!(runtime.block_on(s3.head(bucket, &key)), Err(StoreError::NotFound { .. }));
    assert!(gone(&input, skyburst::job::image_key(jobs[0].parse().unwrap())));
    assert!(gone(&output, skyburst::job::result_key(jobs[0].parse().unwrap())));
    assert_eq!(get(&format!("/api/jobs/{}", jobs[0])).0, 404);

    // A bucket-wide purge keeps control/ (the readiness probe's records).
    let purged = admin(&service, &["purge-store", "--bucket", "output", "--yes"]);
    assert_eq!(purged["keys"], serde_json::json!([format!("results/{}.json", jobs[1])]), "{purged}");
    assert!(purged["protected"].as_u64().unwrap() >= 1, "{purged}");
    assert!(!runtime.block_on(s3.list(&output, "control/")).unwrap().is_empty());
    let images = admin(&service, &["purge-store", "--bucket", "input", "--prefix", "images/", "--yes"]);
    assert_eq!(images["removed"], 2, "b's and c's images: {images}");

    drop(service);
    super::iam::check_admin_policy_against(&std::fs::read_to_string(&calls).unwrap());
}
