//! `skyburst up`: the embedded deployment in one command. Starts `serve` and the controller
//! (which scales the `local` pool's worker processes to the queue) as child processes of this
//! binary, or a fixed fleet of workers with `--workers N`; on Ctrl-C or SIGTERM stops them all
//! (workers finish their batch first); SIGHUP is passed on to the front end and the controller
//! (they reload their TLS certificates).
//!
//! It supervises its parts. A worker or the controller that dies is started again (the
//! controller adopts the workers it had started). A front end that dies is started again on
//! the port it first got, so the printed URL stays valid, after a delay that doubles with each
//! quick crash; after [`MAX_CRASHES`] crashes within [`CRASH_WINDOW`] `up` stops everything and
//! exits with 1. A restarted front end keeps its instance id and so its response queue, and
//! picks up the answers its predecessor was waiting for.
//!
//! Its parts never outlive it, even when it is killed with SIGKILL: they and the workers the
//! controller starts inherit the read end of a [`Lifeline`] pipe whose write end only `up`
//! holds, and shut down gracefully when it closes (see [`crate::shutdown`]).
//!
//! Its own and its parts' log lines go to one [`LogFile`] (`<data-dir>/skyburst.log`); the
//! console gets the URL on stdout and only warnings and errors on stderr.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::app::logging::{self, LogFile};
use crate::cli::{ListenArgs, UpArgs};
use crate::config::Config;
use crate::shutdown::{self, Lifeline};

/// How long `serve` may take to print its URL (it opens the queue, store and index first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children get to finish after SIGTERM: a batch of 64 images at ~100 ms each.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A worker that keeps crashing is restarted at most this often.
const RESTART_BACKOFF: Duration = Duration::from_secs(2);
/// The wait before the front end's first restart; it doubles with each crash in [`CRASH_WINDOW`].
const SERVE_BACKOFF: Duration = Duration::from_secs(1);
/// `up` gives up when the front end crashes this many times within [`CRASH_WINDOW`].
pub const MAX_CRASHES: usize = 5;
/// See [`MAX_CRASHES`].
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long a restart waits for the front end's port to be free before counting a failure.
const PORT_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens the log `up` writes: `--log-file`, or `<data-dir>/skyburst.log`.
pub fn open_log(config: &Config, args: &UpArgs) -> anyhow::Result<LogFile> {
    let path = args.log_file.clone().unwrap_or_else(|| config.embedded.data_dir.join("skyburst.log"));
    LogFile::open(&path).with_context(|| format!("cannot open the log file {}; pass --log-file PATH", path.display()))
}

/// Runs front end and workers until a signal; exit code 1 if the front end died. Without a
/// `log` (tests of the library), the parts log to this process's stderr.
pub fn run(
    config: &Config,
    args: &UpArgs,
    config_file: Option<&Path>,
    log: Option<LogFile>,
) -> anyhow::Result<ExitCode> {
    let fixed = args.workers.or((config.embedded.workers > 0).then_some(config.embedded.workers));
    let children_log = log.clone();
    // Held until this process ends: its parts shut down when it closes.
    let lifeline = Lifeline::new().context("cannot tie the parts' lives to this process")?;
    let children = Children::new(config, config_file, log, lifeline.env())?;
    let runtime = crate::app::runtime()?;
    let code = runtime.block_on(children.run(args, fixed))?;
    if fixed.is_none() {
        runtime.block_on(stop_local_pools(config, config_file));
    }
    say("skyburst up: stopped");
    if let Some(log) = &children_log {
        say(&format!("skyburst up: the full log is in {}", log.path().display()));
    }
    Ok(code)
}

/// Stops the workers the controller started: they outlive it by design (a restarted
/// controller adopts them), so `up` stops them itself.
async fn stop_local_pools(config: &Config, config_file: Option<&Path>) {
    use skyburst_providers::Provider;
    for pool in config.pools.iter().filter(|p| p.provider == crate::config::ProviderKind::Local) {
        match crate::app::local_provider(config, pool, config_file) {
            Ok(provider) => {
                let running = provider.list().await.map_or(0, |l| l.len());
                if let Err(e) = provider.stop_all().await {
                    tracing::warn!(pool = %pool.name, error = %e, "some workers did not stop");
                } else if running > 0 {
                    say(&format!("skyburst up: stopped {running} workers of pool {}", pool.name));
                }
            }
            Err(e) => tracing::warn!(pool = %pool.name, error = %format!("{e:#}"), "cannot stop the pool's workers"),
        }
    }
}

struct Children {
    exe: std::path::PathBuf,
    /// `--config` and `--data-dir`, passed to every child.
    common: Vec<String>,
    data_dir: std::path::PathBuf,
    /// Where the children's stderr goes, when not to ours.
    log: Option<LogFile>,
    /// `frontend.tls.cert`: what a client of an HTTPS front end may need to trust.
    certificate: Option<std::path::PathBuf>,
    /// The [`Lifeline`]'s variable, set for every part.
    lifeline: (&'static str, String),
}

impl Children {
    fn new(
        config: &Config,
        config_file: Option<&Path>,
        log: Option<LogFile>,
        lifeline: (&'static str, String),
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program's path to start its parts")?;
        let data_dir = config.embedded.data_dir.clone();
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let mut common = Vec::new();
        if let Some(file) = config_file {
            common.extend(["--config".to_string(), file.display().to_string()]);
        }
        common.extend(["--data-dir".to_string(), data_dir.display().to_string()]);
        Ok(Self { exe, common, data_dir, log, certificate: config.frontend.tls.cert.clone(), lifeline })
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(&self.common).args(args).stdin(Stdio::null()).kill_on_drop(true);
        command.env(self.lifeline.0, &self.lifeline.1);
        if self.log.is_some() {
            command.stderr(Stdio::piped());
        }
        command
    }

    /// Starts a part, its stderr going to the log.
    fn spawn(&self, command: &mut Command, what: &str) -> anyhow::Result<Child> {
        let mut child = command.spawn().with_context(|| format!("cannot start {what}"))?;
        if let (Some(log), Some(stderr)) = (&self.log, child.stderr.take()) {
            tokio::spawn(forward_log(stderr, log.clone()));
        }
        Ok(child)
    }

    fn worker(&self, i: usize) -> anyhow::Result<Child> {
        let args = ["worker".to_string(), "--instance-id".to_string(), format!("local-{i}")];
        self.spawn(&mut self.command(&args), "a worker")
    }

    /// Starts the front end, on `port` if given, else on `--port` or `frontend.port`.
    fn serve(&self, listen: &ListenArgs, port: Option<u16>) -> anyhow::Result<Child> {
        let mut args = vec!["serve".to_string()];
        if let Some(bind) = &listen.bind {
            args.extend(["--bind".into(), bind.clone()]);
        }
        if let Some(port) = port.or(listen.port) {
            args.extend(["--port".into(), port.to_string()]);
        }
        if listen.insecure {
            args.push("--insecure".into());
        }
        self.spawn(self.command(&args).stdout(Stdio::piped()), "the front end")
    }

    /// Starts the front end again on `address` after a crash, waiting longer after each quick
    /// crash; `None` if a signal comes first, an error after [`MAX_CRASHES`] in [`CRASH_WINDOW`].
    async fn restart_serve(
        &self,
        listen: &ListenArgs,
        address: SocketAddr,
        crashes: &mut Crashes,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Child>> {
        loop {
            let Some(delay) = crashes.record(Instant::now()) else {
                anyhow::bail!(
                    "the front end crashed {MAX_CRASHES} times within {} s; giving up (its errors are in the log)",
                    CRASH_WINDOW.as_secs()
                );
            };
            tracing::warn!(%address, delay_ms = delay.as_millis() as u64, "restarting the front end");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(None),
                started = self.serve_again(listen, address, delay) => match started {
                    Ok(child) => return Ok(Some(child)),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "the front end did not start again"),
                },
            }
        }
    }

    /// After `delay`, once `address` is free, starts the front end there and waits for it to listen.
    async fn serve_again(&self, listen: &ListenArgs, address: SocketAddr, delay: Duration) -> anyhow::Result<Child> {
        tokio::time::sleep(delay).await;
        wait_for_port(address).await?;
        let mut child = self.serve(listen, Some(address.port()))?;
        read_url(&mut child).await?;
        Ok(child)
    }

    fn controller(&self, insecure: bool) -> anyhow::Result<Child> {
        let mut args = vec!["controller".to_string()];
        if insecure {
            args.push("--insecure".into());
        }
        self.spawn(self.command(&args).stdout(Stdio::piped()), "the controller")
    }

    async fn run(self, args: &UpArgs, fixed: Option<usize>) -> anyhow::Result<ExitCode> {
        let (_signal, mut stop) = shutdown::on_signal();
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install a SIGHUP handler")?;
        let insecure = args.listen.insecure;
        let mut serve = self.serve(&args.listen, None)?;
        let url = read_url(&mut serve).await?;
        // A restart binds the port this one got, even if `--port 0` picked it.
        let address = address_of(&url)?;
        let mut crashes = Crashes::default();
        // `stop` stays borrowed by the loop's `select!`; a restart watches this copy.
        let stopping = stop.clone();
        let count = fixed.unwrap_or(0);
        let mut workers = (0..count).map(|i| self.worker(i)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut controller = match fixed {
            Some(_) => None,
            None => {
                let mut child = self.controller(insecure)?;
                read_url(&mut child).await?;
                Some(child)
            }
        };
        let fleet = match fixed {
            Some(n) => format!("{n} workers"),
            None => "workers scaled by the controller".to_string(),
        };
        say(&format!("skyburst up: {url}  ({fleet}, data in {})", self.data_dir.display()));
        let trust = match &self.certificate {
            Some(cert) => format!(" --ca-cert {}", cert.display()),
            None => String::new(),
        };
        say(&format!("  try: skyburst load --url {url}{trust} --images ~/.cache/skyburst/images --requests 4"));
        say("  Ctrl-C stops everything");
        let code = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break ExitCode::SUCCESS,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: the front end and the controller reload their certificates");
                    for child in std::iter::once(&serve).chain(controller.as_ref()) {
                        if let Some(pid) = child.id() {
                            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
                        }
                    }
                }
                status = serve.wait() => {
                    tracing::warn!(?status, "the front end exited");
                    match self.restart_serve(&args.listen, address, &mut crashes, stopping.clone()).await {
                        Ok(Some(child)) => serve = child,
                        Ok(None) => break ExitCode::SUCCESS,
                        Err(e) => {
                            tracing::error!("{e:#}; stopping");
                            break ExitCode::FAILURE;
                        }
                    }
                }
                (i, status) = first_exit(&mut workers) => {
                    tracing::warn!(worker = i, ?status, "a worker exited; restarting it");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                    workers[i] = self.worker(i)?;
                }
                status = wait_some(&mut controller) => {
                    // It resumes from control/status.json and adopts the workers it started.
                    tracing::warn!(?status, "the controller exited; restarting it");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                    let mut child = self.controller(insecure)?;
                    read_url(&mut child).await?;
                    controller = Some(child);
                }
            }
        };
        let mut all: Vec<Child> = workers;
        all.extend(controller);
        all.push(serve);
        stop_all(all).await;
        Ok(code)
    }
}

/// The first line `serve` or `controller` prints names its URL; later lines are passed through.
pub(crate) async fn read_url(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("the part's output is not captured")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .context("a part did not start within 60 s")??
        .context("a part exited before listening; see its error above")?;
    say(&first);
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .context("unexpected output")?;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            say(&line);
        }
    });
    Ok(url.to_string())
}

/// `127.0.0.1:8080` from `http://127.0.0.1:8080`.
fn address_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/');
    rest.parse().with_context(|| format!("the front end printed {url:?}, not http(s)://ADDRESS:PORT"))
}

/// Waits until `address` can be bound again, at most [`PORT_TIMEOUT`].
async fn wait_for_port(address: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + PORT_TIMEOUT;
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {address} again")),
        }
    }
}

/// The front end's recent crashes.
#[derive(Debug, Default)]
struct Crashes(VecDeque<Instant>);

impl Crashes {
    /// Records a crash at `now`: the wait before the next start ([`SERVE_BACKOFF`], doubled for
    /// each earlier crash in [`CRASH_WINDOW`]), or `None` once that makes [`MAX_CRASHES`].
    fn record(&mut self, now: Instant) -> Option<Duration> {
        self.0.retain(|t| now.duration_since(*t) < CRASH_WINDOW);
        self.0.push_back(now);
        let recent = self.0.len();
        (recent < MAX_CRASHES).then(|| SERVE_BACKOFF * 2u32.pow(recent as u32 - 1))
    }
}

/// Copies a part's stderr into the log, line by line, and shows warnings, errors and anything
/// that is not a log line (a panic) on the console too.
async fn forward_log(stderr: tokio::process::ChildStderr, log: LogFile) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if logging::worth_showing(&line) {
            shout(&line);
        }
        let mut plain = logging::strip_ansi(&line);
        plain.push('\n');
        if let Err(e) = log.append(plain.as_bytes()) {
            shout(&format!("skyburst up: cannot write the log {}: {e}", log.path().display()));
        }
    }
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

/// Resolves when the optional child exits.
async fn wait_some(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to every child, then SIGKILL to any still running after [`STOP_TIMEOUT`].
pub(crate) async fn stop_all(mut children: Vec<Child>) {
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
}

/// Prints a line on stderr; a closed stderr must not stop anything.
fn shout(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Prints a line; a closed stdout (the reader went away) must not stop the shutdown.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_crashes_double_the_wait_until_up_gives_up() {
        let mut crashes = Crashes::default();
        let start = Instant::now();
        let waits: Vec<_> = (0..MAX_CRASHES).map(|i| crashes.record(start + Duration::from_secs(i as u64))).collect();
        let seconds = |s| Some(Duration::from_secs(s));
        assert_eq!(waits, [seconds(1), seconds(2), seconds(4), seconds(8), None]);
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let mut crashes = Crashes::default();
        let start = Instant::now();
        for i in 0..MAX_CRASHES - 1 {
            crashes.record(start + Duration::from_secs(i as u64));
        }
        assert_eq!(crashes.record(start + CRASH_WINDOW + Duration::from_secs(10)), Some(SERVE_BACKOFF));
    }

    #[test]
    fn the_address_comes_from_the_printed_url() {
        assert_eq!(address_of("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(address_of("https://[::1]:443/").unwrap(), "[::1]:443".parse().unwrap());
        assert!(address_of("http://localhost").is_err());
    }
}
