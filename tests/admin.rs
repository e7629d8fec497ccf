//! Administration on the embedded deployment, through `skyburst admin` and `/api/admin/`: queue
//! depths; dead letters (made by a receiver that takes jobs and dies, as a crashed worker
//! would) peeked unchanged, redriven until a worker completes them, dropped and purged; bucket
//! purges by prefix and by age; deleting a job; `--yes` and the `admin` scope.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use skyburst::queue::admin::QueueAdmin;
use skyburst::queue::local::{LocalQueue, LocalQueues};
use skyburst::queue::Queue;

use crate::support::service::{detect_body, one_at_a_time, Service};
use crate::support::{run, skyburst};

const ADMIN: &str = "admin-token-0123456789a";
const USER: &str = "user-token-0123456789ab";
const READER: &str = "read-token-0123456789ab";
const REQUESTS: &str = "skyburst-requests";
const DEAD_LETTERS: &str = "skyburst-requests-dlq";

/// A front end with an admin token and a `submit,read` one; queue.max_receives = 1.
struct Admin {
    service: Service,
    http: reqwest::blocking::Client,
    runtime: tokio::runtime::Runtime,
    _tokens: tempfile::TempDir,
}

impl Admin {
    fn start() -> Self {
        let tokens = tempfile::tempdir().unwrap();
        let file = tokens.path().join("tokens");
        std::fs::write(&file, format!("{ADMIN} admin\n{USER} submit,read\n{READER} read\n")).unwrap();
        let toml = format!("[frontend]\ntokens_file = {:?}\n", file.display().to_string());
        let service = Service::start_with_config(Some(&toml), &[("QUEUE__MAX_RECEIVES", "1")]);
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Self { service, http, runtime: tokio::runtime::Runtime::new().unwrap(), _tokens: tokens }
    }

    fn api(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.request(method.parse().unwrap(), format!("{}{path}", self.service.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    /// `skyburst admin ARGS` with the admin token in `BEARER_TOKEN`.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run(skyburst().args(["admin", "--url", &self.service.url]).args(args).env("BEARER_TOKEN", ADMIN))
    }

    /// `skyburst admin ARGS --json`, which must succeed.
    fn cli_json(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.cli(&[args, &["--json"]].concat());
        assert_eq!(code, 0, "admin {args:?}: {stdout}\n{stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("admin {args:?} printed {stdout:?}: {e}"))
    }

    fn post_job(&self, id: &str, image: &str) -> String {
        let response = self.http.post(format!("{}/api/jobs", self.service.url)).bearer_auth(USER);
        let body: Value = response.json(&detect_body(id, image)).send().unwrap().json().unwrap();
        body["job_id"].as_str().unwrap_or_else(|| panic!("{body}")).to_string()
    }

    fn wait_done(&self, job: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, body) = self.api("GET", &format!("/api/jobs/{job}"), Some(ADMIN));
            if body["status"] == "done" {
                return body;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "job {job} not done: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The request queue (dead-lettering after one receive) and its dead-letter queue, opened on
    /// the deployment's file as a worker opens them.
    fn queues(&self) -> (LocalQueue, LocalQueue) {
        let db = LocalQueues::open(&self.service.data_dir().join("queue.db"), Duration::from_millis(10)).unwrap();
        (db.queue(REQUESTS, Some((DEAD_LETTERS, 1))), db.queue(DEAD_LETTERS, None))
    }

    /// Takes every queued job and dies holding them (a crashed worker); the next receive after
    /// their visibility timeout moves them to the dead-letter queue. Returns how many.
    fn dead_letter_queued(&self) -> usize {
        let (requests, _) = self.queues();
        let taken = self.runtime.block_on(requests.receive(10, Duration::ZERO, Duration::from_millis(100))).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let next = self.runtime.block_on(requests.receive(10, Duration::ZERO, Duration::from_secs(1))).unwrap();
        assert!(next.is_empty(), "dead-lettered, not delivered again");
        taken.len()
    }

    /// Every message row as stored: (id, queue, receive count, visible at, receipt).
    /// The messages of the request and dead-letter queues (the front end may also have told the
    /// response queue a dead-lettered message names that its job failed).
    fn rows(&self) -> Vec<(i64, String, u32, i64, Option<String>)> {
        let conn = rusqlite::Connection::open(self.service.data_dir().join("queue.db")).unwrap();
        let mut select = conn
            .prepare(
                "SELECT id, queue, receive_count, visible_at_ms, receipt FROM messages WHERE queue IN (?1, ?2) ORDER BY id",
            )
            .unwrap();
        let rows = select
            .query_map([REQUESTS, DEAD_LETTERS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn depth(&self, queue: &str) -> u64 {
        let q = &self.cli_json(&["queues"])[queue];
        ["visible", "in_flight", "delayed"].iter().map(|k| q[k].as_u64().unwrap()).sum()
    }

    fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.service.bucket(bucket).join(key)
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["messages"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap().to_string()).collect()
}

fn message<'a>(body: &'a Value, field: &str, value: &str) -> &'a Value {
    let messages = body["messages"].as_array().unwrap();
    messages.iter().find(|m| m[field] == value).unwrap_or_else(|| panic!("no message with {field} {value}: {body}"))
}

#[test]
fn dead_letters_are_peeked_unchanged_redriven_to_completion_dropped_and_purged() {
    let _heavy = one_at_a_time();
    let mut admin = Admin::start();
    let jobs: Vec<String> = ["a", "b", "c"].iter().map(|id| admin.post_job(id, "bus.jpg")).collect();
    assert_eq!(admin.dead_letter_queued(), 3);
    // Two more: a body that is no job request, and one with the fields newer front ends add.
    let (_, dlq) = admin.queues();
    let stranger = uuid::Uuid::new_v4().to_string();
    let newer = serde_json::json!({
        "job_id": stranger, "bucket": "skyburst-input", "key": format!("images/{stranger}"), "zone": "gate",
        "reply_queue": "skyburst-responses-frontend", "enqueued_at_ms": 1, "attempts": 3, "last_error": "detector crashed",
    });
    admin.runtime.block_on(dlq.send("not a job {", Duration::ZERO)).unwrap();
    admin.runtime.block_on(dlq.send(&newer.to_string(), Duration::ZERO)).unwrap();

    let queues = admin.cli_json(&["queues"]);
    assert_eq!(
        (queues["requests"]["name"].as_str(), queues["dead_letters"]["name"].as_str()),
        (Some(REQUESTS), Some(DEAD_LETTERS))
    );
    assert_eq!((admin.depth("requests"), admin.depth("dead_letters")), (0, 5), "{queues}");
    let (code, text, _) = admin.cli(&["queues"]);
    assert!(code == 0 && text.contains(DEAD_LETTERS), "{text}");

    // A peek lists every message and changes none of them.
    let rows = admin.rows();
    let peeked = admin.cli_json(&["dead-letters"]);
    assert_eq!(admin.cli_json(&["dead-letters", "--limit", "10"]), peeked);
    assert_eq!(admin.rows(), rows, "peeking changed the rows");
    assert_eq!(ids(&peeked).len(), 5, "{peeked}");
    assert_eq!(admin.cli_json(&["dead-letters", "--limit", "2"])["messages"].as_array().unwrap().len(), 2);
    let first = message(&peeked, "job_id", &jobs[0]);
    assert_eq!(first["image"], format!("skyburst-input/images/{}", jobs[0]), "{first}");
    assert!(first["sent_at"].as_str().unwrap().ends_with('Z') && first.get("unreadable").is_none(), "{first}");
    let newer = message(&peeked, "job_id", &stranger);
    assert_eq!(
        (&newer["attempts"], &newer["last_error"], &newer["zone"]),
        (&3.into(), &"detector crashed".into(), &"gate".into())
    );
    let unreadable = message(&peeked, "unreadable", "not a job {");
    let (code, text, _) = admin.cli(&["dead-letters"]);
    assert!(code == 0 && text.contains("last error: detector crashed") && text.contains(&jobs[0]), "{text}");

    // Drop: the CLI for one, the route for the other; a second drop finds nothing.
    let unreadable_id = unreadable["message_id"].as_str().unwrap();
    let (code, _, stderr) = admin.cli(&["drop-message", unreadable_id]);
    assert!(code == 2 && stderr.contains("--yes") && stderr.contains(unreadable_id), "{stderr}");
    assert_eq!(admin.rows(), rows, "nothing changes without --yes");
    let (code, stdout, stderr) = admin.cli(&["drop-message", unreadable_id, "--yes"]);
    assert!(code == 0 && stdout.contains(&format!("removed message {unreadable_id}")), "{stdout}{stderr}");
    let newer_id = newer["message_id"].as_str().unwrap();
    let (status, body) = admin.api("DELETE", &format!("/api/admin/dead-letters/messages/{newer_id}"), Some(ADMIN));
    assert_eq!((status, &body["removed"]), (200, &1.into()), "{body}");
    let (status, _) = admin.api("DELETE", &format!("/api/admin/dead-letters/messages/{newer_id}"), Some(ADMIN));
    assert_eq!(status, 404);
    let (code, _, stderr) = admin.cli(&["drop-message", newer_id, "--yes"]);
    assert!(code == 1 && stderr.contains("404"), "{stderr}");

    // Redrive one by id with the CLI, then the rest with the route.
    let a = message(&peeked, "job_id", &jobs[0])["message_id"].as_str().unwrap().to_string();
    let (code, _, stderr) = admin.cli(&["redrive", "--message", &a]);
    assert!(code == 2 && stderr.contains("--yes"), "{stderr}");
    let one = admin.cli_json(&["redrive", "--message", &a, "--yes"]);
    assert_eq!(
        (&one["moved"], &one["method"], &one["to"]),
        (&1.into(), &"move_rows".into(), &REQUESTS.into()),
        "{one}"
    );
    assert_eq!((admin.depth("requests"), admin.depth("dead_letters")), (1, 2));
    let (status, _) = admin.api("POST", "/api/admin/dead-letters/redrive?message_id=999999", Some(ADMIN));
    assert_eq!(status, 404);
    let (status, rest) = admin.api("POST", "/api/admin/dead-letters/redrive", Some(ADMIN));
    assert_eq!((status, &rest["moved"]), (200, &2.into()), "{rest}");
    assert_eq!((admin.depth("requests"), admin.depth("dead_letters")), (3, 0));
    let counts: Vec<u32> = admin.rows().iter().map(|r| r.2).collect();
    assert_eq!(counts, [0, 0, 0], "receive counts reset");

    // A worker completes every redriven job.
    admin.service.start_worker("w1");
    for job in &jobs {
        let done = admin.wait_done(job);
        assert!(done["result"]["objects"].as_array().unwrap().iter().any(|o| o["label"] == "bus"), "{done}");
    }

    // Purge: the request queue (no worker left to take the job) and the dead-letter queue.
    let mut worker = admin.service.workers.remove(0);
    let _ = worker.kill();
    let _ = worker.wait();
    admin.post_job("d", "zidane.jpg");
    let (code, _, stderr) = admin.cli(&["purge-queue", "requests"]);
    assert!(code == 2 && stderr.contains("request queue") && stderr.contains("--yes"), "{stderr}");
    assert_eq!(admin.depth("requests"), 1);
    let (code, stdout, _) = admin.cli(&["purge-queue", "requests", "--yes"]);
    assert!(code == 0 && stdout.contains(&format!("removed 1 message(s) from {REQUESTS}")), "{stdout}");
    assert_eq!(admin.depth("requests"), 0);
    for body in ["one", "two"] {
        admin.runtime.block_on(dlq.send(body, Duration::ZERO)).unwrap();
    }
    let (status, purged) = admin.api("POST", "/api/admin/queues/dead-letters/purge", Some(ADMIN));
    assert_eq!((status, &purged["removed"], &purged["queue"]), (200, &2.into(), &DEAD_LETTERS.into()), "{purged}");
    assert!(admin.rows().is_empty());
    assert_eq!(admin.api("POST", "/api/admin/queues/responses/purge", Some(ADMIN)).0, 404);
}

/// Sets a stored object's modification time `age` into the past.
fn age(path: &std::path::Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn keys(body: &Value) -> Vec<String> {
    body["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
}

#[test]
fn store_purges_by_prefix_and_age_and_job_deletion_remove_files_and_rows() {
    let _heavy = one_at_a_time();
    let mut admin = Admin::start();
    admin.service.start_worker("w1");
    let jobs: Vec<String> = (0..3).map(|i| admin.post_job(&format!("j{i}"), "bus.jpg")).collect();
    for job in &jobs {
        admin.wait_done(job);
    }
    let index = rusqlite::Connection::open(admin.service.data_dir().join("index.db")).unwrap();
    let rows = |table: &str, job: &str| -> i64 {
        index.query_row(&format!("SELECT COUNT(*) FROM {table} WHERE job_id = ?1"), [job], |r| r.get(0)).unwrap()
    };
    let image = |job: &str| admin.object("skyburst-input", &format!("images/{job}"));
    let result = |job: &str| admin.object("skyburst-output", &format!("results/{job}.json"));
    assert!(image(&jobs[0]).is_file() && result(&jobs[0]).is_file());
    assert!(rows("jobs", &jobs[0]) == 1 && rows("labels", &jobs[0]) > 0, "a done job has label rows");

    // Delete one job: its image, result, index row and label rows go; it is then unknown.
    let (code, _, stderr) = admin.cli(&["delete-job", &jobs[0]]);
    assert!(code == 2 && stderr.contains(&jobs[0]) && stderr.contains("--yes"), "{stderr}");
    assert!(image(&jobs[0]).is_file(), "nothing changes without --yes");
    let (code, stdout, stderr) = admin.cli(&["delete-job", &jobs[0], "--yes"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("skyburst-input/images/{}", jobs[0])) && stdout.contains("index row removed"),
        "{stdout}"
    );
    assert!(!image(&jobs[0]).exists() && !result(&jobs[0]).exists());
    assert_eq!((rows("jobs", &jobs[0]), rows("labels", &jobs[0])), (0, 0));
    assert_eq!(admin.api("GET", &format!("/api/jobs/{}", jobs[0]), Some(ADMIN)).0, 404);
    let (code, _, stderr) = admin.cli(&["delete-job", &jobs[0], "--yes"]);
    assert!(code == 1 && stderr.contains("404"), "{stderr}");
    assert_eq!(admin.api("DELETE", "/api/admin/jobs/not-a-uuid", Some(ADMIN)).0, 400);
    assert_eq!(rows("jobs", &jobs[1]), 1, "other jobs stay");

    // By age: an image written 10 days ago goes with 7d; a result 3 days old goes before a time.
    age(&image(&jobs[1]), Duration::from_secs(10 * 86_400));
    let (code, _, stderr) = admin.cli(&["purge-store", "--bucket", "input", "--older-than", "7d"]);
    assert!(code == 2 && stderr.contains("input bucket") && stderr.contains("7d"), "{stderr}");
    let old = admin.cli_json(&["purge-store", "--bucket", "input", "--older-than", "7d", "--yes"]);
    assert_eq!(keys(&old), [format!("images/{}", jobs[1])], "{old}");
    assert!(!image(&jobs[1]).exists() && image(&jobs[2]).is_file());
    age(&result(&jobs[1]), Duration::from_secs(3 * 86_400));
    let cutoff = humantime::format_rfc3339(SystemTime::now() - Duration::from_secs(86_400)).to_string();
    let before = admin.cli_json(&[
        "purge-store",
        "--bucket",
        "output",
        "--prefix",
        "results/",
        "--older-than",
        &cutoff,
        "--yes",
    ]);
    assert_eq!(keys(&before), [format!("results/{}.json", jobs[1])], "{before}");
    assert!(!result(&jobs[1]).exists() && result(&jobs[2]).is_file());
    let (code, _, stderr) = admin.cli(&["purge-store", "--bucket", "input", "--older-than", "yesterday", "--yes"]);
    assert!(code == 1 && stderr.contains("400") && stderr.contains("bad_older_than"), "{stderr}");
    assert_eq!(admin.api("POST", "/api/admin/store/purge?bucket=input&prefix=../x", Some(ADMIN)).0, 400);
    assert_eq!(admin.api("POST", "/api/admin/store/purge?bucket=elsewhere", Some(ADMIN)).0, 400);

    // A whole bucket: the controller's records under control/ stay unless named.
    let control = admin.service.bucket("skyburst-output").join("control");
    assert!(control.is_dir(), "the readiness probe and the worker's heartbeat write under control/");
    let (code, stdout, _) = admin.cli(&["purge-store", "--bucket", "output", "--yes"]);
    assert!(code == 0 && stdout.contains(&format!("  results/{}.json", jobs[2])), "{stdout}");
    assert!(!result(&jobs[2]).exists() && control.is_dir());
    assert!(!stdout.contains("  control/") && !stdout.contains("kept 0 "), "control records kept: {stdout}");
    let named = admin.cli_json(&["purge-store", "--bucket", "output", "--prefix", "control/", "--yes"]);
    assert!(
        named["removed"].as_u64().unwrap() > 0 && keys(&named).iter().all(|k| k.starts_with("control/")),
        "{named}"
    );
    let images = admin.cli_json(&["purge-store", "--bucket", "input", "--prefix", "images/", "--yes"]);
    assert_eq!(keys(&images), [format!("images/{}", jobs[2])]);
}

#[test]
fn admin_routes_refuse_other_tokens_and_destructive_commands_need_yes() {
    let _heavy = one_at_a_time();
    let admin = Admin::start();
    let (_, dlq) = admin.queues();
    admin.runtime.block_on(dlq.send("kept", Duration::ZERO)).unwrap();
    let job = admin.post_job("kept", "bus.jpg");
    let missing = uuid::Uuid::new_v4();
    // (method, path, status for the admin token)
    let routes = [
        ("GET", "/api/admin/queues".to_string(), 200),
        ("GET", "/api/admin/dead-letters".into(), 200),
        ("POST", "/api/admin/dead-letters/redrive?message_id=999999".into(), 404),
        ("DELETE", "/api/admin/dead-letters/messages/999999".into(), 404),
        ("POST", "/api/admin/queues/nothing/purge".into(), 404),
        ("POST", "/api/admin/store/purge?bucket=input&prefix=nothing-here/".into(), 200),
        ("DELETE", format!("/api/admin/jobs/{missing}"), 404),
    ];
    for (method, path, expected) in &routes {
        let got = [None, Some(USER), Some(READER), Some(ADMIN)].map(|token| admin.api(method, path, token).0);
        assert_eq!(got, [401, 403, 403, *expected], "{method} {path} (no token, submit+read, read, admin)");
    }
    let (_, refused) = admin.api("POST", "/api/admin/queues/dead-letters/purge", Some(USER));
    assert!(refused["detail"].as_str().unwrap().contains("admin scope"), "{refused}");
    let (code, _, stderr) =
        run(skyburst().args(["admin", "--url", &admin.service.url, "queues"]).env("BEARER_TOKEN", USER));
    assert!(code == 1 && stderr.contains("403"), "{stderr}");

    let destructive: [&[&str]; 7] = [
        &["redrive"],
        &["redrive", "--message", "1"],
        &["drop-message", "1"],
        &["purge-queue", "requests"],
        &["purge-queue", "dead-letters"],
        &["purge-store", "--bucket", "output"],
        &["delete-job", &job],
    ];
    for args in destructive {
        let (code, stdout, stderr) = admin.cli(args);
        assert!(code == 2 && stderr.contains("pass --yes") && stdout.is_empty(), "{args:?}: {stderr}");
    }
    // Refused requests and unconfirmed commands changed nothing.
    assert_eq!((admin.depth("requests"), admin.depth("dead_letters")), (1, 1));
    assert_eq!(admin.api("GET", &format!("/api/jobs/{job}"), Some(ADMIN)).0, 200);
    assert!(admin.object("skyburst-input", &format!("images/{job}")).is_file());
    let peeked = admin.runtime.block_on(dlq.peek(10)).unwrap();
    assert_eq!(peeked[0].body, "kept");
}
