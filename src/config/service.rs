//! The config sections of the running service: front end, queue, store, worker and the
//! embedded (one machine) deployment.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[frontend]`: the HTTP front end (`skyburst serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendConfig {
    /// Address to listen on. Default `127.0.0.1`. A non-loopback address needs `tokens` (or
    /// `--insecure`): an open detector is free compute for anyone who finds it.
    pub bind: String,
    /// TCP port; 0 picks a free one (the chosen URL is printed). Default 8080.
    pub port: u16,
    /// How long a synchronous request (`/api/detect`, `/upload`) waits for its result before
    /// answering `202` with the job's status URL; the job goes on. 1..=300 s, default 30.
    pub wait_seconds: u64,
    /// Largest request body accepted, in bytes. Default 10 MiB (base64 adds a third, so a
    /// 7.5 MB photo still fits in JSON).
    pub max_body_bytes: usize,
    /// A request body may take this many seconds plus its size at `body_min_bytes_per_second`
    /// to arrive; a slower one is cut with `408` and nothing kept, so a client sending a byte a
    /// second cannot hold a connection. Default 10.
    pub body_grace_seconds: f64,
    /// The slowest body accepted after the grace period, bytes per second. Default 16384
    /// (16 KiB/s: a 10 MiB body may take 10 min 50 s).
    pub body_min_bytes_per_second: u64,
    /// Longest multipart file name, in bytes; a longer one is refused with `400`. Default 255
    /// (the longest name most file systems allow).
    pub max_file_name_bytes: usize,
    /// Open connections each of the front end's two event loops holds at most; more wait in
    /// the kernel's accept queue. Default 1024 (the systemd units allow 8192 open files).
    pub max_connections: usize,
    /// Synchronous requests (`/api/detect`, `/upload`) waiting for their answer at once; beyond
    /// it a new one is refused with `503` and `Retry-After` before its job is created. Default 512.
    pub max_waiting: usize,
    /// Bearer tokens accepted on every route but `/healthz` and `/readyz`. Empty (the default)
    /// means no authentication. Set them from the environment (`SKYBURST_FRONTEND__TOKENS=a,b`)
    /// or `tokens_file`, never in a committed file.
    #[serde(skip_serializing)]
    pub tokens: Vec<String>,
    /// A file with one bearer token per line (blank lines and `#` comments ignored).
    pub tokens_file: Option<PathBuf>,
    /// `[frontend.tls]`: serve HTTPS with this certificate and key (PEM files), reloaded on
    /// SIGHUP or when the files change. Unset: plain HTTP, refused off loopback without
    /// `--insecure`.
    pub tls: crate::tls::TlsFiles,
    /// This replica's name; its response queue is `<queue.responses_prefix>-<instance_id>`, so a
    /// restarted front end picks up the answers its predecessor was waiting for. Unset (the
    /// default): `frontend-<hostname>-<port>` with the port it listens on, the same after a
    /// restart on that host and port and different for any two front ends running at once
    /// (see [`FrontendConfig::instance_id_on`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl FrontendConfig {
    /// The instance id of a front end listening on `port`: `instance_id` if set, else
    /// `frontend-<hostname>-<port>` (the host name as [`crate::host::name_fragment`] gives it).
    pub fn instance_id_on(&self, port: u16) -> String {
        match &self.instance_id {
            Some(id) => id.clone(),
            None => format!("frontend-{}-{port}", crate::host::name_fragment(HOST_IN_INSTANCE_ID)),
        }
    }
}

/// The host name's share of a default instance id: with `frontend-`, the port and the default
/// `responses_prefix` the response queue's name stays within SQS's 80 characters.
const HOST_IN_INSTANCE_ID: usize = 32;

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 8080,
            wait_seconds: 30,
            max_body_bytes: 10 * 1024 * 1024,
            body_grace_seconds: 10.0,
            body_min_bytes_per_second: 16 * 1024,
            max_file_name_bytes: 255,
            max_connections: 1024,
            max_waiting: 512,
            tokens: Vec::new(),
            tokens_file: None,
            tls: Default::default(),
            instance_id: None,
        }
    }
}

/// `[queue]`: the shared job queue and the response queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `embedded` (SQLite in the data directory; the default) or `sqs` (build with
    /// `--features aws`; create the queues with `skyburst aws bootstrap`).
    pub backend: QueueBackend,
    /// The request queue every worker reads. Its dead-letter queue is `<requests>-dlq`.
    pub requests: String,
    /// Prefix of each front end's response queue.
    pub responses_prefix: String,
    /// Seconds a received message stays hidden from other receivers. A worker that dies holding a
    /// job gives it back after this long. 1..=43200 (SQS's limit), default 30.
    pub visibility_timeout_seconds: u64,
    /// Deliveries after which a message that is still not deleted moves to the dead-letter
    /// queue (SQS's `maxReceiveCount`). Every delivery counts, a worker that crashed or hung
    /// included, so this is a larger budget than `max_attempts`: a healthy job survives a few
    /// killed workers, while an image that kills every worker ends `failed: dead_lettered`.
    /// 1..=1000, default 10.
    pub max_receives: u32,
    /// Attempts that ended in an error a worker reported (the image could not be fetched, the
    /// detector failed, a batch ran past its deadline) after which the worker moves the job to
    /// the dead-letter queue; until then it re-queues the job with a growing delay. 1..=100,
    /// default 3.
    pub max_attempts: u32,
    /// Days a message may wait in the embedded request and response queues before it is
    /// deleted (SQS's default retention is 4 days). 1..=14, default 4.
    pub retention_days: u32,
    /// Days a dead-lettered message is kept in the embedded dead-letter queue for an operator
    /// to look at or redrive (SQS's longest retention, 14 days). 1..=14, default 14.
    pub dead_letter_retention_days: u32,
    /// Longest a receive waits for a message (long poll). 1..=20 s (SQS's limit), default 5.
    pub long_poll_seconds: u64,
    /// How often a waiting receive on the embedded queue looks again, 1..=50 ms, default 10.
    /// New messages wake receivers at once (inotify on the database); polling catches what no
    /// write announces (a visibility timeout running out) within this interval.
    pub poll_interval_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backend: QueueBackend::Embedded,
            requests: "skyburst-requests".into(),
            responses_prefix: "skyburst-responses".into(),
            visibility_timeout_seconds: 30,
            max_receives: 10,
            max_attempts: 3,
            retention_days: 4,
            dead_letter_retention_days: 14,
            long_poll_seconds: 5,
            poll_interval_ms: 10,
        }
    }
}

/// Which queue service holds the queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// SQLite in `embedded.data_dir` (one machine).
    #[default]
    Embedded,
    /// Amazon SQS.
    Sqs,
}

/// Which object store holds the buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Directories under `embedded.data_dir/store` (one machine).
    #[default]
    Embedded,
    /// Amazon S3.
    S3,
}

/// `[store]`: where images and results are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `embedded` (files in the data directory; the default) or `s3` (build with
    /// `--features aws`; create the buckets with `skyburst aws bootstrap`).
    pub backend: StoreBackend,
    /// Bucket for uploaded images (`images/<job id>`).
    pub input_bucket: String,
    /// Bucket for results (`results/<job id>.json`) and control records.
    pub output_bucket: String,
    /// Days after which a job's image, result and index row are deleted. Embedded store: by the
    /// front end's retention task, any fraction of a day from one minute (0.0007) up to 3650.
    /// S3: the lifecycle rule `skyburst aws bootstrap` sets, whole days 1..=3650. Default 30.
    /// Control records and releases never expire.
    pub retention_days: f64,
    /// Free space (MB) below which the embedded deployment's data directory refuses uploads
    /// with `507`, before the disk is full: reads, deletes and the retention task keep working,
    /// and SQLite keeps the room it needs to commit them. 0 turns the check off. Default 512.
    pub min_free_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            input_bucket: "skyburst-input".into(),
            output_bucket: "skyburst-output".into(),
            retention_days: 30.0,
            min_free_mb: 512,
        }
    }
}

/// `[worker]`: a detector worker (`skyburst worker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// The pool this worker belongs to, reported with every answer. Default `local`.
    pub pool: String,
    /// Messages taken per receive; they run through the detector `detector.batch_size` at a
    /// time. 1..=10 (SQS's limit), default 1: with 1-thread workers a second job held by a busy
    /// worker only waits, while another worker could have run it.
    pub jobs_per_receive: usize,
    /// Seconds between heartbeats (`control/heartbeats/<instance>` in the output bucket); one
    /// is also written on every change between idle, busy and drained. 0.1..=60, default 5.
    pub heartbeat_seconds: f64,
    /// Longest the detector may spend on one image (a batch of n gets n times this). Past it
    /// the worker gives the job up (`failed: deadline`; a batch of several is re-queued, each
    /// job to run alone) and exits so its supervisor starts a fresh one: the detector thread
    /// cannot be stopped. 0.01..=3600, default 60 (a YOLOv3-tiny pass takes ≈ 0.05 s on two
    /// cores; a 24-megapixel photo decodes in under 1 s).
    pub job_deadline_seconds: f64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { pool: "local".into(), jobs_per_receive: 1, heartbeat_seconds: 5.0, job_deadline_seconds: 60.0 }
    }
}

/// `[embedded]`: the one-machine deployment run by `skyburst up`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Holds the queue (`queue.db`), the store (`store/`) and the result index (`index.db`).
    /// Default `~/.local/share/skyburst` (or `$XDG_DATA_HOME/skyburst`); `--data-dir` overrides.
    pub data_dir: PathBuf,
    /// A fixed number of worker processes for `skyburst up`, with the controller off. 0 (the
    /// default) runs the controller, which scales the `local` pool between `scaling.min` and
    /// its quota (one per CPU core by default).
    pub workers: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { data_dir: default_data_dir(), workers: 0 }
    }
}

/// `~/.local/share/skyburst`, honouring `XDG_DATA_HOME`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("skyburst"),
        _ => super::home_dir().join(".local/share/skyburst"),
    }
}
