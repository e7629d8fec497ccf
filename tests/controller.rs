//! The controller end to end: real `skyburst up` / `controller` / `worker` processes, the
//! `local` pool, real HTTP. Test knobs: cap 4, tick 0.5 s, heartbeats every 0.5 s.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::service::{self, detect_body, one_at_a_time, Service};
use crate::support::{model_dir, skyburst};

/// Cap 4 on a local pool of quota 4; everything else short.
const KNOBS: &str = r#"
# The decisions below are seed-hybrid's (the slo policy would not grow for 40 jobs that one
# worker clears well within its objective).
[scaling]
policy = "seed-hybrid"
min = 1
max = 4
debounce_checks = 3

[controller]
tick_seconds = 0.5
lease_seconds = 1.5
metrics_port = 0

[worker]
heartbeat_seconds = 0.5

[[pools]]
name = "local"
provider = "local"
quota = 4
boot_seconds = 1
"#;

const ENV: [(&str, &str); 1] = [("QUEUE__LONG_POLL_SECONDS", "1")];

/// Queues `n` jobs at once through `/api/jobs`; returns their ids.
fn burst(service: &Service, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (status, body) = service.post_json("/api/jobs", &detect_body(&format!("c{i}"), "bus.jpg"));
            assert_eq!(status, 202, "{body}");
            body["job_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Instances that take jobs (pending or running, not draining) in a fleet status.
fn capacity(fleet: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for pool in fleet["observation"]["pools"].as_array().into_iter().flatten() {
        for i in pool["instances"].as_array().into_iter().flatten() {
            let state = i["state"].as_str().unwrap_or_default();
            let activity = i["activity"].as_str().unwrap_or_default();
            if matches!(state, "pending" | "running") && !matches!(activity, "draining" | "drained") {
                ids.push(i["id"].as_str().unwrap().to_string());
            }
        }
    }
    ids
}

fn instances(fleet: &Value) -> usize {
    fleet["observation"]["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["instances"].as_array().unwrap().len())
        .sum()
}

fn launches_after(fleet: &Value, since_ms: i64) -> u64 {
    let decisions = fleet["decisions"].as_array().cloned().unwrap_or_default();
    decisions
        .iter()
        .filter(|d| d["at_ms"].as_i64().unwrap() > since_ms)
        .flat_map(|d| d["plan"]["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["action"] == "launch")
        .map(|a| a["count"].as_u64().unwrap())
        .sum()
}

fn all_done(service: &Service, jobs: &[String]) -> bool {
    jobs.iter().all(|id| service.get(&format!("/api/jobs/{id}")).1["status"] == "done")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn up_scales_the_local_pool_out_for_a_burst_and_back_to_the_minimum() {
    let _heavy = one_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(config.path(), KNOBS).unwrap();
    let mut up = skyburst()
        .arg("--config")
        .arg(config.path())
        .arg("--data-dir")
        .arg(data.path())
        .args(["up", "--port", "0"])
        .env("SKYBURST_DETECTOR__MODEL_DIR", model_dir())
        .env("SKYBURST_QUEUE__LONG_POLL_SECONDS", "1")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("up printed its URL").unwrap();
        if let Some(rest) = line.strip_prefix("skyburst up: ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let service = Service::attach(&url);

    // Idle: the minimum, one worker.
    service.wait_until(Duration::from_secs(60), |s| capacity(&s.fleet()).len() == 1);
    let jobs = burst(&service, 40);
    let started = Instant::now();
    let mut peak = 0;
    while !all_done(&service, &jobs) {
        assert!(started.elapsed() < Duration::from_secs(180), "40 jobs not done in 180 s");
        peak = peak.max(capacity(&service.fleet()).len());
        std::thread::sleep(Duration::from_millis(200));
    }
    let fleet = service.fleet();
    let planned_peak =
        fleet["decisions"].as_array().unwrap().iter().map(|d| d["decision"]["desired"].as_u64().unwrap()).max();
    assert_eq!(planned_peak, Some(4), "seed-hybrid wants ceil(40/2) = 20, capped at 4");
    assert_eq!(peak, 4, "the fleet reached what the decision log planned");

    // Drained queue: back to one worker, the others terminated while idle.
    service.wait_until(Duration::from_secs(30), |s| {
        let fleet = s.fleet();
        capacity(&fleet).len() == 1 && instances(&fleet) == 1
    });
    let pids = service::local_pool_pids(data.path());
    assert_eq!(pids.len(), 1);

    service::signal(up.id(), nix::sys::signal::Signal::SIGTERM);
    let status = up.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(pids.iter().all(|p| !service::alive(*p)), "up stopped the controller's workers");
}

#[test]
fn a_restarted_controller_adopts_the_running_workers() {
    let _heavy = one_at_a_time();
    let mut service = Service::start_with_config(Some(KNOBS), &ENV);
    let metrics = service.start_controller(&[]);
    service.wait_until(Duration::from_secs(60), |s| capacity(&s.fleet()).len() == 1);
    let jobs = burst(&service, 40);
    service.wait_until(Duration::from_secs(60), |s| capacity(&s.fleet()).len() == 4);
    let before: BTreeSet<String> = capacity(&service.fleet()).into_iter().collect();
    let text = service.get_text(&metrics);
    assert!(text.contains("skyburst_launches_total{pool=\"local\"} 4"), "{text}");

    service.kill_controller();
    let restarted_at = now_ms();
    service.start_controller(&[]);
    // The new controller takes over once the dead one's lease lapses (1.5 s).
    service.wait_until(Duration::from_secs(30), |s| s.fleet()["updated_at_ms"].as_i64().unwrap() > restarted_at + 2000);
    let after: BTreeSet<String> = capacity(&service.fleet()).into_iter().collect();
    assert!(after.is_subset(&before), "no new workers: before {before:?}, after {after:?}");
    service.wait_until(Duration::from_secs(180), |s| all_done(s, &jobs));
    assert_eq!(launches_after(&service.fleet(), restarted_at), 0, "the restarted controller launched nothing");
}

#[test]
fn dry_run_decides_and_logs_but_starts_nothing() {
    let _heavy = one_at_a_time();
    let mut service = Service::start_with_config(Some(KNOBS), &ENV);
    service.start_controller(&["--dry-run"]);
    burst(&service, 6);
    service.wait_until(Duration::from_secs(30), |s| {
        let fleet = s.fleet();
        fleet["decisions"].as_array().unwrap().iter().any(|d| d["decision"]["desired"] == 3)
    });
    let fleet = service.fleet();
    assert_eq!(fleet["dry_run"], true);
    assert_eq!(instances(&fleet), 0, "nothing launched");
    let planned = launches_after(&fleet, 0);
    assert!(planned >= 3, "the plan is logged: {}", fleet["decisions"]);
    assert!(fleet["decisions"].as_array().unwrap().iter().all(|d| d["acted"] == false));
    assert!(service::local_pool_pids(service.data_dir()).is_empty());
}

#[test]
fn a_full_pool_is_re_planned_onto_the_next_in_the_same_check() {
    let _heavy = one_at_a_time();
    // "near" asks for more memory per worker than any machine has: every launch there answers
    // Capacity, and the same check launches on "far" instead.
    let config = r#"
[scaling]
min = 1
max = 4

[controller]
tick_seconds = 0.5
lease_seconds = 1.5
metrics_port = 0

[[pools]]
name = "near"
provider = "local"
priority = 1
quota = 4
memory_mb = 1000000000

[[pools]]
name = "far"
provider = "local"
priority = 2
quota = 4
"#;
    let mut service = Service::start_with_config(Some(config), &ENV);
    service.start_controller(&[]);
    service.wait_until(Duration::from_secs(30), |s| capacity(&s.fleet()).len() == 1);
    let fleet = service.fleet();
    let first = fleet["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| !d["plan"]["actions"].as_array().unwrap().is_empty())
        .unwrap();
    let actions: Vec<String> = first["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["action"].as_str().unwrap(), a["pool"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, ["launch near", "launch far"], "{first}");
    assert!(first["errors"][0].as_str().unwrap().contains("no capacity"), "{first}");
    let pools = fleet["observation"]["pools"].as_array().unwrap();
    let count = |name: &str| pools.iter().find(|p| p["name"] == name).unwrap()["instances"].as_array().unwrap().len();
    assert_eq!((count("near"), count("far")), (0, 1));
}

#[test]
fn a_worker_that_dies_is_replaced() {
    let _heavy = one_at_a_time();
    let mut service = Service::start_with_config(Some(KNOBS), &ENV);
    service.start_controller(&[]);
    service.wait_until(Duration::from_secs(30), |s| capacity(&s.fleet()).len() == 1);
    let pids = service::local_pool_pids(service.data_dir());
    assert_eq!(pids.len(), 1);
    service::signal(pids[0], nix::sys::signal::Signal::SIGKILL);
    // The local provider reports the dead process as `error`; the planner terminates it and
    // launches a replacement in the same check.
    service.wait_until(Duration::from_secs(30), |s| {
        let now = service::local_pool_pids(s.data_dir());
        now.len() == 1 && now[0] != pids[0] && service::alive(now[0])
    });
    let fleet = service.fleet();
    let stuck = fleet["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["plan"]["actions"].as_array().unwrap().iter().any(|a| a["reason"]["stuck"] == "error_state"));
    assert!(stuck, "the decision log reports the stuck instance: {}", fleet["decisions"]);
}

/// The actions the decision log holds for one instance, as `action` or `action (reason)`.
fn actions_for(fleet: &Value, id: &str) -> Vec<String> {
    let decisions = fleet["decisions"].as_array().cloned().unwrap_or_default();
    decisions
        .iter()
        .flat_map(|d| d["plan"]["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["id"] == id)
        .map(|a| match a["reason"].as_str() {
            Some(reason) => format!("{} ({reason})", a["action"].as_str().unwrap()),
            None => a["action"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn a_busy_worker_chosen_for_scale_in_drains_first_and_is_never_killed_mid_job() {
    let _heavy = one_at_a_time();
    // Scale-in must wait past the frozen job's 2 s visibility timeout (8 checks × 0.5 s): the
    // burst now drains in well under a second, and with 3 checks the controller scaled in to the
    // one worker still holding a job, the frozen one, leaving its job to the 60 s stuck rule.
    let knobs = KNOBS.replace("min = 1", "min = 0").replace("debounce_checks = 3", "debounce_checks = 8");
    let mut service = Service::start_with_config(Some(&knobs), &ENV);
    service.start_controller(&[]);
    let jobs = burst(&service, 24);
    service.wait_until(Duration::from_secs(60), |s| capacity(&s.fleet()).len() == 4);
    // Freeze one worker in the middle of a job: its last heartbeat says busy. The others finish
    // the rest (its job too, after the 2 s visibility timeout), so the queue empties and the
    // controller scales in to 0 while this one still looks busy.
    let heartbeats = service.bucket("skyburst-output").join("control/heartbeats");
    let frozen = (0..200)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let (id, pid) = service::local_pool_instances(service.data_dir()).into_iter().find(|(id, _)| {
                std::fs::read(heartbeats.join(id))
                    .is_ok_and(|b| serde_json::from_slice::<Value>(&b).unwrap()["activity"] == "busy")
            })?;
            service::signal(pid, nix::sys::signal::Signal::SIGSTOP);
            let beat: Value = serde_json::from_slice(&std::fs::read(heartbeats.join(&id)).unwrap()).unwrap();
            if beat["activity"] == "busy" {
                Some((id, pid))
            } else {
                service::signal(pid, nix::sys::signal::Signal::SIGCONT);
                None
            }
        })
        .expect("a worker caught busy");
    let (id, pid) = frozen;
    service.wait_until(Duration::from_secs(120), |s| all_done(s, &jobs));
    service.wait_until(Duration::from_secs(30), |s| actions_for(&s.fleet(), &id).contains(&"drain".to_string()));
    assert!(service::alive(pid), "asked to drain, not killed");
    service::signal(pid, nix::sys::signal::Signal::SIGCONT);
    service.wait_until(Duration::from_secs(30), |s| {
        actions_for(&s.fleet(), &id).contains(&"terminate (drained)".to_string())
    });
    let actions = actions_for(&service.fleet(), &id);
    assert_eq!(actions, ["drain", "terminate (drained)"], "drained first, then terminated");
    service.wait_until(Duration::from_secs(30), |_| !service::alive(pid));
}
