//! The composition root: turns the validated [`Config`] into concrete parts. The only module
//! that knows which implementation stands behind each seam.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use candle_core::Device;
use tokio::sync::watch;

use skyburst_providers::local::{LocalProvider, LocalSettings};
use skyburst_providers::Provider;

use crate::config::{Config, DeviceKind, PoolConfig, ProviderKind};
use crate::controller::{Controller, ControllerSettings, Pool};
use crate::detector::{self, ConvPath, Detector, DetectorOptions};
use crate::frontend::auth::Tokens;
use crate::frontend::{AppState, Settings};
use crate::index::ResultIndex;
use crate::queue::local::LocalQueues;
use crate::queue::Queue;
use crate::store::local::LocalStore;
use crate::store::ObjectStore;
use crate::worker::reply::OpenQueue;
use crate::worker::{Heartbeats, ReplyQueues, Worker, WorkerSettings};

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
        metrics: Default::default(),
        finished: Arc::new(tokio::sync::watch::channel(0).0),
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
    let store = store(config);
    let heartbeats = Arc::new(Heartbeats::new(
        store.clone(),
        config.store.output_bucket.clone(),
        &settings.instance,
        &settings.pool,
        Duration::from_secs_f64(config.worker.heartbeat_seconds),
    ));
    Ok(Worker::new(settings, queues.requests, ReplyQueues::new(queues.open), store, detector, heartbeats))
}

// === the controller and its pools ===

/// The controller with every configured pool's provider. `config_file` is passed on to the
/// worker processes the `local` pool starts.
pub fn controller(config: &Config, config_file: Option<&Path>, dry_run: bool) -> anyhow::Result<Controller> {
    let queues = queues(config)?;
    let pools = config.pools.iter().map(|p| pool(config, p, config_file)).collect::<anyhow::Result<Vec<_>>>()?;
    let sc = &config.scaling;
    let settings = ControllerSettings {
        id: format!("controller-{}", crate::cmd::worker::default_instance_id()),
        tick: Duration::from_secs_f64(config.controller.tick_seconds),
        dry_run,
        caps: sc.caps(),
        planner: sc.planner(),
        decisions_kept: config.controller.decisions_kept,
        deployment: config.controller.deployment.clone(),
        bucket: config.store.output_bucket.clone(),
        unavailable_grace: Duration::from_secs_f64(sc.unavailable_grace_seconds),
        lease_ttl: Duration::from_secs_f64(config.controller.lease_seconds),
    };
    Ok(Controller::new(settings, sc.policy(), pools, queues.requests, store(config)))
}

fn pool(config: &Config, pool: &PoolConfig, config_file: Option<&Path>) -> anyhow::Result<Pool> {
    let provider: Arc<dyn Provider> = match pool.provider {
        ProviderKind::Local => Arc::new(local_provider(config, pool, config_file)?),
        ProviderKind::Nova => anyhow::bail!(
            "pool {} uses provider \"nova\": this build has no OpenStack support; build with `--features openstack`",
            pool.name
        ),
        ProviderKind::Ec2 => {
            anyhow::bail!(
                "pool {} uses provider \"ec2\": this build has no AWS support; build with `--features aws`",
                pool.name
            )
        }
    };
    Ok(Pool { config: pool.clone(), provider, user_data: String::new() })
}

/// The `local` pool: `skyburst worker` processes of this very binary, with the same config
/// file and data directory, registered in `<data_dir>/control/local-<pool>.json`.
pub fn local_provider(config: &Config, pool: &PoolConfig, config_file: Option<&Path>) -> anyhow::Result<LocalProvider> {
    let program = std::env::current_exe().context("cannot find this program's path to start workers")?;
    let data_dir = &config.embedded.data_dir;
    let mut args = Vec::new();
    if let Some(file) = config_file {
        args.extend(["--config".to_string(), file.display().to_string()]);
    }
    args.extend(["--data-dir".to_string(), data_dir.display().to_string()]);
    args.extend(["worker", "--instance-id", "{id}", "--pool", &pool.name].map(String::from));
    if pool.boot_delay_seconds > 0.0 {
        args.extend(["--boot-delay-seconds".to_string(), pool.boot_delay_seconds.to_string()]);
    }
    let settings = LocalSettings {
        pool: pool.name.clone(),
        program,
        args,
        boot_delay: Duration::from_secs_f64(pool.boot_delay_seconds),
        registry: data_dir.join("control").join(format!("local-{}.json", pool.name)),
        // A batch of 64 images at ~100 ms each finishes within it.
        stop_timeout: Duration::from_secs(15),
        memory_per_instance: pool.memory_mb << 20,
    };
    LocalProvider::new(settings).with_context(|| format!("cannot open the local pool {}", pool.name))
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
