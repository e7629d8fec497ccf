//! A running embedded deployment for tests: `skyburst serve` and workers as real processes on
//! a free loopback port, sharing a temporary data directory; killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{model_dir, skyburst};

/// End-to-end tests run one at a time: each starts detector workers on a 2-core machine.
static HEAVY: Mutex<()> = Mutex::new(());

/// Takes the heavy-test lock (a failed test does not poison the rest).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Front end, workers and their data directory.
pub struct Service {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The front end process.
    pub serve: Child,
    /// Worker processes.
    pub workers: Vec<Child>,
    /// The controller, once started.
    pub controller: Option<Child>,
    /// Fleet agents (`dev fleet-agent`): stopped with SIGTERM, so they stop their workers.
    pub agents: Vec<Child>,
    /// `--config` file given to every process, if any.
    pub config: Option<tempfile::NamedTempFile>,
    /// Config overrides given to every process, as `SKYBURST_*` pairs.
    env: Vec<(String, String)>,
    data: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl Service {
    /// Starts `serve` with short test knobs plus `env` overrides (`("FRONTEND__WAIT_SECONDS", "1")`).
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with_config(None, env)
    }

    /// As [`Service::start`], with a TOML config file (for `[[pools]]`, which the environment
    /// cannot set).
    pub fn start_with_config(toml: Option<&str>, env: &[(&str, &str)]) -> Self {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Self::launch(toml, env, http)
    }

    /// As [`Service::start`], serving HTTPS with `cert`; the test's client trusts it alone.
    pub fn start_https(env: &[(&str, &str)], cert: &super::tls::TestCert) -> Self {
        let mut all = vec![
            ("FRONTEND__TLS__CERT", cert.cert.to_str().unwrap()),
            ("FRONTEND__TLS__KEY", cert.key.to_str().unwrap()),
        ];
        all.extend_from_slice(env);
        Self::launch(None, &all, cert.client())
    }

    /// As [`Service::start`], with the data directory in `data` (a small file system, to fill).
    pub fn start_in(data: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Self::launch_in(data, None, env, http)
    }

    fn launch(toml: Option<&str>, env: &[(&str, &str)], http: reqwest::blocking::Client) -> Self {
        Self::launch_in(tempfile::tempdir().unwrap(), toml, env, http)
    }

    fn launch_in(
        data: tempfile::TempDir,
        toml: Option<&str>,
        env: &[(&str, &str)],
        http: reqwest::blocking::Client,
    ) -> Self {
        let mut all = vec![
            ("SKYBURST_DETECTOR__MODEL_DIR".to_string(), model_dir().display().to_string()),
            ("SKYBURST_QUEUE__VISIBILITY_TIMEOUT_SECONDS".to_string(), "2".to_string()),
            ("SKYBURST_QUEUE__LONG_POLL_SECONDS".to_string(), "1".to_string()),
        ];
        all.extend(env.iter().map(|(k, v)| (format!("SKYBURST_{k}"), v.to_string())));
        let config = toml.map(|text| {
            let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            std::fs::write(file.path(), text).unwrap();
            file
        });
        let mut service = Service {
            url: String::new(),
            serve: dummy(),
            workers: Vec::new(),
            controller: None,
            agents: Vec::new(),
            config,
            env: all,
            data,
            http,
        };
        service.restart_serve();
        service
    }

    /// A client for a front end some other process started (`skyburst up`).
    pub fn attach(url: &str) -> Self {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let data = tempfile::tempdir().unwrap();
        Service {
            url: url.to_string(),
            serve: dummy(),
            workers: Vec::new(),
            controller: None,
            agents: Vec::new(),
            config: None,
            env: Vec::new(),
            data,
            http,
        }
    }

    /// Trusts `cert` (and no other certificate) from now on: for a controller serving HTTPS
    /// beside a plain-HTTP front end.
    pub fn trust(&mut self, cert: &super::tls::TestCert) {
        self.http = cert.client();
    }

    /// Sets an environment variable (a full name, such as `OS_USERNAME`) for every process
    /// started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// (Re)starts the front end on a new free port.
    pub fn restart_serve(&mut self) {
        self.restart_serve_on("0");
    }

    /// Restarts the front end on the port it had, as a supervisor would: clients that
    /// reconnect by themselves (a browser's EventSource) find it there again.
    pub fn restart_serve_on_same_port(&mut self) {
        let port = self.url.rsplit(':').next().unwrap().to_string();
        self.restart_serve_on(&port);
    }

    fn restart_serve_on(&mut self, port: &str) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
        let mut child = self.command(&["serve", "--port", port]).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://") || w.starts_with("https://"));
        self.url = url.unwrap_or_else(|| panic!("serve printed {line:?}")).to_string();
        self.serve = child;
        self.wait_until(Duration::from_secs(10), |s| s.get("/readyz").0 == 200);
    }

    /// Starts a worker named `id`.
    pub fn start_worker(&mut self, id: &str) -> u32 {
        let child = self.command(&["worker", "--instance-id", id]).spawn().unwrap();
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// Starts `skyburst controller` (extra `args` such as `--dry-run`); returns its metrics URL.
    pub fn start_controller(&mut self, args: &[&str]) -> String {
        let mut all = vec!["controller"];
        all.extend_from_slice(args);
        let mut child = self.command(&all).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://") || w.starts_with("https://"));
        let url = url.unwrap_or_else(|| panic!("controller printed {line:?}")).to_string();
        self.controller = Some(child);
        url
    }

    /// Starts `skyburst dev fleet-agent`, which runs a local worker for each emulated instance.
    pub fn start_fleet_agent(&mut self) {
        let dir = self.data.path().join("fleet-agent");
        let args = ["dev", "fleet-agent", "--interval-seconds", "0.3", "--work-dir", dir.to_str().unwrap()];
        let child = self.command(&args).stdout(Stdio::null()).spawn().unwrap();
        self.agents.push(child);
    }

    /// SIGKILLs the controller (its workers live on).
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /api/fleet` once the controller has written it.
    pub fn fleet(&self) -> Value {
        self.wait_until(Duration::from_secs(30), |s| s.get("/api/fleet").0 == 200);
        self.get("/api/fleet").1
    }

    /// GET any URL → body text.
    pub fn get_text(&self, url: &str) -> String {
        self.http.get(url).send().unwrap().text().unwrap()
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = skyburst();
        if let Some(file) = &self.config {
            command.arg("--config").arg(file.path());
        }
        command.arg("--data-dir").arg(self.data.path()).args(args).stdin(Stdio::null());
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// A bucket's directory in the embedded store.
    pub fn bucket(&self, name: &str) -> PathBuf {
        self.data.path().join("store").join(name)
    }

    /// Files stored under a bucket (recursively).
    pub fn objects(&self, bucket: &str) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum()
            })
        }
        count(&self.bucket(bucket).join("images"))
    }

    /// Rows in the result index.
    pub fn index_rows(&self) -> i64 {
        let path = self.data.path().join("index.db");
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0)).unwrap()
    }

    /// Messages in the request queue, whatever their state.
    pub fn queued(&self) -> u64 {
        let q = self.get("/api/queues").1;
        ["visible", "in_flight", "delayed"].iter().map(|k| q["requests"][k].as_u64().unwrap()).sum()
    }

    /// Posts `count` images (bus.jpg and zidane.jpg in turn, ids `<tag>-<i>`) to `/api/jobs`;
    /// returns their job ids.
    pub fn post_images(&self, count: usize, tag: &str) -> Vec<String> {
        (0..count)
            .map(|i| {
                let image = if i % 2 == 0 { "bus.jpg" } else { "zidane.jpg" };
                let (status, body) = self.post_json("/api/jobs", &detect_body(&format!("{tag}-{i}"), image));
                assert_eq!(status, 202, "{body}");
                body["job_id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// GET → (status, JSON body or Null).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    /// POST with a content type → (status, headers' Retry-After, JSON body).
    pub fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (response.status().as_u16(), retry, response.json().unwrap_or(Value::Null))
    }

    /// POST JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, value) = self.post(path, "application/json", serde_json::to_vec(body).unwrap());
        (status, value)
    }

    /// POST a multipart form with one file field.
    pub fn upload(&self, path: &str, field: &str, file: &str, bytes: Vec<u8>) -> (u16, Value) {
        let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(file.to_string());
        let form = reqwest::blocking::multipart::Form::new().part(field.to_string(), part);
        let response = self.http.post(format!("{}{path}", self.url)).multipart(form).send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    /// Asserts that refused requests kept nothing: no stored image, queued job or index row.
    pub fn assert_nothing_kept(&self) {
        assert_eq!(self.objects("skyburst-input"), 0, "an image was stored");
        assert_eq!(self.queued(), 0, "a job was queued");
        assert_eq!(self.index_rows(), 0, "an index row was written");
    }

    /// Polls until `done` holds or `timeout` passes (then panics).
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(started.elapsed() < timeout, "condition not met within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a job to be done or failed; returns its status document.
    pub fn wait_for_job(&self, job_id: &str, timeout: Duration) -> Value {
        self.wait_until(timeout, |s| {
            matches!(s.get(&format!("/api/jobs/{job_id}")).1["status"].as_str(), Some("done" | "failed"))
        });
        self.get(&format!("/api/jobs/{job_id}")).1
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            stop_gracefully(agent, Duration::from_secs(20));
        }
        self.kill_controller();
        for child in self.workers.iter_mut().chain(std::iter::once(&mut self.serve)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_local_pools(self.data.path());
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within `timeout`.
pub fn stop_gracefully(child: &mut Child, timeout: Duration) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs every worker the controller's `local` pools started (they outlive the controller
/// by design).
pub fn kill_local_pools(data_dir: &Path) {
    for pid in local_pool_pids(data_dir) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

/// PIDs in the local pools' registries (`<data>/control/local-*.json`).
pub fn local_pool_pids(data_dir: &Path) -> Vec<u32> {
    local_pool_instances(data_dir).into_iter().map(|(_, pid)| pid).collect()
}

/// (instance id, PID) in the local pools' registries.
pub fn local_pool_instances(data_dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("control")) else { return Vec::new() };
    let mut instances = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("local-") && name.ends_with(".json") {
            let registry: Value =
                serde_json::from_slice(&std::fs::read(entry.path()).unwrap_or_default()).unwrap_or_default();
            for instance in registry["instances"].as_array().into_iter().flatten() {
                if let (Some(id), Some(pid)) = (instance["id"].as_str(), instance["pid"].as_u64()) {
                    instances.push((id.to_string(), pid as u32));
                }
            }
        }
    }
    instances
}

/// True if a process with this PID exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn dummy() -> Child {
    std::process::Command::new("true").spawn().unwrap()
}

/// A test image's bytes.
pub fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(super::image(name)).unwrap()
}

/// `{"id", "image"}` for a test image.
pub fn detect_body(id: &str, name: &str) -> Value {
    use base64::Engine;
    serde_json::json!({ "id": id, "image": base64::engine::general_purpose::STANDARD.encode(image_bytes(name)) })
}

/// Sends a signal to a process.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// `skyburst up` with `args` (after `up`) on a free port, its data in `data`: the child and the
/// URL it prints first. Stop it with SIGINT, as Ctrl-C would.
pub fn start_up(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut up = skyburst()
        .args(["--data-dir", data.to_str().unwrap(), "up", "--port", "0"])
        .args(args)
        .env("SKYBURST_DETECTOR__MODEL_DIR", model_dir())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(up.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("up prints its URL").to_string();
    (up, url)
}
