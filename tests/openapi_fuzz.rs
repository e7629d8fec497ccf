//! The front end fuzzed against its own OpenAPI document by the pinned Schemathesis
//! (scripts/install-schemathesis.sh): every status it answers is documented for its route, and
//! none is a server error.

use std::process::Command;

use crate::support::service::{one_at_a_time, Service};

/// Schemathesis's `st` from its venv, as scripts/install-schemathesis.sh makes it.
fn schemathesis() -> std::path::PathBuf {
    crate::support::venv_program("SCHEMATHESIS_VENV", "schemathesis-venv", "st", "install-schemathesis.sh")
}

#[test]
fn schemathesis_finds_no_undocumented_status_and_no_server_error() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[("FRONTEND__WAIT_SECONDS", "1")]);
    let schema = format!("{}/api/openapi.json", service.url);
    // A fixed seed: the same requests every run, so a failure can be replayed.
    let output = Command::new(schemathesis())
        .args(["run", &schema, "--url", &service.url])
        .args(["--checks", "not_a_server_error,status_code_conformance"])
        .args(["--phases", "coverage,fuzzing", "--max-examples", "10", "--seed", "20261207"])
        // The event stream never ends by itself: its statuses are checked by the other tests.
        .args(["--exclude-path", "/api/events", "--request-timeout", "10", "--no-color"])
        .env("HOME", service.data_dir())
        .current_dir(service.data_dir())
        .output()
        .unwrap();
    let log = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{log}");
    let summary =
        log.lines().filter(|l| l.contains("generated") || l.contains("Tested:")).collect::<Vec<_>>().join("; ");
    eprintln!("schemathesis: {summary}");
    assert!(log.contains("Tested: 21"), "every route but the event stream was tried: {log}");
}
