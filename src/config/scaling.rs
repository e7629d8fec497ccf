//! The config sections of the elastic fleet: the scaling policy and its caps, the controller
//! loop, the pools of worker instances, and the simulator's workload model.

use serde::{Deserialize, Serialize};
use skyburst_policies::{
    BacklogPerInstance, Caps, Debounce, PlannerConfig, PolicyName, QueueMinusRunning, ScalingPolicy, SeedHybrid, Slo,
};

/// The latency objective `slo` sizes for when `latency_objective_seconds` is unset.
pub const DEFAULT_SLO_OBJECTIVE_S: f64 = 60.0;

/// `[scaling]`: how many instances the backlog needs (the policy) and the limits on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// `slo` (arrivals ÷ throughput + what the backlog needs within the latency objective;
    /// releases only what would stay idle longer than a relaunch costs), `seed-hybrid` (out to
    /// ceil(backlog/2), in to ceil(backlog/10) after `debounce_checks`), `queue-minus-running`
    /// (one instance per message) or `backlog-per-instance`. Default `slo`.
    pub policy: PolicyName,
    /// Instances kept running with an empty queue, over all pools. Default 1: the first image
    /// does not wait for a worker to boot.
    pub min: u32,
    /// Most instances over all pools, stopping ones included. Default 19, as the seeds.
    pub max: u32,
    /// `seed-hybrid` and `backlog-per-instance`: consecutive checks that must agree before
    /// capacity is released. Default 3 (15 s at the default tick): a queue that is still
    /// draining keeps the instances just started for it. (`slo` waits a tenth of the released
    /// pool's relaunch cost instead.)
    pub debounce_checks: u32,
    /// `backlog-per-instance`: jobs per instance T. Unset: derived from
    /// `latency_objective_seconds` and the measured throughput.
    pub target_per_instance: Option<f64>,
    /// Seconds a job may wait in the queue. `slo` sizes the fleet for it (60 s when unset);
    /// setting it also enables the boot-time check before a public burst and derives T for
    /// `backlog-per-instance`.
    pub latency_objective_seconds: Option<f64>,
    /// `backlog-per-instance`: T until a throughput has been measured. Default 2, the seed's
    /// ratio.
    pub fallback_target: f64,
    /// Most launches per check over all pools. Default 10.
    pub max_launches_per_tick: u32,
    /// A pending instance older than this is stuck: terminated and replaced. Default 600 s.
    pub boot_timeout_seconds: f64,
    /// A running instance whose worker has not reported for this long is stuck. Default 60 s.
    pub heartbeat_timeout_seconds: f64,
    /// A pool whose cloud cannot be reached keeps its last-known instances, counted as pending,
    /// for this long; after it, demand bursts to the next pool. Default 120 s.
    pub unavailable_grace_seconds: f64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            policy: PolicyName::Slo,
            min: 1,
            max: 19,
            debounce_checks: 3,
            target_per_instance: None,
            latency_objective_seconds: None,
            fallback_target: 2.0,
            max_launches_per_tick: 10,
            boot_timeout_seconds: 600.0,
            heartbeat_timeout_seconds: 60.0,
            unavailable_grace_seconds: 120.0,
        }
    }
}

impl ScalingConfig {
    /// The named policy with its settings, for checks every `tick_s` seconds. Call on a
    /// validated config.
    pub fn policy(&self, tick_s: f64) -> Box<dyn ScalingPolicy + Send + Sync> {
        self.policy_named(self.policy, tick_s)
    }

    /// Another named policy with this config's settings (the simulator compares several).
    pub fn policy_named(&self, name: PolicyName, tick_s: f64) -> Box<dyn ScalingPolicy + Send + Sync> {
        let debounce = Debounce::try_new(self.debounce_checks).expect("validated: debounce_checks >= 1");
        match name {
            PolicyName::SeedHybrid => Box::new(SeedHybrid { debounce }),
            PolicyName::QueueMinusRunning => Box::new(QueueMinusRunning),
            PolicyName::BacklogPerInstance => Box::new(BacklogPerInstance {
                target: self.target_per_instance,
                latency_objective_s: self.latency_objective_seconds,
                fallback_target: self.fallback_target,
                debounce,
            }),
            PolicyName::Slo => Box::new(Slo::new(
                self.latency_objective_seconds.unwrap_or(DEFAULT_SLO_OBJECTIVE_S),
                tick_s,
                self.fallback_target,
            )),
        }
    }

    /// `min ..= max`. Call on a validated config.
    pub fn caps(&self) -> Caps {
        Caps::try_new(self.min, self.max).expect("validated: min <= max, max >= 1")
    }

    /// The burst planner's limits.
    pub fn planner(&self) -> PlannerConfig {
        PlannerConfig {
            max_instances: self.max,
            max_launches_per_tick: self.max_launches_per_tick,
            boot_timeout_s: self.boot_timeout_seconds,
            heartbeat_timeout_s: self.heartbeat_timeout_seconds,
            latency_objective_s: self.latency_objective_seconds,
        }
    }
}

/// `[controller]`: the reconcile loop (`skyburst controller`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// This deployment's name, tagged on every instance (`skyburst:deployment`) so that a
    /// controller lists only its own. Default `skyburst`.
    pub deployment: String,
    /// Seconds between checks, 0.1..=300. Default 5: the seeds polled every 5 s, and a check
    /// costs one queue-depth call and one list per pool.
    pub tick_seconds: f64,
    /// Seconds a controller's lease lasts without renewal; a standby takes over after it.
    /// Default 15 (three ticks).
    pub lease_seconds: f64,
    /// Address of the `/metrics` endpoint. Default `127.0.0.1`.
    pub metrics_bind: String,
    /// Port of the `/metrics` endpoint; 0 picks a free one (printed). Default 9464.
    pub metrics_port: u16,
    /// `[controller.tls]`: serve `/metrics` and `/v1/credentials` over HTTPS with this
    /// certificate and key (PEM; a self-signed pair is enough: Nova workers pin it). Unset:
    /// plain HTTP, refused off loopback without `--insecure`.
    pub tls: crate::tls::TlsFiles,
    /// Decisions kept in `control/status.json` (those that acted or changed the target).
    /// Default 50.
    pub decisions_kept: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            deployment: "skyburst".into(),
            tick_seconds: 5.0,
            lease_seconds: 15.0,
            metrics_bind: "127.0.0.1".into(),
            metrics_port: 9464,
            tls: Default::default(),
            decisions_kept: 50,
        }
    }
}

/// Which cloud runs a pool's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `skyburst worker` processes on this machine.
    Local,
    /// OpenStack Nova servers (build with `--features openstack`).
    Nova,
    /// AWS EC2 instances (build with `--features aws`).
    Ec2,
}

/// `[[pools]]`: one pool of worker instances on one cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name, in tags, logs and answers.
    pub name: String,
    /// `local`, `nova` or `ec2`.
    pub provider: ProviderKind,
    /// Lower fills first: the private cloud 1, the public cloud 2.
    #[serde(default = "one")]
    pub priority: u32,
    /// Most instances in this pool, stopping ones included.
    pub quota: u32,
    /// Typical seconds from launch to the first job (the planner's boot-time check and the
    /// simulator). Default 60.
    #[serde(default = "sixty")]
    pub boot_seconds: f64,
    /// Typical seconds from terminate to gone (the simulator). Default 30.
    #[serde(default = "thirty")]
    pub shutdown_seconds: f64,
    /// Money per instance-hour (reports and the simulator). Default 0.
    #[serde(default)]
    pub price_per_hour: f64,
    /// Seconds every launch is billed at least (the simulator's bill). Default: 60 for `ec2`
    /// (EC2's on-demand minimum), 0 for `nova` and `local` (capacity already paid for).
    #[serde(default)]
    pub billing_minimum_seconds: Option<f64>,
    /// Bills are rounded up to a multiple of this many seconds; 0 bills exactly. Default: 1
    /// for `ec2` (per-second billing), 0 otherwise.
    #[serde(default)]
    pub billing_increment_seconds: Option<f64>,
    /// Worker processes per instance. Default 1.
    #[serde(default = "one")]
    pub workers_per_instance: u32,
    /// `local` only: seconds a new worker waits before taking jobs, to rehearse a cloud's boot
    /// time on one machine. Default 0.
    #[serde(default)]
    pub boot_delay_seconds: f64,
    /// `local` only: MiB of memory one worker needs (a YOLOv3-tiny worker holds about 200 MiB);
    /// launches stop with `Capacity` when the machine's available memory holds no more, and
    /// demand bursts to the next pool. 0: no check. Default 300.
    #[serde(default = "worker_memory_mb")]
    pub memory_mb: u64,
    /// Cloud pools: machine image (AMI id or Glance image name).
    #[serde(default)]
    pub image: String,
    /// Cloud pools: instance type or Nova flavor.
    #[serde(default)]
    pub flavor: String,
    /// `nova` pools: the id of the network the servers join, or `none` for servers without a NIC
    /// (a control plane without an L2 agent, as in the tests).
    #[serde(default)]
    pub network: String,
    /// `ec2` pools: subnet ids, tried in order when one has no capacity. Empty (the default):
    /// the default VPC.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Cloud pools: security groups (ids on EC2, names on Nova). The worker needs no inbound
    /// port: it only calls out to the queue and the store.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Cloud pools: key pair for SSH. Unset (the default): none.
    #[serde(default)]
    pub key_name: Option<String>,
    /// `ec2` pools: instance profile whose role grants the worker SQS and S3 (the worker policy
    /// in images/iam/). Unset: none, and the worker finds no credentials.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// `ec2` pools: GiB of the encrypted root volume, 8..=1024. Default 16 (Debian + binary +
    /// model take about 3).
    #[serde(default = "root_volume_gb")]
    pub root_volume_gb: u32,
}

fn root_volume_gb() -> u32 {
    16
}

fn worker_memory_mb() -> u64 {
    300
}
fn one() -> u32 {
    1
}
fn sixty() -> f64 {
    60.0
}
fn thirty() -> f64 {
    30.0
}

impl PoolConfig {
    /// The embedded default: one local pool, one worker per CPU core (two 1-thread processes
    /// beat one 2-thread process by 22 % on 2 cores; docs/benchmarks.md).
    pub fn local_default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        Self {
            name: "local".into(),
            provider: ProviderKind::Local,
            priority: 1,
            quota: cores,
            boot_seconds: 2.0,
            shutdown_seconds: 1.0,
            price_per_hour: 0.0,
            billing_minimum_seconds: None,
            billing_increment_seconds: None,
            workers_per_instance: 1,
            boot_delay_seconds: 0.0,
            memory_mb: worker_memory_mb(),
            image: String::new(),
            flavor: String::new(),
            network: String::new(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            key_name: None,
            instance_profile: None,
            root_volume_gb: root_volume_gb(),
        }
    }

    /// How the simulator bills this pool's launches: the configured minimum and increment, or
    /// the provider's (EC2 per second with a 60 s minimum; Nova and local machines are paid
    /// for already, so exactly).
    pub fn billing(&self) -> crate::simulate::Billing {
        let default = match self.provider {
            ProviderKind::Ec2 => crate::simulate::Billing::EC2,
            ProviderKind::Nova | ProviderKind::Local => crate::simulate::Billing::default(),
        };
        crate::simulate::Billing {
            minimum_s: self.billing_minimum_seconds.unwrap_or(default.minimum_s),
            increment_s: self.billing_increment_seconds.unwrap_or(default.increment_s),
        }
    }
}

/// Service-time distribution of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every job takes the mean.
    Constant,
    /// Memoryless around the mean.
    Exponential,
    /// Long-tailed around the mean, with `service_sigma`.
    Lognormal,
}

/// `[simulate]`: the workload model of `skyburst simulate` (pools come from `[[pools]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    /// Shape of the service time. Default `lognormal`.
    pub service: Distribution,
    /// Mean seconds one job holds a worker. Default 0.14 (YOLOv3-tiny, 1 thread, docs/benchmarks.md).
    pub service_mean_seconds: f64,
    /// `lognormal` only: sigma of the underlying normal. Default 0.25.
    pub service_sigma: f64,
    /// Random seed: the same seed gives the same report. Default 1.
    pub seed: u64,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        Self { service: Distribution::Lognormal, service_mean_seconds: 0.14, service_sigma: 0.25, seed: 1 }
    }
}
