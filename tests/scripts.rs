//! The shell scripts under `scripts/` (the entry points, and in `scripts/lib/` the files they
//! source) and CI's `.ci/run`, checked as `tests/images.rs` checks `images/`: each parses
//! (`bash -n`) and ShellCheck finds nothing in any of them, the sourced files followed. A
//! missing tool is a failure that names `scripts/install-image-tools.sh`, never a skip.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root; the scripts are named relative to it.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bash` or `shellcheck` in the repository's root; a tool that is not installed fails the
/// test with the fix.
fn run_tool(tool: &str, command: &mut Command) -> Output {
    match command.current_dir(root()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{tool}` is not installed; the scripts test needs bash and ShellCheck: \
             run scripts/install-image-tools.sh (as root)"
        ),
        Err(e) => panic!("cannot run `{tool}`: {e}"),
    }
}

/// stdout and stderr together, for assertions and failure messages.
fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Every `*.sh` under `dir` (relative to the root), at any depth, relative to the root, sorted.
fn shell_scripts(dir: &Path) -> Vec<PathBuf> {
    let full = root().join(dir);
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(&full).unwrap_or_else(|e| panic!("cannot list {}: {e}", full.display())) {
        let path = dir.join(entry.unwrap().file_name());
        if root().join(&path).is_dir() {
            scripts.extend(shell_scripts(&path));
        } else if path.extension().is_some_and(|e| e == "sh") {
            scripts.push(path);
        }
    }
    scripts.sort();
    scripts
}

/// ShellCheck over `scripts`, following what they source (`# shellcheck source=SCRIPTDIR/...`;
/// scripts/.shellcheckrc asks the same of a hand run). Any finding, even a note, fails it.
fn shellcheck(scripts: &[PathBuf]) -> Output {
    run_tool("shellcheck", Command::new("shellcheck").arg("--external-sources").args(scripts))
}

/// The files in `scripts/lib/`: sourced by the others, never run.
fn is_sourced(script: &Path) -> bool {
    script.starts_with("scripts/lib")
}

/// Every shell script under `scripts/`, `scripts/lib/` included, and `.ci/run` parse (`bash -n`)
/// and are ShellCheck clean; a deliberately broken script shows that this ShellCheck run fails on
/// a finding.
#[test]
fn scripts_pass_bash_n_and_shellcheck() {
    let mut scripts = shell_scripts(Path::new("scripts"));
    let names: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
    for expected in [
        "scripts/run.sh",
        "scripts/test.sh",
        "scripts/lib/apt.sh",
        "scripts/lib/openstack.sh",
        "scripts/openstack-local/start.sh",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} not found among {names:?}");
    }
    scripts.push(PathBuf::from(".ci/run"));
    for script in &scripts {
        let output = run_tool("bash", Command::new("bash").arg("-n").arg(script));
        assert!(output.status.success(), "bash -n {}:\n{}", script.display(), text(&output));
    }
    let output = shellcheck(&scripts);
    let names: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
    assert!(output.status.success(), "shellcheck {}:\n{}", names.join(" "), text(&output));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.sh");
    std::fs::write(&broken, "#!/usr/bin/env bash\n# An unquoted expansion.\nrm -rf $1/cache\n").unwrap();
    let output = shellcheck(&[broken]);
    assert!(
        !output.status.success() && text(&output).contains("SC2086"),
        "shellcheck no longer fails on an unquoted expansion, so this test cannot catch one:\n{}",
        text(&output)
    );
}

/// The layout of `scripts/`: the files in `scripts/lib/` are only sourced (no `#!` line, not
/// executable, a `# shellcheck shell=bash` directive so that ShellCheck knows their shell); every
/// other script is an entry point (a `#!` line, executable). Each opens with a comment that says
/// what it does and how to call it, naming itself as it is called: its path from the root, or
/// for a sourced file the path it is sourced by (`lib/apt.sh`).
#[test]
fn sourced_scripts_live_in_scripts_lib_and_every_script_says_how_to_call_it() {
    for script in shell_scripts(Path::new("scripts")) {
        let name = script.display().to_string();
        let full = root().join(&script);
        let source = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
        let executable = std::fs::metadata(&full).unwrap().permissions().mode() & 0o111 != 0;
        let first = source.lines().next().unwrap_or("");
        let header: Vec<&str> =
            source.lines().skip(usize::from(first.starts_with("#!"))).take_while(|l| l.starts_with('#')).collect();
        let called_as = if is_sourced(&script) {
            assert!(
                !first.starts_with("#!") && !executable,
                "{name} is in scripts/lib/, which holds sourced files only: no #! line, not executable"
            );
            assert!(
                first.starts_with("# shellcheck shell=bash"),
                "{name}: a sourced file opens with `# shellcheck shell=bash`, not {first:?}"
            );
            script.strip_prefix("scripts").unwrap().display().to_string()
        } else {
            assert!(
                first.starts_with("#!") && executable,
                "{name} is an entry point: a #! line and the executable bit (sourced files go in scripts/lib/)"
            );
            name.clone()
        };
        assert!(
            header.len() >= 2 && header.iter().any(|l| l.contains(&called_as)),
            "{name}: the opening comment says what the script does and how to call it (naming `{called_as}`); it is:\n{}",
            header.join("\n")
        );
    }
}
