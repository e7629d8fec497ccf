//! Faults: a worker frozen and killed holding a job, a front end restarted with jobs queued, a
//! poison message, an unwritable result bucket, and SIGTERM with requests waiting.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::service::{detect_body, one_at_a_time, signal, Service};

const MINUTE: Duration = Duration::from_secs(60);

fn queue_jobs(service: &Service, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (status, accepted) = service.post_json("/api/jobs", &detect_body(&format!("c{i}"), "bus.jpg"));
            assert_eq!(status, 202, "{accepted}");
            accepted["job_id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_job_held_by_a_frozen_then_killed_worker_completes_on_another_once() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    let jobs = queue_jobs(&service, 6);
    let frozen = service.start_worker("frozen");
    // Freeze it as soon as it has taken a job.
    let running =
        |s: &Service| jobs.iter().find(|j| s.get(&format!("/api/jobs/{j}")).1["status"] == "running").cloned();
    service.wait_until(MINUTE, |s| running(s).is_some());
    signal(frozen, Signal::SIGSTOP);
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<String> = jobs
        .iter()
        .filter(|j| {
            let job = service.get(&format!("/api/jobs/{j}")).1;
            job["status"] == "running" && job["worker"] == "frozen"
        })
        .cloned()
        .collect();
    assert!(!held.is_empty(), "the frozen worker holds a job");
    service.start_worker("rescuer");
    signal(frozen, Signal::SIGKILL);
    for job in &jobs {
        assert_eq!(service.wait_for_job(job, MINUTE)["status"], "done");
    }
    for job in &held {
        let view = service.get(&format!("/api/jobs/{job}")).1;
        assert_eq!(view["worker"], "rescuer", "{view}");
    }
    assert!(stopped_at.elapsed() >= Duration::from_secs(2), "only after the 2 s visibility timeout");
    let results = service.get("/api/results?limit=100").1;
    assert_eq!(results["results"].as_array().unwrap().len(), jobs.len(), "each job answered once");
    assert_eq!(service.queued(), 0);
}

#[test]
fn jobs_queued_before_a_front_end_restart_complete() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    let jobs = queue_jobs(&service, 3);
    service.restart_serve();
    service.start_worker("w1");
    for job in &jobs {
        let view = service.wait_for_job(job, MINUTE);
        assert_eq!(view["status"], "done", "{view}");
    }
}

#[test]
fn a_poison_message_ends_in_the_dead_letter_queue() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[("QUEUE__VISIBILITY_TIMEOUT_SECONDS", "1"), ("QUEUE__MAX_RECEIVES", "2")]);
    let queues =
        skyburst::queue::local::LocalQueues::open(&service.data_dir().join("queue.db"), Duration::from_millis(10))
            .unwrap();
    let requests = queues.queue("skyburst-requests", None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(skyburst::queue::Queue::send(&requests, "{not a job", Duration::ZERO)).unwrap();
    service.start_worker("w1");
    let dead = |s: &Service| s.get("/api/queues").1["dead_letters"]["visible"] == 1;
    service.wait_until(Duration::from_secs(30), dead);
    assert_eq!(service.queued(), 0, "the poison message left the request queue");
    // The worker is still serving real jobs.
    let (status, answer) = service.post_json("/api/detect", &detect_body("after", "bus.jpg"));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn an_unwritable_result_bucket_delays_jobs_but_loses_none() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    let jobs = queue_jobs(&service, 2);
    let bucket = service.bucket("skyburst-output");
    let _ = std::fs::remove_dir_all(&bucket);
    std::fs::write(&bucket, b"").unwrap();
    service.start_worker("w1");
    std::thread::sleep(Duration::from_secs(2));
    for job in &jobs {
        assert_ne!(service.get(&format!("/api/jobs/{job}")).1["status"], "done");
    }
    assert!(service.queued() > 0, "the jobs are still queued");
    std::fs::remove_file(&bucket).unwrap();
    for job in &jobs {
        assert_eq!(service.wait_for_job(job, MINUTE)["status"], "done");
    }
}

#[test]
fn sigterm_answers_waiting_requests_with_202_and_exits() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[]);
    let url = service.url.clone();
    let waiting = std::thread::spawn(move || {
        let body = detect_body("waiting", "bus.jpg");
        let response = reqwest::blocking::Client::new().post(format!("{url}/api/detect")).json(&body).send().unwrap();
        (response.status().as_u16(), response.json::<serde_json::Value>().unwrap())
    });
    service.wait_until(MINUTE, |s| s.queued() == 1);
    let started = Instant::now();
    signal(service.serve.id(), Signal::SIGTERM);
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(body["status_url"].as_str().unwrap().starts_with("/api/jobs/"));
    assert!(started.elapsed() < Duration::from_secs(10), "answered at once, not after the 30 s wait");
    let mut service = service;
    let exit = service.serve.wait().unwrap();
    assert!(exit.success(), "{exit}");
}
