//! The composition root: turns the validated [`Config`] into concrete parts. The only module
//! that knows which implementation stands behind each seam.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use candle_core::Device;
use tokio::sync::watch;

use crate::config::{Config, DeviceKind};
use crate::detector::{self, ConvPath, Detector, DetectorOptions};
use crate::frontend::auth::Tokens;
use crate::frontend::{AppState, Settings};
use crate::index::ResultIndex;
use crate::queue::local::LocalQueues;
use crate::queue::Queue;
use crate::store::local::LocalStore;
use crate::store::ObjectStore;
use crate::worker::reply::OpenQueue;
use crate::worker::{ReplyQueues, Worker, WorkerSettings};

/// Logs to stderr; `RUST_LOG` filters (default `info`). Stdout stays free for results.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The compute device named by `detector.device`.
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0).context("detector.device = \"cuda\" but no CUDA GPU could be opened"),
    }
}

/// Loads the detector the config describes, with its thread pool sized.
pub fn detector(config: &Config) -> anyhow::Result<Detector> {
    let d = &config.detector;
    detector::set_threads(d.threads);
    let options = DetectorOptions {
        threshold: d.threshold,
        nms_iou: d.nms_iou,
        resize: d.resize,
        max_pixels: d.max_pixels,
        conv_path: ConvPath::Fused,
    };
    let started = std::time::Instant::now();
    let detector = Detector::load(&d.model_dir, options, &device(d.device)?)?;
    tracing::info!(
        model_dir = %d.model_dir.display(),
        threads = d.threads,
        load_ms = started.elapsed().as_millis() as u64,
        "detector loaded"
    );
    Ok(detector)
}

// === the embedded deployment: SQLite queue, filesystem store, SQLite index ===

/// The queues a process uses, all in `<data_dir>/queue.db`.
pub struct Queues {
    /// The shared request queue, with its dead-letter redrive.
    pub requests: Arc<dyn Queue>,
    /// `<requests>-dlq`.
    pub dead_letters: Arc<dyn Queue>,
    /// Opens any other queue (response queues) by name.
    pub open: OpenQueue,
}

/// Opens the embedded queues named by the config.
pub fn queues(config: &Config) -> anyhow::Result<Queues> {
    let path = config.embedded.data_dir.join("queue.db");
    let q = &config.queue;
    let db = LocalQueues::open(&path, Duration::from_millis(q.poll_interval_ms))
        .with_context(|| format!("cannot open the embedded queue at {}", path.display()))?;
    let dlq_name = format!("{}-dlq", q.requests);
    let requests = Arc::new(db.queue(&q.requests, Some((&dlq_name, q.max_receives))));
    let dead_letters = Arc::new(db.queue(&dlq_name, None));
    let open: OpenQueue = Arc::new(move |name: &str| Arc::new(db.queue(name, None)) as Arc<dyn Queue>);
    Ok(Queues { requests, dead_letters, open })
}

/// The embedded object store, `<data_dir>/store`.
pub fn store(config: &Config) -> Arc<dyn ObjectStore> {
    Arc::new(LocalStore::new(config.embedded.data_dir.join("store")))
}

/// The front end's state, with `shutdown` turning true when it should stop.
pub fn frontend(config: &Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<AppState> {
    let queues = queues(config)?;
    let f = &config.frontend;
    let index_path = config.embedded.data_dir.join("index.db");
    let index = ResultIndex::open(&index_path)?;
    let responses = (queues.open)(&format!("{}-{}", config.queue.responses_prefix, f.instance_id));
    let settings = Settings {
        wait: Duration::from_secs(f.wait_seconds),
        max_body: f.max_body_bytes,
        max_pixels: config.detector.max_pixels,
        input_bucket: config.store.input_bucket.clone(),
        output_bucket: config.store.output_bucket.clone(),
        instance_id: f.instance_id.clone(),
        long_poll: Duration::from_secs(config.queue.long_poll_seconds),
    };
    Ok(AppState {
        settings,
        requests: queues.requests,
        dead_letters: queues.dead_letters,
        responses,
        store: store(config),
        index,
        waiters: Default::default(),
        shutdown,
    })
}

/// The bearer tokens from `frontend.tokens` and `frontend.tokens_file`.
pub fn tokens(config: &Config) -> anyhow::Result<Tokens> {
    let mut tokens = config.frontend.tokens.clone();
    if let Some(path) = &config.frontend.tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read frontend.tokens_file {}", path.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            anyhow::ensure!(line.len() >= 16, "a token in {} is shorter than 16 characters", path.display());
            tokens.push(line.to_string());
        }
    }
    Ok(Tokens::new(&tokens))
}

/// A worker with its detector loaded.
pub fn worker(config: &Config, instance: String) -> anyhow::Result<Worker> {
    let queues = queues(config)?;
    let settings = WorkerSettings {
        instance,
        pool: config.worker.pool.clone(),
        jobs_per_receive: config.worker.jobs_per_receive,
        batch_size: config.detector.batch_size,
        long_poll: Duration::from_secs(config.queue.long_poll_seconds),
        visibility: Duration::from_secs(config.queue.visibility_timeout_seconds),
        output_bucket: config.store.output_bucket.clone(),
    };
    let detector = Arc::new(detector(config)?);
    Ok(Worker::new(settings, queues.requests, ReplyQueues::new(queues.open), store(config), detector))
}

/// A runtime for the async commands. Two threads: the work is waiting on queues and the
/// detector runs on its own pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
