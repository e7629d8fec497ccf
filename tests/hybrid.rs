//! The hybrid burst end to end, with both clouds running on this machine: the front end on SQS
//! and S3 (moto), the controller with a `private` Nova pool on the local OpenStack plane and a
//! `public` EC2 pool on moto (a test copy of `examples/configs/hybrid.toml`: caps 2 and 2,
//! tick 0.5 s), and `skyburst dev fleet-agent` starting a worker for each server and instance
//! from the user-data it was created with. The project is the test's own, so its quota faults
//! touch no other test.
//!
//! One test, in phases on the same deployment (each starts from an empty fleet):
//! 1. a burst: Nova up to the private ceiling, EC2 for the rest, every image answered, EC2
//!    drained before any Nova server; the timeline is written as CSV and PNG;
//! 2. the project's tokens revoked and its instance quota set to 0: the controller
//!    re-authenticates, and bursts to EC2 in the check that wanted Nova;
//! 3. the compute service disabled: Nova's scheduler finds no valid host, the servers go to
//!    ERROR; they are deleted and EC2 takes the work;
//! 4. nova-api killed under two busy-free private servers kept by `scaling.min = 2`: their last
//!    listing stands for `unavailable_grace_seconds`, then the demand bursts to EC2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::provider::ProvideCredentials;
use serde_json::Value;
use skyburst_providers::Provider;

use crate::support::moto::{self, bootstrap_and_publish, config_file, endpoint, set, unique, AMI};
use crate::support::openstack::{exclusive_plane, nova_api, Admin, TenantGone, FLAVOR, IMAGE};
use crate::support::service::{one_at_a_time, Service};
use crate::support::tls::TestCert;

/// Seconds an unreachable Nova's last listing stands in (phase 4).
const GRACE_S: f64 = 6.0;

/// A test copy of `examples/configs/hybrid.toml` on `endpoint` ([`moto::test_config`]) with
/// the test caps: private 2 and public 2.
fn hybrid_config(endpoint: &str, name: &str, cert: &TestCert) -> String {
    let mut config = moto::test_config("hybrid.toml", endpoint, name);
    let text = |s: &str| toml::Value::String(s.into());
    set(&mut config, "scaling", "unavailable_grace_seconds", GRACE_S.into());
    // Workers reach the vending endpoint at a URL rendered into their user-data: a port known
    // before the controller starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    set(&mut config, "controller", "metrics_port", i64::from(port).into());
    // Credentials travel over TLS; the controller pins its certificate in Nova workers' config.
    set(&mut config, "credentials", "url", text(&format!("https://127.0.0.1:{port}/v1/credentials")));
    let mut tls = toml::Table::new();
    tls.insert("cert".into(), text(cert.cert.to_str().unwrap()));
    tls.insert("key".into(), text(cert.key.to_str().unwrap()));
    set(&mut config, "controller", "tls", tls.into());
    set(&mut config, "credentials", "duration_seconds", 900.into());
    // The example waits up to 60 s for booting Nova servers before bursting; here the burst is
    // what is tested.
    config["scaling"].as_table_mut().unwrap().remove("latency_objective_seconds");
    let pools = config["pools"].as_array_mut().unwrap();
    let private = pools[0].as_table_mut().unwrap();
    private.insert("quota".into(), 2.into());
    private.insert("boot_seconds".into(), 1.0.into());
    private.insert("image".into(), text(IMAGE));
    private.insert("flavor".into(), text(FLAVOR));
    // The plane has no L2 agent to bind ports.
    private.insert("network".into(), text("none"));
    let public = pools[1].as_table_mut().unwrap();
    public.insert("quota".into(), 2.into());
    public.insert("boot_seconds".into(), 1.0.into());
    public.insert("image".into(), text(AMI));
    for key in ["subnets", "security_groups", "instance_profile"] {
        public.remove(key);
    }
    toml::to_string(&config).unwrap()
}

/// One look at the controller's fleet status.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t_s: f64,
    backlog: u64,
    private: u32,
    public: u32,
}

/// What the sampler saw: the fleet every 250 ms and every decision the controller recorded.
#[derive(Default)]
struct Timeline {
    samples: Vec<Sample>,
    decisions: BTreeMap<i64, Value>,
}

impl Timeline {
    /// Decisions made at or after `since_ms`, oldest first.
    fn decisions_since(&self, since_ms: i64) -> Vec<&Value> {
        self.decisions.range(since_ms..).map(|(_, d)| d).collect()
    }

    fn samples_since(&self, since_s: f64) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.t_s >= since_s)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Instances of `pool` in the status that still serve or boot (not stopping).
fn live(status: &Value, pool: &str) -> u32 {
    let pools = status["observation"]["pools"].as_array().cloned().unwrap_or_default();
    let Some(pool) = pools.iter().find(|p| p["name"] == pool) else { return 0 };
    pool["instances"].as_array().unwrap().iter().filter(|i| i["state"] != "stopping").count() as u32
}

/// Polls `GET /api/fleet` until `stop`.
fn sample(url: String, start: Instant, stop: Arc<AtomicBool>, into: Arc<Mutex<Timeline>>) {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(status) = http.get(format!("{url}/api/fleet")).send().and_then(|r| r.json::<Value>()) {
            let mut timeline = into.lock().unwrap_or_else(|p| p.into_inner());
            timeline.samples.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                backlog: status["observation"]["backlog"].as_u64().unwrap_or(0),
                private: live(&status, "private"),
                public: live(&status, "public"),
            });
            for decision in status["decisions"].as_array().into_iter().flatten() {
                timeline.decisions.insert(decision["at_ms"].as_i64().unwrap(), decision.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The actions of `decision` of kind `action` in `pool`.
fn actions<'a>(decision: &'a Value, action: &'a str, pool: &'a str) -> impl Iterator<Item = &'a Value> {
    decision["plan"]["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |a| a["action"] == action && a["pool"] == pool)
}

fn launched(decision: &Value, pool: &str) -> u64 {
    actions(decision, "launch", pool).map(|a| a["count"].as_u64().unwrap()).sum()
}

/// Uploads `count` images (bus and zidane in turn) and waits for every answer; returns the pool
/// that answered each.
fn burst(service: &Service, count: usize, tag: &str) -> Vec<String> {
    let jobs = service.post_images(count, tag);
    jobs.iter()
        .map(|job| {
            let answer = service.wait_for_job(job, Duration::from_secs(240));
            assert_eq!(answer["status"], "done", "{answer}");
            let labels = answer["result"]["objects"].as_array().unwrap();
            assert!(labels.iter().any(|o| o["label"] == "person"), "{answer}");
            answer["pool"].as_str().unwrap().to_string()
        })
        .collect()
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// The vending endpoint refuses a spent token, a token on another server, a wrong refresh
/// token and a made-up server, all with the same answer, and a malformed body; it renews with
/// the worker's current refresh token, and with the one it replaced only within the grace; it
/// rate-limits an address that keeps asking.
fn check_vending(
    service: &Service,
    runtime: &tokio::runtime::Runtime,
    nova: &skyburst_providers::nova::NovaProvider,
    url: &str,
    cert: &TestCert,
) {
    let servers = runtime.block_on(nova.list()).unwrap();
    let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{servers:?}");
    let user_data = runtime.block_on(nova.user_data(ids[0])).unwrap();
    let worker_toml = skyburst::boot::worker_config_from_user_data(&user_data).unwrap();
    let worker: toml::Table = toml::from_str(&worker_toml).unwrap();
    let token = worker["credentials"]["token"].as_str().unwrap();
    assert_eq!(token.len(), 64, "a server's own token, not the placeholder: {token}");
    let pin = worker["credentials"]["controller_cert_sha256"].as_str().unwrap();
    assert_eq!(pin, cert.pin.to_string(), "the worker pins the controller's certificate");
    assert!(url.starts_with("https://"), "{url}");
    // A worker pinning another certificate refuses this controller before sending anything.
    let wrong: skyburst::tls::Pin = "ab".repeat(32).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let impostor = skyburst::credentials::client::VendedCredentialsProvider::new(
        url.to_string(),
        Some(wrong),
        ids[1].to_string(),
        "0".repeat(64),
        dir.path().join("refresh"),
    )
    .unwrap();
    let refused = runtime.block_on(impostor.provide_credentials()).unwrap_err();
    let refused = skyburst::error::error_chain(&refused);
    assert!(refused.contains(&format!("not the pinned {wrong}")), "{refused}");
    assert!(refused.contains(&cert.pin.to_string()), "the error names what was shown: {refused}");
    let http = cert.client();
    let post = |body: Value| {
        let response = http.post(url).json(&body).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let refusals = [
        // The worker spent its one-time token.
        serde_json::json!({"instance_id": ids[0], "token": token}),
        // A token is bound to its server.
        serde_json::json!({"instance_id": ids[1], "token": token}),
        serde_json::json!({"instance_id": ids[0], "refresh_token": "0".repeat(64)}),
        serde_json::json!({"instance_id": "no-such-server", "token": "0".repeat(64)}),
        serde_json::json!({"instance_id": ids[0], "token": "short"}),
    ];
    let answers: Vec<(u16, Value)> = refusals.into_iter().map(post).collect();
    assert!(answers.iter().all(|(status, _)| *status == 403), "{answers:?}");
    assert!(answers.iter().all(|(_, body)| *body == answers[0].1), "every refusal looks the same: {answers:?}");
    let response = http.post(url).header("content-type", "application/json").body("{not json").send().unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // The worker keeps its refresh token where the fleet agent started it.
    let refresh_file =
        service.data_dir().join("fleet-agent").join(ids[0]).join("credentials").join(format!("{}.refresh", ids[0]));
    let refresh = std::fs::read_to_string(&refresh_file).unwrap_or_else(|e| panic!("{}: {e}", refresh_file.display()));
    let (status, renewed) = post(serde_json::json!({"instance_id": ids[0], "refresh_token": refresh}));
    assert_eq!(status, 200, "{renewed}");
    assert!(renewed["access_key_id"].as_str().is_some_and(|k| !k.is_empty()), "{renewed}");
    // Its answer lost, the worker asks again with the token it holds: good within the grace.
    let (status, again) = post(serde_json::json!({"instance_id": ids[0], "refresh_token": refresh}));
    assert_eq!(status, 200, "a just-rotated refresh token is good for the grace: {again}");
    let lost = renewed["refresh_token"].as_str().unwrap();
    let (status, body) = post(serde_json::json!({"instance_id": ids[0], "refresh_token": lost}));
    assert_eq!(status, 403, "the lost answer's token was replaced: {body}");
    std::thread::sleep(Duration::from_millis(2500));
    let (status, body) = post(serde_json::json!({"instance_id": ids[0], "refresh_token": refresh}));
    assert_eq!(status, 403, "past the grace a refresh token is good once: {body}");
    // Hand the worker its next refresh token, as its own renewal would have.
    std::fs::write(&refresh_file, again["refresh_token"].as_str().unwrap()).unwrap();

    // An address that keeps asking is refused before any check, with when to come back.
    let limited = (0..40)
        .map(|_| http.post(url).json(&serde_json::json!({"instance_id": "x", "token": "0".repeat(64)})).send().unwrap())
        .find(|r| r.status().as_u16() == 429)
        .expect("40 requests at once from one address are rate-limited");
    assert!(limited.headers().get("retry-after").is_some());
}

/// Starts nova-api again if a phase that killed it fails midway: other tests need it.
struct NovaApiBack(bool);

impl Drop for NovaApiBack {
    fn drop(&mut self) {
        if self.0 {
            nova_api("start");
        }
    }
}

/// Writes the timeline as CSV and PNG under the test's target directory; returns the CSV path.
fn write_timeline(timeline: &Timeline) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hybrid");
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("timeline.csv");
    let mut text = String::from("t_seconds,backlog,private,public\n");
    for s in &timeline.samples {
        text.push_str(&format!("{:.2},{},{},{}\n", s.t_s, s.backlog, s.private, s.public));
    }
    std::fs::write(&csv, text).unwrap();
    let series = |label: &str, value: fn(&Sample) -> f64| skyburst::plot::Series {
        label: label.into(),
        points: timeline.samples.iter().map(|s| (s.t_s, value(s))).collect(),
    };
    let pools = [series("private (Nova)", |s| s.private as f64), series("public (EC2)", |s| s.public as f64)];
    skyburst::plot::timeline_png(
        &dir.join("timeline.png"),
        "hybrid burst: instances per pool and backlog",
        &pools,
        &series("backlog", |s| s.backlog as f64),
    )
    .unwrap();
    csv
}

#[test]
fn hybrid_burst_fills_nova_first_bursts_to_ec2_and_drains_ec2_first() {
    let _heavy = one_at_a_time();
    // Phase 4 takes nova-api down.
    let _plane = exclusive_plane();
    let endpoint = endpoint();
    let name = unique("hybrid");
    let admin = Admin::connect();
    let tenant = admin.create_tenant(&name);
    let _gone = TenantGone(&admin, &tenant);
    let cert = TestCert::new();
    let text = hybrid_config(&endpoint, &name, &cert);
    let credentials_url =
        toml::from_str::<toml::Table>(&text).unwrap()["credentials"]["url"].as_str().unwrap().to_string();
    bootstrap_and_publish(config_file(&text).path());

    let mut service = Service::start_with_config(Some(&text), &[]);
    service.trust(&cert);
    for (key, value) in tenant.env(admin.keystone()) {
        service.set_env(&key, &value);
    }
    // check_vending waits out a rotated refresh token's grace.
    service.set_env("SKYBURST_CREDENTIALS__REFRESH_GRACE_SECONDS", "2");
    let metrics_url = service.start_controller(&[]);
    service.start_fleet_agent();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ec2 = moto::ec2_provider(&runtime, &endpoint, &text, 1);
    let nova_env = tenant.env(admin.keystone());
    let nova = {
        // This process's OS_* are the administrator's; the provider reads the tenant's.
        let cloud = skyburst_providers::nova::cloud_config_from(nova_env.clone()).unwrap();
        skyburst_providers::nova::NovaProvider::new(
            skyburst_providers::nova::NovaSettings {
                pool: "private".into(),
                deployment: name.clone(),
                flavor: FLAVOR.into(),
                network: "none".into(),
                security_groups: Vec::new(),
                key_name: None,
            },
            cloud,
        )
    };
    let fleet_empty = |what: &str| {
        let started = Instant::now();
        loop {
            let (servers, instances) = (runtime.block_on(nova.list()).unwrap(), runtime.block_on(ec2.list()).unwrap());
            if servers.is_empty() && instances.is_empty() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{what}: still {servers:?} {instances:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };

    let start = Instant::now();
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (url, stop, timeline) = (service.url.clone(), stop.clone(), timeline.clone());
        std::thread::spawn(move || sample(url, start, stop, timeline))
    };

    // 1. The burst.
    let t1 = now_ms();
    let answered = burst(&service, 40, "burst");
    let drained_s = start.elapsed().as_secs_f64();
    fleet_empty("after the burst");
    {
        let t = timeline.lock().unwrap();
        let first = |pool: fn(&Sample) -> u32| t.samples.iter().find(|s| pool(s) > 0).map(|s| s.t_s);
        let (first_private, first_public) = (first(|s| s.private).unwrap(), first(|s| s.public).unwrap());
        let max = |pool: fn(&Sample) -> u32| t.samples.iter().map(pool).max().unwrap();
        eprintln!(
            "hybrid burst: first private instance {first_private:.1} s, first public {first_public:.1} s, \
             drained {drained_s:.1} s; at most {} private, {} public; answers by pool: {} private, {} public",
            max(|s| s.private),
            max(|s| s.public),
            answered.iter().filter(|p| *p == "private").count(),
            answered.iter().filter(|p| *p == "public").count(),
        );
        assert_eq!((max(|s| s.private), max(|s| s.public)), (2, 2), "both pools filled to their caps");
        assert!(first_private <= first_public, "Nova first: {first_private} s, EC2 {first_public} s");
        let decisions = t.decisions_since(t1);
        // Nova up to its ceiling before (or in the same check as) the first EC2 launch; uploads
        // still arriving may make that more than one check.
        let first_public = decisions.iter().position(|d| launched(d, "public") > 0).unwrap();
        let private_by_then: u64 = decisions[..=first_public].iter().map(|d| launched(d, "private")).sum();
        assert_eq!(private_by_then, 2, "Nova filled first: {:?}", &decisions[..=first_public]);
        // Draining: every EC2 instance is terminated before any Nova server.
        let terminated: Vec<String> = decisions
            .iter()
            .flat_map(|d| d["plan"]["actions"].as_array().unwrap().iter())
            .filter(|a| a["action"] == "terminate")
            .map(|a| a["pool"].as_str().unwrap().to_string())
            .collect();
        let last_public = terminated.iter().rposition(|p| p == "public").unwrap();
        let first_private = terminated.iter().position(|p| p == "private").unwrap();
        assert!(last_public < first_private, "EC2 drains first: {terminated:?}");
        let csv = write_timeline(&t);
        eprintln!("hybrid timeline: {} and timeline.png beside it", csv.display());
    }
    // The Nova workers had no AWS keys: each got its credentials from the controller.
    let metrics = service.get_text(&metrics_url);
    let vended = counter(&metrics, r#"skyburst_credential_requests_total{kind="token",outcome="vended"}"#);
    assert!(vended >= 2.0, "each private worker exchanged its token: {metrics}");

    // 2. Revoked tokens, then no Nova quota: the check that wants Nova servers starts EC2
    //    instances instead.
    let old = admin.token_for(&tenant.name);
    admin.revoke_tokens(&tenant.user_id);
    assert!(!admin.token_valid(&old), "Keystone revoked the tenant's tokens");
    admin.set_instance_quota(&tenant.project_id, 0);
    let t2 = now_ms();
    let since = start.elapsed().as_secs_f64();
    let answered = burst(&service, 4, "no-quota");
    fleet_empty("after the quota phase");
    {
        let t = timeline.lock().unwrap();
        let decisions = t.decisions_since(t2);
        let first_launch = decisions.iter().find(|d| launched(d, "private") + launched(d, "public") > 0).unwrap();
        assert!(launched(first_launch, "public") > 0, "EC2 in the same check: {first_launch}");
        assert!(t.samples_since(since).all(|s| s.private == 0), "no Nova server without quota");
        assert!(answered.iter().all(|p| p == "public"), "{answered:?}");
        let refused: Vec<&Value> = decisions.iter().flat_map(|d| d["errors"].as_array().unwrap()).collect();
        assert!(
            refused.iter().all(|e| !e.as_str().unwrap().contains("credentials refused")),
            "a revoked token is renewed, not an error: {refused:?}"
        );
        eprintln!("hybrid quota 0: first launching check {first_launch}");
    }
    admin.set_instance_quota(&tenant.project_id, 10);

    // 3. No valid host: the servers go to ERROR, are deleted, and EC2 takes the work.
    admin.set_compute_enabled(false);
    let t3 = now_ms();
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| burst(&service, 4, "no-host")));
    admin.set_compute_enabled(true);
    let answered = answered.unwrap_or_else(|e| std::panic::resume_unwind(e));
    fleet_empty("after the no-valid-host phase");
    {
        let t = timeline.lock().unwrap();
        let decisions = t.decisions_since(t3);
        let failed = decisions
            .iter()
            .position(|d| d["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("error state")));
        let failed = failed.unwrap_or_else(|| panic!("no decision saw the ERROR servers: {decisions:?}"));
        let deleted = decisions[failed..]
            .iter()
            .flat_map(|d| actions(d, "terminate", "private"))
            .any(|a| a["reason"].to_string().contains("error_state"));
        assert!(deleted, "ERROR servers are deleted: {:?}", &decisions[failed..]);
        assert!(decisions[failed..].iter().any(|d| launched(d, "public") > 0), "EC2 takes over");
        assert!(answered.iter().all(|p| p == "public"), "{answered:?}");
    }

    // 4. nova-api down under two private servers: they count for the grace period, then EC2.
    service.kill_controller();
    service.set_env("SKYBURST_SCALING__MIN", "2");
    service.start_controller(&[]);
    let started = Instant::now();
    loop {
        let fleet = service.get("/api/fleet").1;
        let running = fleet["observation"]["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "private")
            .flat_map(|p| p["instances"].as_array().unwrap())
            .filter(|i| i["state"] == "running")
            .count();
        if running == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "two private workers within 90 s: {fleet}");
        std::thread::sleep(Duration::from_millis(250));
    }
    check_vending(&service, &runtime, &nova, &credentials_url, &cert);
    nova_api("kill");
    let back = NovaApiBack(true);
    let killed = start.elapsed().as_secs_f64();
    let started = Instant::now();
    let burst_at = loop {
        let seen = timeline.lock().unwrap().samples_since(killed).find(|s| s.public > 0).map(|s| s.t_s);
        if let Some(t) = seen {
            break t;
        }
        assert!(started.elapsed() < Duration::from_secs_f64(GRACE_S + 30.0), "no burst after nova-api died");
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(back);
    let waited = burst_at - killed;
    eprintln!("hybrid nova-api down: EC2 launched {waited:.1} s after the kill (grace {GRACE_S} s)");
    assert!(waited >= GRACE_S - 0.5, "the last listing stands for the grace period: burst after {waited:.1} s");
    assert!(waited <= GRACE_S + 10.0, "then the demand bursts: {waited:.1} s");

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    write_timeline(&timeline.lock().unwrap());
}
