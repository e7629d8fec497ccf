//! The worker image's parts, checked with the tools that will run them: the rendered user-data
//! with `cloud-init schema`, the systemd unit with `systemd-analyze verify`, and every script
//! under `images/` with `bash -n` and ShellCheck. A missing tool is a failure that names
//! `scripts/install-image-tools.sh`, never a skip.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `images/` folder.
fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// Runs one of the image tools; a tool that is not installed fails the test with the fix.
fn run_tool(tool: &str, command: &mut Command) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{tool}` is not installed; the image tests need cloud-init, ShellCheck and systemd: \
             run scripts/install-image-tools.sh (as root)"
        ),
        Err(e) => panic!("cannot run `{tool}`: {e}"),
    }
}

/// stdout and stderr together, for assertions and failure messages.
fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Every `*.sh` under `dir`, at any depth, sorted.
fn shell_scripts(dir: &Path) -> Vec<PathBuf> {
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scripts.extend(shell_scripts(&path));
        } else if path.extension().is_some_and(|e| e == "sh") {
            scripts.push(path);
        }
    }
    scripts.sort();
    scripts
}

/// The worker user-data of every cloud pool of every example config, as `render-user-data`
/// prints it, is valid cloud-config for Debian bookworm's cloud-init (22.4), with no deprecated
/// key (those exit 0 but are dropped by later releases).
///
/// `render-user-data` reads the pinned release's manifest from the release bucket. To need no S3,
/// the test runs the real binary with the store switched to the embedded one
/// (`SKYBURST_STORE__BACKEND=embedded`, a temporary data directory) and publishes a stand-in
/// release there with `aws publish-worker` first. That changes one value inside the worker
/// config's text (`backend`), not the YAML around it. Fake AWS keys satisfy the SDK's credential
/// check at start-up; no AWS call is made.
#[cfg(feature = "cloud")]
#[test]
fn rendered_user_data_passes_cloud_init_schema() {
    use skyburst::config::{Config, ProviderKind};

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    let mut rendered = Vec::new();
    let mut failures = Vec::new();
    for path in configs {
        let config = Config::load_with_env(Some(&path), Vec::new()).unwrap();
        let pools: Vec<&str> =
            config.pools.iter().filter(|p| p.provider != ProviderKind::Local).map(|p| p.name.as_str()).collect();
        if pools.is_empty() {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let work = tempfile::tempdir().unwrap();
        let models = work.path().join("models");
        std::fs::create_dir(&models).unwrap();
        for file in skyburst::boot::MODEL_FILES {
            std::fs::write(models.join(file), format!("stand-in {file}\n")).unwrap();
        }
        let cert = crate::support::tls::TestCert::new();
        let binary = work.path().join("skyburst");
        std::fs::write(&binary, b"stand-in binary\n").unwrap();
        let skyburst = || {
            let mut command = crate::support::skyburst();
            command
                .arg("--config")
                .arg(&path)
                .env("SKYBURST_STORE__BACKEND", "embedded")
                .env("SKYBURST_EMBEDDED__DATA_DIR", work.path().join("data"))
                .env("SKYBURST_DETECTOR__MODEL_DIR", &models)
                // The examples' controller certificate, whose pin Nova workers are given.
                .env("SKYBURST_CONTROLLER__TLS__CERT", &cert.cert)
                .env("SKYBURST_CONTROLLER__TLS__KEY", &cert.key)
                .env("AWS_ACCESS_KEY_ID", "stand-in")
                .env("AWS_SECRET_ACCESS_KEY", "stand-in")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_SESSION_TOKEN");
            command
        };
        let (code, stdout, stderr) =
            crate::support::run(skyburst().args(["aws", "publish-worker", "--binary"]).arg(&binary));
        assert_eq!(code, 0, "{name}: aws publish-worker failed:\n{stdout}\n{stderr}");

        for pool in pools {
            let (code, user_data, stderr) = crate::support::run(skyburst().args(["render-user-data", "--pool", pool]));
            assert_eq!(code, 0, "{name}: render-user-data --pool {pool} failed:\n{stderr}");
            let worker = skyburst::boot::worker_config_from_user_data(&user_data).unwrap();
            if worker.contains("[credentials]") {
                let pin = format!("controller_cert_sha256 = \"{}\"", cert.pin);
                assert!(worker.contains(&pin), "{name}, pool {pool}: vended workers pin the controller: {worker}");
            }
            let file = work.path().join(format!("{name}-{pool}.yaml"));
            std::fs::write(&file, &user_data).unwrap();
            let output =
                run_tool("cloud-init", Command::new("cloud-init").arg("schema").arg("--config-file").arg(&file));
            let said = text(&output);
            if !output.status.success() || !said.contains("Valid cloud-config") || said.contains("DEPRECATED") {
                failures.push(format!("{name}.toml, pool {pool}:\n{said}\n--- user-data ---\n{user_data}"));
            }
            rendered.push(format!("{name}/{pool}"));
        }
    }
    assert!(failures.is_empty(), "cloud-init schema rejects the worker user-data:\n{}", failures.join("\n"));
    for expected in ["aws/public", "hybrid/private", "hybrid/public"] {
        assert!(rendered.iter().any(|r| r == expected), "{expected} was not rendered; rendered: {rendered:?}");
    }
}

/// `systemd-analyze verify` accepts the worker's unit.
///
/// verify checks that each `ExecStart=` program exists and is executable. The unit runs
/// `/bin/sh -c 'exec /usr/local/bin/skyburst ...'`, where the image puts the binary; a test
/// machine has no `/usr/local/bin/skyburst`. So the test verifies a copy in a temporary
/// directory with that path replaced by the binary under test: the result cannot depend on what
/// this machine has in `/usr/local/bin`, even if the unit comes to exec the binary directly.
/// (`--root` would need a whole tree with the unit's dependencies, such as
/// network-online.target.) verify exits 0 after warnings such as an unknown key or a bad value,
/// so any line about the unit fails the test too; a deliberately broken copy shows that this
/// systemd still prints them.
#[test]
fn the_worker_unit_passes_systemd_analyze_verify() {
    const INSTALLED: &str = "/usr/local/bin/skyburst";
    let unit = std::fs::read_to_string(images_dir().join("systemd/skyburst-worker.service")).unwrap();
    assert!(unit.contains(INSTALLED), "the unit runs {INSTALLED}, where images/build-qcow2.sh installs it");
    let dir = tempfile::tempdir().unwrap();
    let verify = |unit_text: &str| {
        // The unit's name comes from its file name.
        let path = dir.path().join("skyburst-worker.service");
        std::fs::write(&path, unit_text.replace(INSTALLED, env!("CARGO_BIN_EXE_skyburst"))).unwrap();
        let output = run_tool("systemd-analyze", Command::new("systemd-analyze").arg("verify").arg(&path));
        let said = text(&output);
        let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("skyburst-worker")).collect();
        (output.status.success() && about_unit.is_empty(), said)
    };

    let (ok, said) = verify(&unit);
    assert!(ok, "systemd-analyze verify rejects images/systemd/skyburst-worker.service:\n{said}");

    let broken = unit.replacen("Restart=", "Restartt=", 1);
    let (ok, said) = verify(&broken);
    assert!(!ok, "systemd-analyze verify no longer reports an unknown key, so this test cannot catch one:\n{said}");
}

/// Every shell script under `images/` parses (`bash -n`) and is ShellCheck clean.
#[test]
fn image_scripts_pass_bash_n_and_shellcheck() {
    let scripts = shell_scripts(&images_dir());
    let names: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
    for expected in ["boot/install-worker.sh", "build-qcow2.sh"] {
        assert!(names.iter().any(|n| n.ends_with(expected)), "images/{expected} not found among {names:?}");
    }
    for script in &scripts {
        let output = run_tool("bash", Command::new("bash").arg("-n").arg(script));
        assert!(output.status.success(), "bash -n {}:\n{}", script.display(), text(&output));
    }
    let output = run_tool("shellcheck", Command::new("shellcheck").args(&scripts));
    assert!(output.status.success(), "shellcheck {}:\n{}", names.join(" "), text(&output));
}
