//! The command line: one binary, one subcommand per job (docs/architecture.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Skyburst: elastic hybrid-cloud image recognition (YOLOv3-tiny on candle).
#[derive(Debug, Parser)]
#[command(name = "skyburst", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML config file; `SKYBURST_*` environment variables override it (e.g.
    /// SKYBURST_DETECTOR__THRESHOLD=0.4).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded deployment (queue, store, index); overrides
    /// embedded.data_dir.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system on this machine: front end and workers; Ctrl-C stops it.
    Up(UpArgs),
    /// Run the HTTP front end.
    Serve(ServeArgs),
    /// Run a detector worker.
    Worker(WorkerArgs),
    /// Send images to a running service and report latency, throughput and correctness.
    Load(LoadArgs),
    /// The capacity experiment: for each fleet size, ramp users against `up --workers N` to the
    /// most served with 100 % success within the SLO, confirm at 1 user/s, tabulate and plot.
    Experiment(ExperimentArgs),
    /// Run the controller: scale the worker pools to the queue (private first, then burst).
    Controller(ControllerArgs),
    /// Replay an arrival trace against scaling policies, without sleeping; report cost and waits.
    Simulate(SimulateArgs),
    /// Detect objects in image files and print (or draw) what was found.
    Detect(DetectArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Administer a running front end's queues and buckets (a token with the `admin` scope).
    Admin(AdminArgs),
    /// Print the cloud-init user-data an instance of a cloud pool is launched with.
    RenderUserData(RenderUserDataArgs),
    /// AWS tools: create the queues and buckets, publish the worker release (`--features aws`).
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Run the cloud deployments on one machine (`--features dev-tools`; never in production).
    #[command(subcommand)]
    Dev(DevCommand),
}

/// `skyburst render-user-data`.
#[derive(Debug, Args)]
pub struct RenderUserDataArgs {
    /// The pool (an `ec2` or `nova` entry of `[[pools]]`).
    #[arg(long, value_name = "NAME")]
    pub pool: String,
}

/// `skyburst aws ...`.
#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Create the request queue with its dead-letter queue and the buckets with their lifecycle
    /// rule; running it again changes nothing (or brings settings in line with the config).
    Bootstrap,
    /// Upload the worker binary and the model files to `releases/<boot.version>/` in the release
    /// bucket with a manifest of their sha256 sums (scripts/publish-worker.sh runs this).
    PublishWorker(PublishWorkerArgs),
}

/// `skyburst aws publish-worker`.
#[derive(Debug, Args)]
pub struct PublishWorkerArgs {
    /// The worker binary to publish; default: this program.
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
}

/// `skyburst dev ...`.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Play the hypervisor for an emulated cloud: start a local `skyburst worker` for each
    /// running instance of this deployment, from the worker config in its user-data, after the
    /// pool's `boot_seconds`; stop it when the instance goes.
    FleetAgent(FleetAgentArgs),
}

/// `skyburst dev fleet-agent`.
#[derive(Debug, Args)]
pub struct FleetAgentArgs {
    /// Where each instance's config and log go.
    #[arg(long, value_name = "DIR", default_value = "fleet-agent")]
    pub work_dir: PathBuf,
    /// Seconds between looks at the cloud.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5)]
    pub interval_seconds: f64,
}

/// `skyburst detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Image files (JPEG, PNG, BMP, GIF, WebP).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Print one JSON result per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Minimum score to report, in (0, 1]; overrides detector.threshold.
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// Write each image with its boxes and labels drawn into this directory.
    #[arg(long, value_name = "OUT_DIR")]
    pub annotate: Option<PathBuf>,
}

/// `skyburst admin ...`: calls the front end's `/api/admin/` routes.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the front end.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token with the `admin` scope, for a front end with tokens.
    #[arg(long, global = true, env = "BEARER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate(s) to trust besides the system's roots: a front end's self-signed
    /// certificate, or the CA that signed it.
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Send --token over plain HTTP to a non-loopback address (it crosses the network in
    /// cleartext).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Print the front end's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The `skyburst admin` subcommands. Those that remove or move something need `--yes`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Messages visible, in flight and delayed on the request, dead-letter and response queues.
    Queues,
    /// List dead-lettered messages without taking them (SQS: visible ones; each look is a receive).
    DeadLetters {
        /// At most this many, 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Move dead-lettered messages back to the request queue (all, or one with --message).
    Redrive {
        /// Only this message (its id as `admin dead-letters` lists it).
        #[arg(long, value_name = "ID")]
        message: Option<String>,
        /// Really move them.
        #[arg(long)]
        yes: bool,
    },
    /// Remove one dead-lettered message.
    DropMessage {
        /// The message's id, as `admin dead-letters` lists it.
        id: String,
        /// Really remove it.
        #[arg(long)]
        yes: bool,
    },
    /// Remove every message of the request queue or of the dead-letter queue.
    PurgeQueue {
        /// Which queue.
        #[arg(value_enum)]
        queue: AdminQueue,
        /// Really remove them.
        #[arg(long)]
        yes: bool,
    },
    /// Remove the objects of a bucket under a prefix, optionally only older ones; `control/` and
    /// `releases/` are kept unless --prefix names them.
    PurgeStore {
        /// Which bucket.
        #[arg(long, value_enum)]
        bucket: AdminBucket,
        /// Only keys starting with this (e.g. `images/`); default: the whole bucket.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        /// Only objects last written before this: an RFC 3339 time or an age (`7d`, `12h`).
        #[arg(long, value_name = "TIME|AGE")]
        older_than: Option<String>,
        /// Really remove them.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a job: its image, its result and its index row.
    DeleteJob {
        /// The job's id.
        id: String,
        /// Really delete it.
        #[arg(long)]
        yes: bool,
    },
}

/// A queue `skyburst admin purge-queue` empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminQueue {
    /// The request queue.
    Requests,
    /// Its dead-letter queue.
    DeadLetters,
}

/// A bucket `skyburst admin purge-store` purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminBucket {
    /// store.input_bucket (images).
    Input,
    /// store.output_bucket (results, control records).
    Output,
}

/// `skyburst config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration, print every problem (exit 64) or the effective config.
    Check,
}

/// Where the front end listens.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to bind; overrides frontend.bind.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Port; 0 picks a free one. Overrides frontend.port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Allow a non-loopback address without frontend.tokens (anyone who reaches it can use it)
    /// or without frontend.tls (tokens, images and results cross the network in cleartext).
    #[arg(long)]
    pub insecure: bool,
}

/// `skyburst serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// `skyburst worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// This worker's name in answers and logs; default `<hostname>-<pid>`.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Its pool; overrides worker.pool.
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// Wait this long before taking jobs: the local pool rehearses a cloud's boot time.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub boot_delay_seconds: f64,
}

/// `skyburst controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Decide and log every check, but launch, terminate and drain nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow plain HTTP for `/metrics` and `/v1/credentials` on a non-loopback
    /// controller.metrics_bind (without controller.tls).
    #[arg(long)]
    pub insecure: bool,
}

/// `skyburst simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Arrival trace, CSV `t_seconds,count` (examples/traces/*.csv).
    #[arg(long, value_name = "CSV")]
    pub trace: PathBuf,
    /// Policies to compare (repeat); default: all three named policies.
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Directory for the report: `<trace>.csv` (time series) and `<trace>.png` (plot).
    #[arg(long, value_name = "DIR", default_value = "simulate-out")]
    pub out: PathBuf,
}

/// `skyburst up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// A fixed number of worker processes, with the controller off; overrides embedded.workers
    /// (default: the controller scales the local pool).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Where the full log of `up` and its parts goes (rotated at 64 MiB, one old file kept);
    /// the console shows only warnings and errors. Default: `<data-dir>/skyburst.log`.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// `skyburst load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Folder of images to send, round robin.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Requests in all.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// json (POST /api/detect), multipart (POST /upload) or async (POST /api/jobs, then poll).
    #[arg(long, value_enum, default_value = "json")]
    pub mode: crate::load::Mode,
    /// CSV `file,labels` (labels `;`-separated) that each answer must contain.
    #[arg(long, value_name = "CSV")]
    pub expect: Option<PathBuf>,
    /// Write one row per request to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Upload zone (multipart and async modes).
    #[arg(long)]
    pub zone: Option<String>,
    /// Seconds before one request is given up.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
    /// Bearer token for a service with frontend.tokens.
    #[arg(long, env = "BEARER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate(s) to trust besides the system's roots: a front end's self-signed
    /// certificate, or the CA that signed it.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Send --token over plain HTTP to a non-loopback address (it crosses the network in
    /// cleartext).
    #[arg(long)]
    pub insecure: bool,
    /// Print one JSON line per result as it arrives.
    #[arg(long)]
    pub print_results: bool,
    /// Ramp closed-loop users up instead of sending --requests at --concurrency: stop at the
    /// first failure, when a step's p95 passes --slo-ms, after --users-max, or at --max-seconds.
    #[command(flatten)]
    pub ramp: RampArgs,
    /// Replay an arrival trace open-loop instead of sending --requests at --concurrency.
    #[command(flatten)]
    pub replay: ReplayArgs,
}

/// `skyburst experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Fleet sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Folder of images to send, round robin.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Time budget per fleet size: two thirds for the ramp, the rest for the confirmation.
    #[arg(long, default_value_t = 90.0)]
    pub seconds_per_size: f64,
    /// Seconds per ramp step (each gives 50–100 answers at 17–35 images/s, enough for a p95).
    #[arg(long, default_value_t = 3.0)]
    pub step_seconds: f64,
    /// Users added per ramp step: 4 reaches 80 users in the ramp's 60 s, past where a 2-core
    /// machine's p95 passes 2 s.
    #[arg(long, default_value_t = 4)]
    pub users_step: usize,
    /// The ramp's last step (2 workers on 2 cores serve 64 users within 2 s).
    #[arg(long, default_value_t = 128)]
    pub users_max: usize,
    /// Each user's pause between an answer and its next request, ms.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// The response-time objective at p95, ms.
    #[arg(long, default_value_t = 2000)]
    pub slo_ms: u64,
    /// Where the table (experiment.md), the chart (experiment.png), the results (experiment.json)
    /// and each run's CSV and charts go.
    #[arg(long, value_name = "DIR", default_value = "skyburst-experiment")]
    pub out: PathBuf,
}

/// `skyburst load --ramp` options.
#[derive(Debug, Clone, Args)]
pub struct RampArgs {
    /// Run a ramp (the options below) instead of a fixed number of requests.
    #[arg(long, conflicts_with_all = ["requests", "concurrency"])]
    pub ramp: bool,
    /// Users in the first step.
    #[arg(long, default_value_t = 1, requires = "ramp")]
    pub users_start: usize,
    /// Users added per step.
    #[arg(long, default_value_t = 1, requires = "ramp")]
    pub users_step: usize,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0, requires = "ramp")]
    pub step_seconds: f64,
    /// Users in the last step.
    #[arg(long, default_value_t = 64, requires = "ramp")]
    pub users_max: usize,
    /// Each user's pause between an answer and its next request, ms.
    #[arg(long, default_value_t = 0, requires = "ramp")]
    pub think_ms: u64,
    /// The response-time objective at p95, ms.
    #[arg(long, default_value_t = 2000, requires = "ramp")]
    pub slo_ms: u64,
    /// The ramp stops after this many seconds.
    #[arg(long, default_value_t = 120.0, requires = "ramp")]
    pub max_seconds: f64,
}

impl RampArgs {
    /// The plan these options describe (`ramp::run` checks it).
    pub fn plan(&self) -> anyhow::Result<crate::load::ramp::RampPlan> {
        let seconds = |name: &str, s: f64| {
            anyhow::ensure!(s.is_finite() && s > 0.0, "--{name} must be a positive number of seconds");
            Ok(std::time::Duration::from_secs_f64(s))
        };
        let step = seconds("step-seconds", self.step_seconds)?;
        Ok(crate::load::ramp::RampPlan {
            start_users: self.users_start,
            step_users: self.users_step,
            step_interval: step,
            max_users: self.users_max,
            hold: step,
            think: std::time::Duration::from_millis(self.think_ms),
            slo: std::time::Duration::from_millis(self.slo_ms),
            max_duration: seconds("max-seconds", self.max_seconds)?,
        })
    }
}

/// `skyburst load --trace` options.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Replay this arrival trace open-loop instead of sending --requests at --concurrency: CSV
    /// `t_seconds,count` as `skyburst simulate` reads it (examples/traces/); each job is sent at
    /// its time, whatever the answers to the earlier ones.
    #[arg(long, value_name = "CSV", conflicts_with_all = ["requests", "concurrency", "ramp"])]
    pub trace: Option<PathBuf>,
    /// Replay X times faster: a job at trace time t is sent t/X seconds after the start
    /// (0.001..=1000000; below 1 replays slower).
    #[arg(long, value_name = "X", default_value_t = 1.0, requires = "trace")]
    pub time_scale: f64,
    /// Most requests outstanding (1..=4096). A send due while this many wait is held until one
    /// answers (counted, and late), and given up once --timeout-seconds late.
    #[arg(long, value_name = "N", default_value_t = 256, requires = "trace")]
    pub max_in_flight: usize,
    /// Refuse a trace with more jobs than this (at most 1000000).
    #[arg(long, value_name = "N", default_value_t = 100_000, requires = "trace")]
    pub max_jobs: u64,
    /// Refuse a trace that lasts longer than this once time-scaled; the replay then ends within
    /// it plus twice --timeout-seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600.0, requires = "trace")]
    pub max_replay_seconds: f64,
}

impl ReplayArgs {
    /// The plan these options describe, with `timeout_seconds` (`replay::run` checks it).
    pub fn plan(&self, timeout_seconds: u64) -> anyhow::Result<crate::load::replay::ReplayPlan> {
        let max = crate::load::replay::MAX_REPLAY_SECONDS;
        anyhow::ensure!(
            self.max_replay_seconds.is_finite() && self.max_replay_seconds > 0.0 && self.max_replay_seconds <= max,
            "--max-replay-seconds must be a positive number of seconds, at most {max} (30 days)"
        );
        Ok(crate::load::replay::ReplayPlan {
            time_scale: self.time_scale,
            max_in_flight: self.max_in_flight,
            max_jobs: self.max_jobs,
            max_duration: std::time::Duration::from_secs_f64(self.max_replay_seconds),
            timeout: std::time::Duration::from_secs(timeout_seconds),
        })
    }
}
