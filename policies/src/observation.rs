//! One check's view of the world: the queue backlog and every pool's instances, as plain data.
//! The controller fills it from the queue, the providers and the heartbeats; the simulator from
//! its model. Ages are seconds, given by the caller: the policies never read a clock.

use serde::{Deserialize, Serialize};

/// An instance's lifecycle state, mapped from each cloud's own states by its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Requested, not yet booted (EC2 `pending`, Nova `BUILD`). Counts as capacity.
    Pending,
    /// Booted. Counts as capacity unless it is draining.
    Running,
    /// Being shut down. Counts toward caps and quotas, not toward capacity.
    Stopping,
    /// Failed (Nova `ERROR`, a local worker that died): terminated and replaced.
    Error,
}

/// What the worker on an instance last reported in its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// No heartbeat yet (booting) or none readable: never treated as idle.
    Unknown,
    /// Waiting for jobs: safe to terminate.
    Idle,
    /// Running a batch: never terminated, only asked to drain.
    Busy,
    /// Asked to drain, still finishing its batch.
    Draining,
    /// Finished its batch after a drain request: safe to terminate.
    Drained,
}

/// One instance as seen by one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The provider's instance id.
    pub id: String,
    /// Lifecycle state from the provider.
    pub state: InstanceState,
    /// Worker activity from the latest heartbeat.
    pub activity: Activity,
    /// Seconds since the latest heartbeat; `None` if there has been none.
    pub heartbeat_age_s: Option<f64>,
    /// Seconds since the launch request.
    pub age_s: f64,
}

impl InstanceView {
    /// Pending or running and not on its way out: it will take jobs.
    pub fn is_capacity(&self) -> bool {
        matches!(self.state, InstanceState::Pending | InstanceState::Running)
            && !matches!(self.activity, Activity::Draining | Activity::Drained)
    }
}

/// Whether a pool accepted its last request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolHealth {
    /// Launches may go here.
    #[default]
    Ok,
    /// The cloud said `Capacity` or `Quota` this tick: skip it, burst to the next pool.
    Full,
    /// The cloud cannot be reached: no launches here; more demand goes to the next pool.
    Unavailable,
    /// The cloud asked us to slow down: no launches here and no burst past it this tick.
    Throttled,
    /// Credentials were refused: no launches here and no burst past it until an operator acts.
    AuthFailed,
}

/// One pool of instances on one cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// The pool's name from the config.
    pub name: String,
    /// Lower runs first: the private cloud is 1, the public cloud 2.
    pub priority: u32,
    /// Most instances this pool may hold, stopping ones included.
    pub quota: u32,
    /// Typical seconds from launch to the first job.
    pub boot_seconds: f64,
    /// Typical seconds from terminate to gone (billed, and counted toward the quota).
    #[serde(default)]
    pub shutdown_seconds: f64,
    /// The least the cloud bills one launch, seconds (EC2: 60; an owned private cloud: 0).
    #[serde(default)]
    pub billing_minimum_seconds: f64,
    /// Whether launches may go here this tick.
    pub health: PoolHealth,
    /// Every instance the pool's provider listed for this deployment.
    pub instances: Vec<InstanceView>,
}

impl PoolView {
    /// Instances that will take jobs.
    pub fn capacity(&self) -> u32 {
        self.instances.iter().filter(|i| i.is_capacity()).count() as u32
    }

    /// Instances that count toward the quota: all of them, stopping ones included.
    pub fn occupied(&self) -> u32 {
        self.instances.len() as u32
    }

    /// Paid seconds that do no work when an instance here is released and another launched
    /// later: its shutdown, the new one's boot, and the billing minimum the new launch may be
    /// rounded up to. Releasing an instance pays only if it would stay idle longer than this.
    pub fn relaunch_seconds(&self) -> f64 {
        self.shutdown_seconds + self.boot_seconds + self.billing_minimum_seconds
    }
}

/// Everything one check knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Visible + in-flight messages on the request queue.
    pub backlog: u64,
    /// Messages scheduled for later (retries); they keep capacity from being released.
    pub delayed: u64,
    /// Every pool, in any order (the planner sorts by priority).
    pub pools: Vec<PoolView>,
    /// Jobs per second one instance completes, measured from heartbeats, if known.
    pub throughput_per_instance: Option<f64>,
    /// Jobs per second arriving, as the caller's [`ArrivalMeter`] measures them, if known.
    ///
    /// [`ArrivalMeter`]: crate::ArrivalMeter
    #[serde(default)]
    pub arrivals: Option<Arrivals>,
}

/// The arrival rate at one check, from an [`ArrivalMeter`](crate::ArrivalMeter).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Arrivals {
    /// Jobs per second, smoothed over the meter's short window.
    pub rate: f64,
    /// Jobs per second, smoothed over the meter's long window: what a short burst barely moves.
    pub sustained: f64,
    /// How fast the rate changes, jobs per second per second: the short window's rate minus
    /// the long window's, over the difference of their lags. A step up shows here at once.
    pub trend: f64,
    /// Seconds since a check last saw a job arrive (since the meter started, if none has).
    #[serde(default)]
    pub quiet_s: f64,
}

impl Observation {
    /// Instances that will take jobs, over all pools.
    pub fn capacity(&self) -> u32 {
        self.pools.iter().map(PoolView::capacity).sum()
    }

    /// Instances that count toward caps, over all pools.
    pub fn occupied(&self) -> u32 {
        self.pools.iter().map(PoolView::occupied).sum()
    }

    /// The sum of pool quotas: no policy can want more than this.
    pub fn total_quota(&self) -> u32 {
        self.pools.iter().map(|p| p.quota).sum()
    }
}
