//! The controller (`skyburst controller`): a reconcile loop. Each check observes the queue,
//! every pool and the workers' heartbeats; asks the policy how many instances are needed; plans
//! where (private first); acts; logs one decision line and writes `control/status.json`. It
//! keeps nothing between checks but the policy's explicit state, so a restart adopts the fleet.
//!
//! # Layout
//! - [`observe`]: queue + providers + heartbeats → `Observation`.
//! - [`ceiling`]: each pool's quota lowered to what the cloud's own limits leave room for.
//! - [`act`]: plan → launches, terminations, drain requests; re-plans on a full pool.
//! - [`lease`]: one acting controller per deployment.
//! - [`error`]: what stops a check, and [`error_policy`]: retry now, back off or report.
//! - [`metrics`]: Prometheus counters and gauges; [`serve`]: `/metrics`.

pub mod act;
pub mod ceiling;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod serve;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use skyburst_policies::{
    decide, plan, Action, ArrivalMeter, Caps, PlannerConfig, PolicyState, PoolHealth, ScalingPolicy,
};
use skyburst_providers::Provider;
use tokio::sync::watch;

use crate::config::PoolConfig;
use crate::control::{DecisionRecord, FleetStatus, STATUS};
use crate::job;
use crate::store::{ObjectStore, StoreError};
use act::Actor;
use ceiling::Ceilings;
pub use error::{error_policy, Error, Next};
use lease::LeaseKeeper;
use metrics::Metrics;
use observe::{FinishedJobs, LastKnown, Observer};

/// One configured pool and the provider that runs it.
pub struct Pool {
    /// `[[pools]]` entry.
    pub config: PoolConfig,
    /// Its cloud.
    pub provider: Arc<dyn Provider>,
    /// cloud-init user-data for its instances (empty for `local`).
    pub user_data: String,
    /// Its instances get a one-time credentials token each (Nova workers reaching AWS).
    pub vends_credentials: bool,
}

/// The controller's fixed settings.
pub struct ControllerSettings {
    /// `<hostname>-<pid>`: the lease holder and the status writer.
    pub id: String,
    /// Seconds between checks.
    pub tick: Duration,
    /// Decide and log, but do not act.
    pub dry_run: bool,
    /// Scaling caps.
    pub caps: Caps,
    /// Planner limits.
    pub planner: PlannerConfig,
    /// Decisions kept in the status.
    pub decisions_kept: usize,
    /// Tagged on every instance; scopes `list` to this deployment.
    pub deployment: String,
    /// Bucket of the control records (heartbeats, drains, lease, status).
    pub bucket: String,
    /// How long an unreachable pool's last-known instances still count, as pending.
    pub unavailable_grace: Duration,
    /// How long the lease lasts unless renewed.
    pub lease_ttl: Duration,
}

/// The reconcile loop and its parts.
pub struct Controller {
    settings: ControllerSettings,
    policy: Box<dyn ScalingPolicy + Send + Sync>,
    pools: Vec<Pool>,
    observer: Observer,
    actor: Actor,
    lease: LeaseKeeper,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// Shared with the `/metrics` endpoint.
    pub metrics: Arc<Metrics>,
    /// Vends Nova workers their AWS credentials at `/v1/credentials`, when configured.
    #[cfg(feature = "aws")]
    pub vendor: Option<Arc<crate::credentials::vendor::CredentialVendor>>,
}

/// What the loop carries between checks: the policy's state and the status history (both
/// also in `control/status.json`, from which a restarted controller resumes), and each pool's
/// last answer (an observation cache for the `Unavailable` grace period, not a count).
#[derive(Default)]
struct Memory {
    policy: PolicyState,
    decisions: VecDeque<DecisionRecord>,
    last_known: HashMap<String, LastKnown>,
    last_desired: Option<u32>,
    /// Pools that answered `Throttled`: no launches there (and no burst past them) until then.
    backoff: HashMap<String, Backoff>,
    /// What the clouds' limits leave room for, per pool.
    ceilings: Ceilings,
    /// The fleet's finished jobs, from the heartbeats' counters.
    finished: FinishedJobs,
    /// The arrival rate, from the backlog and the finished jobs.
    arrivals: ArrivalMeter,
}

/// A throttled pool's pause, as [`error_policy`] sets it for [`Error::Throttled`]: it grows
/// while the cloud keeps answering `Throttled`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until_ms: i64,
    /// Throttled answers in a row.
    streak: u32,
}

impl Memory {
    /// Marks pools still backing off as throttled, and forgets lapsed backoffs.
    fn hold_back(&mut self, observation: &mut skyburst_policies::Observation, now_ms: i64) {
        self.backoff.retain(|_, b| b.until_ms > now_ms);
        for pool in &mut observation.pools {
            if self.backoff.contains_key(&pool.name) && pool.health == PoolHealth::Ok {
                pool.health = PoolHealth::Throttled;
            }
        }
    }

    /// Starts or doubles the backoff of pools the cloud throttled in this check.
    fn back_off(&mut self, pools: &[String], now_ms: i64, tick: Duration) {
        for pool in pools {
            let streak = self.backoff.get(pool).map_or(1, |b| b.streak.saturating_add(1));
            let error = Error::Throttled { pool: pool.clone() };
            let wait = error_policy(&error).wait(tick, streak);
            let until_ms = now_ms + wait.as_millis() as i64;
            tracing::warn!(%pool, wait_s = wait.as_secs_f64(), "the cloud is throttling us: no launches in this pool for a while");
            self.backoff.insert(pool.clone(), Backoff { until_ms, streak });
        }
    }
}

impl Controller {
    /// Assembles a controller; `app::controller` builds the parts from the config.
    pub fn new(
        settings: ControllerSettings,
        policy: Box<dyn ScalingPolicy + Send + Sync>,
        pools: Vec<Pool>,
        requests: Arc<dyn crate::queue::Queue>,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let bucket = settings.bucket.clone();
        let observer = Observer {
            requests,
            store: store.clone(),
            bucket: bucket.clone(),
            unavailable_grace_s: settings.unavailable_grace.as_secs_f64(),
            heartbeat_timeout_s: settings.planner.heartbeat_timeout_s,
        };
        let actor = Actor {
            store: store.clone(),
            bucket: bucket.clone(),
            deployment: settings.deployment.clone(),
            metrics: metrics.clone(),
        };
        let lease = LeaseKeeper::new(store.clone(), bucket.clone(), settings.id.clone(), settings.lease_ttl);
        Self {
            settings,
            policy,
            pools,
            observer,
            actor,
            lease,
            store,
            bucket,
            metrics,
            #[cfg(feature = "aws")]
            vendor: None,
        }
    }

    /// The configured pools.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Checks every tick until `shutdown`; never stops on a cloud or store error: after one,
    /// [`error_policy`] says how long to wait and how loudly to say so.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut memory = self.resume().await;
        let mut leading = false;
        let mut streak = 0u32;
        let tick = self.settings.tick;
        tracing::info!(controller = %self.settings.id, policy = self.policy.name(), dry_run = self.settings.dry_run, "controller started");
        loop {
            let outcome = match self.lease.hold().await {
                Ok(true) => {
                    if !leading {
                        tracing::info!(controller = %self.settings.id, "holding the lease: acting for this deployment");
                    }
                    leading = true;
                    self.check(&mut memory).await
                }
                Ok(false) => {
                    if leading {
                        tracing::warn!("lost the lease to another controller; standing by");
                    }
                    leading = false;
                    Ok(())
                }
                Err(e) => Err(Error::Lease(e)),
            };
            let wait = match &outcome {
                Ok(()) => {
                    streak = 0;
                    self.metrics.sighted(tick);
                    tick
                }
                Err(e) => {
                    streak = streak.saturating_add(1);
                    self.after_failure(e, streak)
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if leading {
            self.lease.release().await;
        }
        tracing::info!(controller = %self.settings.id, "controller stopped");
    }

    /// Logs a failed check as its policy says and returns the wait before the next one.
    fn after_failure(&self, error: &Error, streak: u32) -> Duration {
        let next = error_policy(error);
        let wait = next.wait(self.settings.tick, streak);
        self.metrics.blind(wait);
        let (error, next_check_s) = (format!("{error:#}"), wait.as_secs_f64());
        match next {
            Next::Report { .. } => {
                tracing::error!(%error, next_check_s, streak, "check failed; an operator must act")
            }
            Next::BackOff { .. } => tracing::warn!(%error, next_check_s, streak, "check skipped; backing off"),
            Next::RetryNow => tracing::warn!(%error, next_check_s, "check skipped; retrying at the next tick"),
        }
        wait
    }

    /// The policy state and decision history a previous controller left in the status.
    async fn resume(&self) -> Memory {
        let mut memory = Memory::default();
        if let Ok(bytes) = self.store.get(&self.bucket, STATUS).await {
            if let Ok(status) = serde_json::from_slice::<FleetStatus>(&bytes) {
                memory.policy = status.policy_state;
                memory.decisions = status.decisions.into();
                tracing::info!(previous = %status.controller, "resuming from the previous controller's status");
            }
        }
        memory
    }

    /// One reconcile: observe, decide, plan, act, record.
    async fn check(&self, memory: &mut Memory) -> Result<(), Error> {
        let observed = self.observer.observe(&self.pools, &mut memory.last_known).await?;
        let mut observation = observed.observation;
        let finished = memory.finished.count(&observed.jobs_done);
        observation.arrivals = memory.arrivals.observe(job::now_ms() as f64 / 1000.0, observation.backlog, finished);
        memory.ceilings.apply(&self.pools, &mut observation, job::now_ms()).await;
        let throttled_now = throttled(&observation);
        memory.hold_back(&mut observation, job::now_ms());
        let decision = decide(self.policy.as_ref(), &self.settings.caps, &observation, &memory.policy);
        let planned = plan(decision.desired, &observation, &self.settings.planner);
        let (plan, mut errors, acted, after) = if self.settings.dry_run || planned.is_empty() {
            (planned, Vec::new(), false, observation.clone())
        } else {
            let acted = self
                .actor
                .act(&self.pools, decision.desired, observation.clone(), &self.settings.planner, planned)
                .await;
            let ok = acted.errors.is_empty();
            (acted.plan, acted.errors, ok, acted.observation)
        };
        errors.splice(0..0, observed.errors);
        // A pool found full while acting has its limits read again next check.
        for pool in after.pools.iter().filter(|p| p.health == PoolHealth::Full) {
            memory.ceilings.forget(&pool.name);
        }
        let held: Vec<String> = memory.backoff.keys().cloned().collect();
        let mut throttled_now = throttled_now;
        throttled_now.extend(throttled(&after).into_iter().filter(|p| !held.contains(p)));
        memory.back_off(&throttled_now, job::now_ms(), self.settings.tick);
        self.metrics.observed(&after, decision.desired);
        let record = DecisionRecord {
            at_ms: job::now_ms(),
            backlog: observation.backlog,
            delayed: observation.delayed,
            decision,
            plan,
            acted,
            errors,
        };
        memory.policy = record.decision.state.clone();
        let changed = memory.last_desired != Some(record.decision.desired);
        memory.last_desired = Some(record.decision.desired);
        let notable = changed || !record.plan.actions.is_empty() || !record.errors.is_empty();
        log(&record, &observation, self.settings.dry_run, notable);
        if notable {
            memory.decisions.push_back(record);
            while memory.decisions.len() > self.settings.decisions_kept {
                memory.decisions.pop_front();
            }
        }
        self.write_status(after, memory).await;
        Ok(())
    }

    /// Writes the fleet as it stands after this check's actions.
    async fn write_status(&self, observation: skyburst_policies::Observation, memory: &Memory) {
        let status = FleetStatus {
            controller: self.settings.id.clone(),
            policy: self.policy.name().to_string(),
            dry_run: self.settings.dry_run,
            updated_at_ms: job::now_ms(),
            observation,
            decisions: memory.decisions.iter().cloned().collect(),
            policy_state: memory.policy.clone(),
        };
        let json = serde_json::to_vec_pretty(&status).expect("the status always serializes");
        if let Err(e @ StoreError::Unavailable { .. }) = self.store.put(&self.bucket, STATUS, json).await {
            tracing::warn!(error = %e, "cannot write the fleet status");
        }
    }
}

/// Pools whose health is `Throttled`.
fn throttled(observation: &skyburst_policies::Observation) -> Vec<String> {
    observation.pools.iter().filter(|p| p.health == PoolHealth::Throttled).map(|p| p.name.clone()).collect()
}

/// `tracing::event!` needs its level as a constant: one expansion per level.
macro_rules! log_at {
    ($level:expr, $record:expr, $observation:expr, $dry_run:expr) => {{
    let (record, observation, dry_run) = ($record, $observation, $dry_run);
    let d = &record.decision;
    let actions = summary(&record.plan.actions);
    tracing::event!(
        $level,
        pools = %pools(observation),
        throughput = ?observation.throughput_per_instance,
        arrivals_per_s = ?observation.arrivals.map(|a| a.rate),
        backlog = record.backlog,
        delayed = record.delayed,
        capacity = d.capacity,
        desired = d.desired,
        scale_out = d.targets.scale_out,
        scale_in = d.targets.scale_in,
        actions = %actions,
        notes = ?record.plan.notes,
        errors = ?record.errors,
        acted = record.acted,
        dry_run,
        reason = %d.reason,
        "decision"
    );
    }};
}

/// The one structured line per decision: at INFO when the controller acts, its target changes or
/// something failed; at DEBUG when nothing happened (every tick, forever, on an idle fleet).
fn log(record: &DecisionRecord, observation: &skyburst_policies::Observation, dry_run: bool, notable: bool) {
    if notable {
        log_at!(tracing::Level::INFO, record, observation, dry_run);
    } else {
        log_at!(tracing::Level::DEBUG, record, observation, dry_run);
    }
}

/// `private 3+1/8 ok, public 0/19 full`: per pool, running + pending / quota and health.
fn pools(o: &skyburst_policies::Observation) -> String {
    use skyburst_policies::InstanceState::{Pending, Running};
    let parts: Vec<String> = o
        .pools
        .iter()
        .map(|p| {
            let count = |s| p.instances.iter().filter(|i| i.state == s).count();
            let health = format!("{:?}", p.health).to_lowercase();
            format!("{} {}+{}/{} {health}", p.name, count(Running), count(Pending), p.quota)
        })
        .collect();
    parts.join(", ")
}

/// `launch local×3, terminate local-ab12-0 (scale_in), drain ...`.
pub fn summary(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::Launch { pool, count } => format!("launch {pool}×{count}"),
            Action::Terminate { id, reason, .. } => format!("terminate {id} ({reason:?})"),
            Action::Drain { id, .. } => format!("drain {id}"),
            Action::Undrain { id, .. } => format!("undrain {id}"),
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyburst_policies::{Observation, PoolView};

    fn observation() -> Observation {
        let pool = |name: &str| PoolView {
            name: name.into(),
            priority: 1,
            quota: 4,
            boot_seconds: 30.0,
            shutdown_seconds: 0.0,
            billing_minimum_seconds: 0.0,
            health: PoolHealth::Ok,
            instances: Vec::new(),
        };
        Observation { pools: vec![pool("private"), pool("public")], ..Observation::default() }
    }

    #[test]
    fn a_throttled_pool_backs_off_doubling_then_recovers() {
        let mut memory = Memory::default();
        let tick = Duration::from_secs(5);
        memory.back_off(&["private".to_string()], 0, tick);
        let mut o = observation();
        memory.hold_back(&mut o, 4_000);
        assert_eq!((o.pools[0].health, o.pools[1].health), (PoolHealth::Throttled, PoolHealth::Ok));
        // Throttled again: twice as long.
        memory.back_off(&["private".to_string()], 4_000, tick);
        assert_eq!(memory.backoff["private"].until_ms, 14_000);
        for _ in 0..10 {
            memory.back_off(&["private".to_string()], 4_000, tick);
        }
        assert_eq!(memory.backoff["private"].until_ms, 4_000 + 5_000 * 32, "at most 32 ticks");
        let mut o = observation();
        memory.hold_back(&mut o, 4_000 + 5_000 * 32);
        assert_eq!(o.pools[0].health, PoolHealth::Ok, "lapsed");
        assert!(memory.backoff.is_empty());
    }
}
