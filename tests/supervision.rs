//! `skyburst up` supervises its parts (issue 24): none outlives it, even when it is SIGKILLed;
//! a crashed front end comes back on the same URL and no job is lost; a front end that keeps
//! crashing makes `up` give up; and two front ends get response queues of their own by default.
//!
//! Every process a test starts names the test's own data directory on its command line; a
//! [`Deployment`] SIGKILLs whatever still does when it is dropped, a failed test included.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::service::{alive, detect_body, one_at_a_time, signal};
use crate::support::{model_dir, skyburst};

/// The controller's local pool with short knobs: at least one worker, at most two.
const POOL: &str = r#"
[scaling]
min = 1
max = 2

[controller]
tick_seconds = 0.5
lease_seconds = 1.5
metrics_port = 0

[worker]
heartbeat_seconds = 0.5

[[pools]]
name = "local"
provider = "local"
quota = 2
boot_seconds = 1
"#;

/// How long the parts of a SIGKILLed `up` may take to notice and finish.
const GONE_WITHIN: Duration = Duration::from_secs(30);

/// A data directory, an optional config file, and the `skyburst up` running on them.
struct Deployment {
    data: tempfile::TempDir,
    config: Option<tempfile::NamedTempFile>,
    up: Option<Child>,
    http: reqwest::blocking::Client,
}

impl Deployment {
    fn new(toml: Option<&str>) -> Self {
        let config = toml.map(|text| {
            let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            std::fs::write(file.path(), text).unwrap();
            file
        });
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { data: tempfile::tempdir().unwrap(), config, up: None, http }
    }

    /// Starts `up` on `port` ("0": a free one) with `args`; returns the URL it prints once
    /// every part is up. Its stderr is piped when `stderr` (read it with [`Self::wait_up`]).
    fn start(&mut self, port: &str, args: &[&str], stderr: bool) -> String {
        let mut command = skyburst();
        if let Some(file) = &self.config {
            command.arg("--config").arg(file.path());
        }
        command
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["up", "--port", port])
            .args(args)
            .env("SKYBURST_DETECTOR__MODEL_DIR", model_dir())
            .env("SKYBURST_QUEUE__LONG_POLL_SECONDS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if stderr {
            command.stderr(Stdio::piped());
        }
        let mut up = command.spawn().unwrap();
        let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
        self.up = Some(up);
        let url = loop {
            let line = lines.next().expect("up printed its URL").unwrap();
            if let Some(rest) = line.strip_prefix("skyburst up: ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        url
    }

    fn up_pid(&self) -> u32 {
        self.up.as_ref().expect("up is running").id()
    }

    /// Waits for `up` to exit; its status and what it wrote on stderr (if piped).
    fn wait_up(&mut self, within: Duration) -> (ExitStatus, String) {
        let mut up = self.up.take().expect("up was started");
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = up.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "up did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = up.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        (status, stderr)
    }

    /// SIGTERM to `up`, which must then stop everything and exit 0.
    fn stop_up(&mut self) {
        signal(self.up_pid(), Signal::SIGTERM);
        let (status, _) = self.wait_up(Duration::from_secs(60));
        assert!(status.success(), "{status}");
        assert_none_alive(&self.parts(), Duration::from_secs(20));
    }

    /// The live processes naming this deployment's data directory: `up` and its parts.
    fn parts(&self) -> Vec<Part> {
        processes_naming(self.data.path())
    }

    /// Waits up to `within` until `done` holds for the parts; returns them.
    fn wait_for_parts(&self, within: Duration, done: impl Fn(&[Part]) -> bool) -> Vec<Part> {
        let deadline = Instant::now() + within;
        loop {
            let parts = self.parts();
            if done(&parts) {
                return parts;
            }
            assert!(Instant::now() < deadline, "parts not as expected within {within:?}: {parts:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `POST /api/jobs` with a test image, retried while the front end cannot be reached;
    /// the job id once it is accepted.
    fn submit(&self, url: &str, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.http.post(format!("{url}/api/jobs")).json(&detect_body(id, "bus.jpg")).send() {
                Ok(response) => {
                    assert_eq!(response.status().as_u16(), 202, "job {id} refused");
                    let body: Value = response.json().unwrap();
                    return body["job_id"].as_str().unwrap().to_string();
                }
                Err(e) => assert!(Instant::now() < deadline, "job {id} not accepted within 60 s: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `within` for every job to be `done`.
    fn wait_done(&self, url: &str, jobs: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        for job in jobs {
            loop {
                let status = self.http.get(format!("{url}/api/jobs/{job}")).send().ok().and_then(|r| r.json().ok());
                let status: Value = status.unwrap_or_default();
                if status["status"] == "done" {
                    break;
                }
                assert!(Instant::now() < deadline, "job {job} not done within {within:?}: {status}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// The front end at `url` answers `/healthz` and does a detect job.
    fn assert_serves(&self, url: &str) {
        let health = self.http.get(format!("{url}/healthz")).send().unwrap();
        assert_eq!(health.status().as_u16(), 200);
        let job = self.submit(url, "after-restart");
        self.wait_done(url, &[job], Duration::from_secs(120));
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(mut up) = self.up.take() {
            let _ = up.kill();
            let _ = up.wait();
        }
        for part in self.parts() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(part.pid as i32), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.data.path().join("skyburst.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the last lines of skyburst.log ---");
            tail.iter().rev().for_each(|line| eprintln!("{line}"));
        }
    }
}

/// A process of a test: its PID and which subcommand it runs.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    pid: u32,
    role: String,
}

/// Live processes whose command line names `dir`, with the subcommand each runs.
fn processes_naming(dir: &Path) -> Vec<Part> {
    let needle = dir.to_str().unwrap();
    let mut parts = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == needle) && alive(pid) {
            let roles = ["up", "serve", "controller", "worker"];
            let role = args.iter().find(|a| roles.contains(&a.as_str())).cloned().unwrap_or_default();
            parts.push(Part { pid, role });
        }
    }
    parts
}

fn count(parts: &[Part], role: &str) -> usize {
    parts.iter().filter(|p| p.role == role).count()
}

fn pids(parts: &[Part], role: &str) -> Vec<u32> {
    parts.iter().filter(|p| p.role == role).map(|p| p.pid).collect()
}

/// Waits up to `within` for every one of `parts` to be gone.
fn assert_none_alive(parts: &[Part], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<&Part> = parts.iter().filter(|p| alive(p.pid)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running {within:?} later: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_string()
}

/// SIGKILLs `up` and checks that every part it started (`parts`) ends by itself.
fn kill_up_and_check_its_parts_end(deployment: &mut Deployment, parts: &[Part]) {
    signal(deployment.up_pid(), Signal::SIGKILL);
    let (status, _) = deployment.wait_up(Duration::from_secs(5));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
    assert_none_alive(parts, GONE_WITHIN);
    // Nor any part started while it went (a worker the controller was launching ends at once).
    deployment.wait_for_parts(Duration::from_secs(10), |p| p.is_empty());
}

#[test]
fn a_sigkilled_up_takes_its_fixed_fleet_along_and_starts_again_on_the_same_port() {
    let _heavy = one_at_a_time();
    let mut deployment = Deployment::new(None);
    let url = deployment.start("0", &["--workers", "2"], false);
    let parts = deployment.wait_for_parts(Duration::from_secs(10), |p| {
        count(p, "up") == 1 && count(p, "serve") == 1 && count(p, "worker") == 2
    });
    kill_up_and_check_its_parts_end(&mut deployment, &parts);

    let again = deployment.start(&port_of(&url), &["--workers", "1"], false);
    assert_eq!(again, url, "the port is free again");
    deployment.assert_serves(&url);
    deployment.stop_up();
}

#[test]
fn a_sigkilled_up_takes_the_controller_and_its_workers_along_but_a_controller_restart_does_not() {
    let _heavy = one_at_a_time();
    let mut deployment = Deployment::new(Some(POOL));
    let url = deployment.start("0", &[], false);
    let parts = deployment.wait_for_parts(Duration::from_secs(60), |p| {
        count(p, "serve") == 1 && count(p, "controller") == 1 && count(p, "worker") >= 1
    });

    // The controller dies and `up` starts another, which adopts the workers: they live on.
    let workers = pids(&parts, "worker");
    let old = pids(&parts, "controller");
    signal(old[0], Signal::SIGKILL);
    deployment.wait_for_parts(Duration::from_secs(30), |p| count(p, "controller") == 1 && pids(p, "controller") != old);
    std::thread::sleep(Duration::from_secs(2));
    assert!(workers.iter().all(|w| alive(*w)), "the workers outlive a controller restart");

    let parts = deployment.parts();
    assert!(count(&parts, "worker") >= 1 && count(&parts, "serve") == 1, "{parts:?}");
    kill_up_and_check_its_parts_end(&mut deployment, &parts);

    let again = deployment.start(&port_of(&url), &[], false);
    assert_eq!(again, url);
    deployment.assert_serves(&url);
    deployment.stop_up();
}

#[test]
fn a_crashed_front_end_comes_back_on_the_same_url_and_no_job_is_lost() {
    let _heavy = one_at_a_time();
    let mut deployment = Deployment::new(None);
    let url = deployment.start("0", &["--workers", "1"], false);
    // Enough that the worker is still answering while the front end is down.
    let mut jobs: Vec<String> = (0..8).map(|i| deployment.submit(&url, &format!("before-{i}"))).collect();
    let serve = pids(&deployment.parts(), "serve");
    assert_eq!(serve.len(), 1);
    signal(serve[0], Signal::SIGKILL);
    // Sent while the front end is down or coming back: retried until accepted, as a client would.
    jobs.extend((0..4).map(|i| deployment.submit(&url, &format!("around-{i}"))));
    let parts = deployment.parts();
    assert_eq!(count(&parts, "serve"), 1, "{parts:?}");
    assert_ne!(pids(&parts, "serve"), serve, "a new front end");
    deployment.wait_done(&url, &jobs, Duration::from_secs(120));
    // The answers sent while it was down went to its predecessor's response queue, which is its
    // own (the same instance id): it took them all.
    let data = deployment.data.path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(15);
    while unread_responses(&data) > 0 {
        assert!(Instant::now() < deadline, "{} answers left unread", unread_responses(&data));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(deployment.up.as_mut().unwrap().try_wait().unwrap().is_none(), "up is still running");
    deployment.stop_up();
}

#[test]
fn up_gives_up_on_a_front_end_that_keeps_crashing() {
    let _heavy = one_at_a_time();
    let mut deployment = Deployment::new(None);
    deployment.start("0", &["--workers", "0"], true);
    let started = Instant::now();
    let mut killed = Vec::new();
    while deployment.up.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "up still running after {} crashes", killed.len());
        let new: Vec<u32> = pids(&deployment.parts(), "serve").into_iter().filter(|p| !killed.contains(p)).collect();
        for pid in new {
            signal(pid, Signal::SIGKILL);
            killed.push(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = deployment.wait_up(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{status}\n{stderr}");
    assert_eq!(killed.len(), 5, "the first start and four restarts: {stderr}");
    assert!(stderr.contains("the front end crashed 5 times within 60 s; giving up"), "{stderr}");
    assert!(deployment.parts().is_empty(), "{:?}", deployment.parts());
}

/// A `serve` on a free port in `data`, killed when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(data: &Path) -> Self {
        let mut child = skyburst()
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--port", "0"])
            .env("SKYBURST_DETECTOR__MODEL_DIR", model_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("serve prints its URL");
        Serve { url: url.to_string(), child }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages in any response queue of the embedded queue.
fn unread_responses(data: &Path) -> i64 {
    let db = rusqlite::Connection::open(data.join("queue.db")).unwrap();
    let query = "SELECT COUNT(*) FROM messages WHERE queue LIKE 'skyburst-responses-%'";
    db.query_row(query, [], |row| row.get(0)).unwrap()
}

/// The `reply_queue` of every job waiting in the embedded request queue.
fn reply_queues(data: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(data.join("queue.db")).unwrap();
    let mut query = db.prepare("SELECT body FROM messages WHERE queue = 'skyburst-requests' ORDER BY id").unwrap();
    let bodies = query.query_map([], |row| row.get::<_, String>(0)).unwrap();
    bodies
        .map(|body| serde_json::from_str::<Value>(&body.unwrap()).unwrap()["reply_queue"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_front_ends_get_response_queues_of_their_own_by_default() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (Serve::start(data.path()), Serve::start(data.path()));
    let http = reqwest::blocking::Client::new();
    for (serve, id) in [(&a, "a"), (&b, "b")] {
        let response = http.post(format!("{}/api/jobs", serve.url)).json(&detect_body(id, "bus.jpg")).send().unwrap();
        assert_eq!(response.status().as_u16(), 202);
    }
    let queues = reply_queues(data.path());
    assert_eq!(queues.len(), 2, "{queues:?}");
    assert_ne!(queues[0], queues[1], "each front end has its own response queue");
    let frontend = skyburst::config::FrontendConfig::default();
    for (queue, serve) in queues.iter().zip([&a, &b]) {
        let port: u16 = port_of(&serve.url).parse().unwrap();
        assert_eq!(*queue, format!("skyburst-responses-{}", frontend.instance_id_on(port)));
        assert!(queue.starts_with("skyburst-responses-frontend-") && queue.ends_with(&format!("-{port}")), "{queue}");
    }
}
