//! `examples/locustfile.py`, run headless by the pinned Locust (scripts/install-locust.sh)
//! against `skyburst up`.

use std::process::Command;

use crate::support::image;
use crate::support::service::{one_at_a_time, start_up};

/// Locust from its venv, as scripts/install-locust.sh makes it.
fn locust() -> std::path::PathBuf {
    crate::support::venv_program("LOCUST_VENV", "locust-venv", "locust", "install-locust.sh")
}

#[test]
fn the_locustfile_runs_headless_against_up_without_failures() {
    let _heavy = one_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let (mut up, url) = start_up(data.path(), &["--workers", "2"], &[]);
    let images = image("bus.jpg").parent().unwrap().to_path_buf();
    let locustfile = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/locustfile.py");
    let csv = data.path().join("locust");
    let output = Command::new(locust())
        .arg("-f")
        .arg(&locustfile)
        .args(["--headless", "--users", "4", "--spawn-rate", "4", "--run-time", "6s", "--only-summary"])
        .args(["--host", &url, "--exit-code-on-error", "1", "--stop-timeout", "10"])
        .arg("--images")
        .arg(&images)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = up.wait();
    let log = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "locust failed:\n{log}");
    let stats = std::fs::read_to_string(data.path().join("locust_stats.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(stats.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column =
        |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let (name, requests, failures) = (column("Name"), column("Request Count"), column("Failure Count"));
    let total = reader.records().map(Result::unwrap).find(|r| &r[name] == "Aggregated").expect("an Aggregated row");
    let sent: u64 = total[requests].parse().unwrap();
    assert!(sent >= 8, "4 users for 6 s send more than {sent} requests:\n{log}");
    assert_eq!(&total[failures], "0", "{stats}\n{log}");
}
