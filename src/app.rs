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

use crate::config::{Config, DeviceKind, PoolConfig, ProviderKind, QueueBackend, StoreBackend};
use crate::controller::{Controller, ControllerSettings, Pool};
use crate::detector::{ConvPath, Detector, DetectorOptions};
use crate::frontend::auth::Tokens;
use crate::frontend::{AppState, Settings};
use crate::index::ResultIndex;
use crate::queue::local::LocalQueues;
use crate::queue::Queue;
use crate::store::local::LocalStore;
use crate::store::ObjectStore;
use crate::worker::reply::OpenQueue;
use crate::worker::{DetectorThread, Heartbeats, ReplyQueues, Worker, WorkerSettings};

/// Logs to stderr; `RUST_LOG` filters (default `info`). Stdout stays free for results.
pub fn init_tracing() {
    // aws_config logs each credential source that found nothing as a warning; the error a
    // missing credential gives names them all. openstack_sdk logs three errors per call to an
    // unreachable Nova (one per version-discovery URL); the provider reports it once, as
    // `Unavailable`. Either comes back when RUST_LOG names it.
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut directives = vec![requested.clone()];
    for (target, level) in [("aws_config", "error"), ("openstack_sdk", "off")] {
        if !requested.contains(target) {
            directives.push(format!("{target}={level}"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,aws_config=error,openstack_sdk=off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The compute device named by `detector.device`.
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0).context("detector.device = \"cuda\" but no CUDA GPU could be opened"),
    }
}

/// Loads the detector the config describes. Its `detector.threads` size the pool of whichever
/// thread runs it: rayon's global pool ([`crate::detector::set_threads`]) or the worker's
/// [`DetectorThread`].
pub fn detector(config: &Config) -> anyhow::Result<Detector> {
    let d = &config.detector;
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

// === queues and store: embedded (SQLite, files) or AWS (SQS, S3) ===

/// The queues a process uses.
pub struct Queues {
    /// The shared request queue, with its dead-letter redrive.
    pub requests: Arc<dyn Queue>,
    /// `<requests>-dlq`.
    pub dead_letters: Arc<dyn Queue>,
    /// Opens any other queue (response queues) by name.
    pub open: OpenQueue,
}

/// What a process reads and writes: its queues and its object store.
pub struct Backends {
    /// The queues `queue.backend` names.
    pub queues: Queues,
    /// The store `store.backend` names.
    pub store: Arc<dyn ObjectStore>,
    /// The AWS session, when the config uses AWS at all.
    #[cfg(feature = "aws")]
    pub aws: Option<skyburst_providers::aws::AwsSession>,
}

/// Opens the queues and the store the config names. `role` names the process in the AWS call
/// log (`serve`, `worker`, `controller`, ...). Checks that the request queue exists, so a
/// wrong endpoint or a missing bootstrap is reported at start-up.
pub async fn backends(config: &Config, role: &str) -> anyhow::Result<Backends> {
    backends_for(config, role, None).await
}

/// As [`backends`], for the worker of `instance`: with `credentials.token` set (a Nova
/// worker), its AWS credentials are vended by the controller.
pub async fn backends_for(config: &Config, role: &str, instance: Option<&str>) -> anyhow::Result<Backends> {
    #[cfg(feature = "aws")]
    let aws = aws_session_for(config, role, instance).await?;
    #[cfg(not(feature = "aws"))]
    let _ = (role, instance);
    let queues = match config.queue.backend {
        QueueBackend::Embedded => embedded_queues(config)?,
        #[cfg(feature = "aws")]
        QueueBackend::Sqs => sqs_queues(config, aws.as_ref().expect("loaded for sqs")).await?,
        #[cfg(not(feature = "aws"))]
        QueueBackend::Sqs => anyhow::bail!("queue.backend = \"sqs\" needs a build with `--features aws`"),
    };
    let store = open_store(
        config,
        #[cfg(feature = "aws")]
        aws.as_ref(),
    )?;
    Ok(Backends {
        queues,
        store,
        #[cfg(feature = "aws")]
        aws,
    })
}

/// The store alone (commands that need no queue).
pub async fn store(config: &Config, role: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    #[cfg(feature = "aws")]
    let aws = aws_session(config, role).await?;
    #[cfg(not(feature = "aws"))]
    let _ = role;
    open_store(
        config,
        #[cfg(feature = "aws")]
        aws.as_ref(),
    )
}

fn open_store(
    config: &Config,
    #[cfg(feature = "aws")] aws: Option<&skyburst_providers::aws::AwsSession>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match config.store.backend {
        StoreBackend::Embedded => Arc::new(LocalStore::new(config.embedded.data_dir.join("store"))),
        #[cfg(feature = "aws")]
        StoreBackend::S3 => Arc::new(crate::store::s3::S3Store::new(aws.expect("loaded for s3"))),
        #[cfg(not(feature = "aws"))]
        StoreBackend::S3 => anyhow::bail!("store.backend = \"s3\" needs a build with `--features aws`"),
    })
}

/// The embedded queues, all in `<data_dir>/queue.db`.
fn embedded_queues(config: &Config) -> anyhow::Result<Queues> {
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

/// Whether any part of the config lives on AWS.
#[cfg(feature = "aws")]
fn uses_aws(config: &Config) -> bool {
    config.queue.backend == QueueBackend::Sqs
        || config.store.backend == StoreBackend::S3
        || config.pools.iter().any(|p| p.provider == ProviderKind::Ec2)
}

/// The AWS session, when the config uses AWS; `None` otherwise.
#[cfg(feature = "aws")]
pub async fn aws_session(config: &Config, role: &str) -> anyhow::Result<Option<skyburst_providers::aws::AwsSession>> {
    aws_session_for(config, role, None).await
}

/// As [`aws_session`], for the worker of `instance`: vended credentials when the config
/// carries a one-time token (`credentials.token`, rendered into a Nova worker's user-data).
#[cfg(feature = "aws")]
async fn aws_session_for(
    config: &Config,
    role: &str,
    instance: Option<&str>,
) -> anyhow::Result<Option<skyburst_providers::aws::AwsSession>> {
    if !uses_aws(config) {
        return Ok(None);
    }
    let c = &config.credentials;
    let credentials = match (&c.token, &c.url, instance) {
        (Some(token), Some(url), Some(instance)) => {
            // Kept across restarts: the one-time token is spent after the first exchange.
            let refresh_file = config.embedded.data_dir.join("credentials").join(format!("{instance}.refresh"));
            let provider = crate::credentials::client::VendedCredentialsProvider::new(
                url.clone(),
                instance.to_string(),
                token.clone(),
                refresh_file,
            );
            Some(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
        }
        (Some(_), None, _) => anyhow::bail!("credentials.token is set but credentials.url is not: set both or neither"),
        _ => None,
    };
    let a = &config.aws;
    let settings = skyburst_providers::aws::AwsSettings {
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
        operation_timeout: Duration::from_secs_f64(a.operation_timeout_seconds),
        attempt_timeout: Duration::from_secs_f64(a.attempt_timeout_seconds),
        connect_timeout: Duration::from_secs_f64(a.connect_timeout_seconds),
        max_attempts: a.max_attempts,
        call_log: a.call_log.clone(),
        role: role.to_string(),
        credentials,
    };
    let session = skyburst_providers::aws::AwsSession::load(&settings).await?;
    Ok(Some(session))
}

/// The SQS queues; fails if the request queue cannot be found, naming the endpoint.
#[cfg(feature = "aws")]
async fn sqs_queues(config: &Config, session: &skyburst_providers::aws::AwsSession) -> anyhow::Result<Queues> {
    let sqs = crate::queue::sqs::SqsQueues::new(session);
    let q = &config.queue;
    let requests = sqs.queue(&q.requests);
    requests.url().await.with_context(|| format!("cannot open the request queue on SQS at {}", endpoint(config)))?;
    let dead_letters = Arc::new(sqs.queue(&format!("{}-dlq", q.requests)));
    let open: OpenQueue = Arc::new(move |name: &str| Arc::new(sqs.queue(name)) as Arc<dyn Queue>);
    Ok(Queues { requests: Arc::new(requests), dead_letters, open })
}

/// The AWS endpoint in messages: the override, or the region's own.
#[cfg(feature = "aws")]
fn endpoint(config: &Config) -> String {
    match (&config.aws.endpoint_url, &config.aws.region) {
        (Some(url), _) => url.clone(),
        (None, Some(region)) => format!("AWS region {region}"),
        (None, None) => "AWS (region from the environment)".into(),
    }
}

/// The front end's own response queue, `<responses_prefix>-<instance_id>`; on SQS it is created
/// if missing (each front-end instance owns one).
async fn response_queue(config: &Config, backends: &Backends) -> anyhow::Result<Arc<dyn Queue>> {
    let name = format!("{}-{}", config.queue.responses_prefix, config.frontend.instance_id);
    #[cfg(feature = "aws")]
    if let (QueueBackend::Sqs, Some(session)) = (config.queue.backend, &backends.aws) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let sqs = crate::queue::sqs::SqsQueues::new(session);
        // Answers older than a day have no one waiting for them (SQS keeps 4 days by default).
        let attributes = [(A::MessageRetentionPeriod, "86400".to_string())].into_iter().collect();
        let queue = sqs
            .create(&name, attributes)
            .await
            .with_context(|| format!("cannot create the response queue {name} on SQS at {}", endpoint(config)))?;
        return Ok(Arc::new(queue));
    }
    Ok((backends.queues.open)(&name))
}

/// The front end's state, with `shutdown` turning true when it should stop.
pub async fn frontend(config: &Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<AppState> {
    let backends = backends(config, "serve").await?;
    let f = &config.frontend;
    let index_path = config.embedded.data_dir.join("index.db");
    let index = ResultIndex::open(&index_path)?;
    let responses = response_queue(config, &backends).await?;
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
        requests: backends.queues.requests,
        dead_letters: backends.queues.dead_letters,
        responses,
        store: backends.store,
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
pub async fn worker(config: &Config, instance: String) -> anyhow::Result<Worker> {
    let Backends { queues, store, .. } = backends_for(config, "worker", Some(&instance)).await?;
    let settings = WorkerSettings {
        instance,
        pool: config.worker.pool.clone(),
        jobs_per_receive: config.worker.jobs_per_receive,
        batch_size: config.detector.batch_size,
        long_poll: Duration::from_secs(config.queue.long_poll_seconds),
        visibility: Duration::from_secs(config.queue.visibility_timeout_seconds),
        output_bucket: config.store.output_bucket.clone(),
    };
    let detector = DetectorThread::spawn(Arc::new(detector(config)?), config.detector.threads)
        .context("cannot start the detector thread")?;
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
pub async fn controller(config: &Config, config_file: Option<&Path>, dry_run: bool) -> anyhow::Result<Controller> {
    let backends = backends(config, "controller").await?;
    // Every cloud pool's user-data pins the same release: its manifest is read once.
    let release = match config.pools.iter().any(|p| p.provider != ProviderKind::Local) {
        true => Some(crate::boot::fetch_release(config, backends.store.as_ref()).await?),
        false => None,
    };
    let mut pools = Vec::new();
    for p in &config.pools {
        let user_data = match &release {
            Some(release) if p.provider != ProviderKind::Local => crate::boot::render_user_data(config, p, release),
            _ => String::new(),
        };
        let vends_credentials = config.credentials.vended_to(p);
        let provider = provider(config, p, config_file, &backends)?;
        pools.push(Pool { config: p.clone(), provider, user_data, vends_credentials });
    }
    #[cfg(feature = "aws")]
    let vendor = credential_vendor(config, &pools, &backends)?;
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
    #[allow(unused_mut)]
    let mut controller = Controller::new(settings, sc.policy(), pools, backends.queues.requests, backends.store);
    #[cfg(feature = "aws")]
    {
        controller.vendor = vendor;
    }
    Ok(controller)
}

/// The vendor of Nova workers' AWS credentials, when `credentials.role_arn` is set.
#[cfg(feature = "aws")]
fn credential_vendor(
    config: &Config,
    pools: &[Pool],
    backends: &Backends,
) -> anyhow::Result<Option<Arc<crate::credentials::vendor::CredentialVendor>>> {
    let Some(role_arn) = &config.credentials.role_arn else { return Ok(None) };
    let session = backends.aws.as_ref().context(
        "credentials.role_arn is set but this config uses no AWS queue or store: vended credentials are for SQS and S3",
    )?;
    let policy = crate::credentials::policy::worker_session_policy(config).to_string();
    let vending: Vec<Arc<dyn Provider>> =
        pools.iter().filter(|p| p.vends_credentials).map(|p| p.provider.clone()).collect();
    Ok(Some(Arc::new(crate::credentials::vendor::CredentialVendor::new(
        session,
        role_arn.clone(),
        Duration::from_secs(config.credentials.duration_seconds.into()),
        policy,
        (backends.store.clone(), config.store.output_bucket.clone()),
        vending,
    ))))
}

fn provider(
    config: &Config,
    pool: &PoolConfig,
    config_file: Option<&Path>,
    backends: &Backends,
) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(match pool.provider {
        ProviderKind::Local => Arc::new(local_provider(config, pool, config_file)?),
        #[cfg(feature = "openstack")]
        ProviderKind::Nova => Arc::new(nova_provider(config, pool)?),
        #[cfg(not(feature = "openstack"))]
        ProviderKind::Nova => anyhow::bail!(
            "pool {} uses provider \"nova\": this build has no OpenStack support; build with `--features openstack`",
            pool.name
        ),
        #[cfg(feature = "aws")]
        ProviderKind::Ec2 => Arc::new(ec2_provider(config, pool, backends.aws.as_ref().expect("loaded for ec2 pools"))),
        #[cfg(not(feature = "aws"))]
        ProviderKind::Ec2 => {
            let _ = backends;
            anyhow::bail!(
                "pool {} uses provider \"ec2\": this build has no AWS support; build with `--features aws`",
                pool.name
            )
        }
    })
}

/// A `nova` pool's provider, on the cloud `OS_CLOUD` (clouds.yaml) or the `OS_*` variables name.
#[cfg(feature = "openstack")]
pub fn nova_provider(config: &Config, pool: &PoolConfig) -> anyhow::Result<skyburst_providers::nova::NovaProvider> {
    let cloud = skyburst_providers::nova::cloud_config().map_err(anyhow::Error::msg)?;
    let settings = skyburst_providers::nova::NovaSettings {
        pool: pool.name.clone(),
        deployment: config.controller.deployment.clone(),
        flavor: pool.flavor.clone(),
        network: pool.network.clone(),
        security_groups: pool.security_groups.clone(),
        key_name: pool.key_name.clone(),
    };
    Ok(skyburst_providers::nova::NovaProvider::new(settings, cloud))
}

/// An `ec2` pool's provider.
#[cfg(feature = "aws")]
pub fn ec2_provider(
    config: &Config,
    pool: &PoolConfig,
    session: &skyburst_providers::aws::AwsSession,
) -> skyburst_providers::ec2::Ec2Provider {
    let settings = skyburst_providers::ec2::Ec2Settings {
        pool: pool.name.clone(),
        deployment: config.controller.deployment.clone(),
        subnets: pool.subnets.clone(),
        security_groups: pool.security_groups.clone(),
        key_name: pool.key_name.clone(),
        instance_profile: pool.instance_profile.clone(),
        root_volume_gb: pool.root_volume_gb,
    };
    skyburst_providers::ec2::Ec2Provider::new(settings, session)
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
