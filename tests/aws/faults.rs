//! Faults made for real on a moto server of this test's own: frozen with SIGSTOP mid-run, the
//! front end answers 503 with Retry-After within its AWS timeout and the controller backs off;
//! resumed with SIGCONT, every job accepted before the freeze completes.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::moto::{self, bootstrap_and_publish, config_file, unique, MotoServer};
use crate::support::service::{detect_body, one_at_a_time, signal, Service};

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

#[test]
fn a_frozen_cloud_gets_503s_and_backoff_and_loses_no_job() {
    let _heavy = one_at_a_time();
    let moto = MotoServer::start();
    let text = moto::aws_config(&moto.endpoint, &unique("freeze"));
    bootstrap_and_publish(config_file(&text).path());
    let timeouts = [
        ("AWS__OPERATION_TIMEOUT_SECONDS", "3"),
        ("AWS__ATTEMPT_TIMEOUT_SECONDS", "1"),
        ("AWS__MAX_ATTEMPTS", "2"),
        ("SCALING__MIN", "1"),
    ];
    let mut service = Service::start_with_config(Some(&text), &timeouts);
    let metrics_url = service.start_controller(&[]);
    service.start_fleet_agent();
    let submit = |service: &Service, i: usize| {
        let (status, body) = service.post_json("/api/jobs", &detect_body(&format!("f-{i}"), "bus.jpg"));
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_string()
    };
    let warm = submit(&service, 0);
    assert_eq!(service.wait_for_job(&warm, Duration::from_secs(120))["status"], "done");

    let accepted: Vec<String> = (1..=6).map(|i| submit(&service, i)).collect();
    signal(moto.pid(), Signal::SIGSTOP);
    let started = Instant::now();
    let (status, retry_after, body) =
        service.post("/api/jobs", "application/json", serde_json::to_vec(&detect_body("frozen", "bus.jpg")).unwrap());
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within the timeout, not hung: {:?}",
        started.elapsed()
    );

    // The controller cannot see the queue: it skips checks and waits longer between them.
    service.wait_until(Duration::from_secs(30), |s| {
        let metrics = s.get_text(&metrics_url);
        gauge(&metrics, "skyburst_controller_blind_checks_total") >= 2.0
            && gauge(&metrics, "skyburst_controller_backoff_seconds") > 0.5
    });
    signal(moto.pid(), Signal::SIGCONT);

    for job in &accepted {
        let answer = service.wait_for_job(job, Duration::from_secs(120));
        assert_eq!(answer["status"], "done", "accepted before the freeze, done after it: {answer}");
    }
    let after = submit(&service, 7);
    assert_eq!(service.wait_for_job(&after, Duration::from_secs(60))["status"], "done");
    // Checks see again: back to one tick between them.
    service.wait_until(Duration::from_secs(30), |s| {
        gauge(&s.get_text(&metrics_url), "skyburst_controller_backoff_seconds") == 0.5
    });
}
