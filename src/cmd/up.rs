//! `skyburst up`: the embedded deployment in one command. Starts `serve` and the workers as
//! child processes of this binary, restarts a worker that dies, and on Ctrl-C or SIGTERM stops
//! them all (workers finish their batch first).

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::UpArgs;
use crate::config::Config;
use crate::shutdown;

/// How long `serve` may take to print its URL (it opens the queue, store and index first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children get to finish after SIGTERM: a batch of 64 images at ~100 ms each.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A worker that keeps crashing is restarted at most this often.
const RESTART_BACKOFF: Duration = Duration::from_secs(2);

/// Runs front end and workers until a signal; exit code 1 if the front end died.
pub fn run(config: &Config, args: &UpArgs, config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let workers = args.workers.or((config.embedded.workers > 0).then_some(config.embedded.workers));
    let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let children = Children::new(config, config_file)?;
    crate::app::runtime()?.block_on(children.run(args, workers))
}

struct Children {
    exe: std::path::PathBuf,
    /// `--config` and `--data-dir`, passed to every child.
    common: Vec<String>,
    data_dir: std::path::PathBuf,
}

impl Children {
    fn new(config: &Config, config_file: Option<&Path>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program's path to start its parts")?;
        let data_dir = config.embedded.data_dir.clone();
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let mut common = Vec::new();
        if let Some(file) = config_file {
            common.extend(["--config".to_string(), file.display().to_string()]);
        }
        common.extend(["--data-dir".to_string(), data_dir.display().to_string()]);
        Ok(Self { exe, common, data_dir })
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(&self.common).args(args).stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    fn worker(&self, i: usize) -> anyhow::Result<Child> {
        let args = ["worker".to_string(), "--instance-id".to_string(), format!("local-{i}")];
        self.command(&args).spawn().context("cannot start a worker")
    }

    async fn run(self, args: &UpArgs, count: usize) -> anyhow::Result<ExitCode> {
        let (_signal, mut stop) = shutdown::on_signal();
        let mut serve_args = vec!["serve".to_string()];
        if let Some(bind) = &args.listen.bind {
            serve_args.extend(["--bind".into(), bind.clone()]);
        }
        if let Some(port) = args.listen.port {
            serve_args.extend(["--port".into(), port.to_string()]);
        }
        if args.listen.insecure {
            serve_args.push("--insecure".into());
        }
        let mut serve =
            self.command(&serve_args).stdout(Stdio::piped()).spawn().context("cannot start the front end")?;
        let url = read_url(&mut serve).await?;
        let mut workers = (0..count).map(|i| self.worker(i)).collect::<anyhow::Result<Vec<_>>>()?;
        say(&format!("skyburst up: {url}  ({count} workers, data in {})", self.data_dir.display()));
        say(&format!("  try: skyburst load --url {url} --images ~/.cache/skyburst/images --requests 4"));
        say("  Ctrl-C stops everything");
        let code = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break ExitCode::SUCCESS,
                status = serve.wait() => {
                    tracing::error!(?status, "the front end exited; stopping");
                    break ExitCode::FAILURE;
                }
                (i, status) = first_exit(&mut workers) => {
                    tracing::warn!(worker = i, ?status, "a worker exited; restarting it");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                    workers[i] = self.worker(i)?;
                }
            }
        };
        let mut all: Vec<Child> = workers;
        all.push(serve);
        stop_all(all).await;
        Ok(code)
    }
}

/// The first line `serve` prints names its URL; later lines are passed through.
async fn read_url(serve: &mut Child) -> anyhow::Result<String> {
    let stdout = serve.stdout.take().context("the front end's output is not captured")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .context("the front end did not start within 60 s")??
        .context("the front end exited before listening; see its error above")?;
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).context("unexpected front-end output")?;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            say(&line);
        }
    });
    Ok(url.to_string())
}

/// Resolves when any worker exits, with its index.
async fn first_exit(workers: &mut [Child]) -> (usize, std::io::Result<std::process::ExitStatus>) {
    if workers.is_empty() {
        return std::future::pending().await;
    }
    let waits = workers.iter_mut().map(|w| Box::pin(w.wait()));
    let (status, i, _) = futures_util::future::select_all(waits).await;
    (i, status)
}

/// SIGTERM to every child, then SIGKILL to any still running after [`STOP_TIMEOUT`].
async fn stop_all(mut children: Vec<Child>) {
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for child in &mut children {
        if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
            tracing::warn!(pid = child.id(), "a part did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
    say("skyburst up: stopped");
}

/// Prints a line; a closed stdout (the reader went away) must not stop the shutdown.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
