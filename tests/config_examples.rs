//! Every config in `examples/configs/` loads and validates, so the examples cannot rot.

use std::path::Path;

use skyburst::config::Config;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load_with_env(Some(&path), Vec::new()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 1, "no example configs found in {}", dir.display());
}

/// `skyburst simulate` on a shipped trace with the hybrid example: every policy and the
/// clairvoyant reference do every job, and the table, CSVs and PNG are written.
#[test]
fn simulate_replays_a_shipped_trace_with_every_policy() {
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, stderr) = crate::support::run(
        crate::support::skyburst()
            .arg("--config")
            .arg(root.join("examples/configs/hybrid.toml"))
            .args(["simulate", "--trace"])
            .arg(root.join("examples/traces/spike.csv"))
            .arg("--out")
            .arg(out.path()),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for policy in ["slo", "seed-hybrid", "queue-minus-running", "backlog-per-instance", "clairvoyant"] {
        let row =
            stdout.lines().find(|l| l.starts_with(policy)).unwrap_or_else(|| panic!("no row for {policy}: {stdout}"));
        assert!(row.contains("100/100"), "every job done: {row}");
    }
    let png = std::fs::read(out.path().join("spike.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let summary = std::fs::read_to_string(out.path().join("spike-summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 6, "header + 4 policies + the clairvoyant reference: {summary}");
    assert!(std::fs::metadata(out.path().join("spike.csv")).unwrap().len() > 0);

    let (code, _, stderr) = crate::support::run(
        crate::support::skyburst()
            .args(["simulate", "--trace"])
            .arg(root.join("examples/traces/spike.csv"))
            .args(["--policy", "fastest", "--out"])
            .arg(out.path()),
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown policy \"fastest\""), "{stderr}");
}
