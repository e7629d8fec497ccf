//! `GET /api/fleet`: the fleet as the controller last recorded it, in a versioned wire format of
//! its own. The controller's `control/status.json` holds the policies crate's internal types
//! (and the policy's debounce state); this module turns them into the documented shape the
//! dashboard and scripts read, so the policies can change without breaking a client.
//!
//! Version 1 keeps the field names the first, unversioned answer had; a change to a field's
//! meaning or type is a new version.

use serde::Serialize;
use skyburst_policies::{self as policies, Action, StuckReason, TerminateReason};
use utoipa::ToSchema;

use crate::control::{DecisionRecord, FleetStatus};

/// The wire format's version: the `version` field of every answer.
pub const VERSION: u32 = 1;

/// `GET /api/fleet`: the pools, their instances and the latest decisions.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FleetView {
    /// The wire format's version (1).
    pub version: u32,
    /// The controller that wrote the status (`controller-<hostname>-<pid>`).
    pub controller: String,
    /// The scaling policy in force (`seed-hybrid`, `queue-minus-running`, ...).
    pub policy: String,
    /// True when the controller only decides and logs (`--dry-run`).
    pub dry_run: bool,
    /// When the status was written, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// What the latest check saw, with its actions applied.
    pub observation: ObservationView,
    /// The latest decisions that acted, changed the target or met an error, oldest first.
    pub decisions: Vec<DecisionView>,
}

/// One check's view of the queue and the pools.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ObservationView {
    /// Visible plus in-flight messages on the request queue.
    pub backlog: u64,
    /// Messages sent with a delay that has not passed.
    pub delayed: u64,
    /// Pools in priority order.
    pub pools: Vec<PoolView>,
    /// Median jobs per second per busy instance, from the heartbeats; absent before any.
    pub throughput_per_instance: Option<f64>,
    /// Jobs per second arriving, as the controller measures them (the backlog's change plus
    /// the jobs finished); absent until two checks have been seen.
    pub arrivals: Option<ArrivalsView>,
}

/// The arrival rate at one check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct ArrivalsView {
    /// Jobs per second, averaged over the last 30 s or so.
    pub per_second: f64,
    /// Jobs per second, averaged over the last 2 minutes or so.
    pub sustained_per_second: f64,
    /// How fast the rate changes, jobs per second per second.
    pub trend: f64,
    /// Seconds since a check last saw a job arrive.
    pub quiet_seconds: f64,
}

/// One pool of worker instances on one cloud.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PoolView {
    /// The pool's name (`[[pools]] name`).
    pub name: String,
    /// Lower fills first: private before public.
    pub priority: u32,
    /// The most instances this pool may hold.
    pub quota: u32,
    /// Seconds an instance takes to boot.
    pub boot_seconds: f64,
    /// Whether launches may go here now.
    pub health: PoolHealth,
    /// Its instances, stopping ones included.
    pub instances: Vec<InstanceView>,
}

/// Whether a pool takes launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolHealth {
    /// Launches may go here.
    Ok,
    /// No capacity or quota left this check: demand goes to the next pool.
    Full,
    /// The cloud cannot be reached: demand goes to the next pool.
    Unavailable,
    /// The cloud asked us to slow down: no launches here, no burst past it.
    Throttled,
    /// Credentials were refused: no launches here until an operator acts.
    AuthFailed,
}

/// One worker instance.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct InstanceView {
    /// The cloud's id (EC2 instance id, Nova server id, `local-…`).
    pub id: String,
    /// Where it is in its life.
    pub state: InstanceState,
    /// What its worker last reported.
    pub activity: Activity,
    /// Seconds since its last heartbeat; absent before the first.
    pub heartbeat_age_s: Option<f64>,
    /// Seconds since it was launched.
    pub age_s: f64,
}

/// An instance's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Launched, not yet booted.
    Pending,
    /// Booted.
    Running,
    /// Being shut down.
    Stopping,
    /// Failed; it is terminated and replaced.
    Error,
}

/// What an instance's worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// No heartbeat yet, or none readable.
    Unknown,
    /// Waiting for jobs.
    Idle,
    /// Running a batch.
    Busy,
    /// Asked to drain, finishing its batch.
    Draining,
    /// Finished its batch after a drain request.
    Drained,
}

/// One check that acted, changed the target or met an error.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DecisionView {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// The backlog seen.
    pub backlog: u64,
    /// Delayed messages seen.
    pub delayed: u64,
    /// The policy's answer.
    pub decision: DecisionSummary,
    /// What the planner chose.
    pub plan: PlanView,
    /// Whether the actions were carried out (false under `--dry-run` or when one failed).
    pub acted: bool,
    /// Provider or store errors met in this check.
    pub errors: Vec<String>,
}

/// How many instances the policy wants, and why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DecisionSummary {
    /// Instances wanted in all pools, within the caps.
    pub desired: u32,
    /// Capacity seen (running and pending, not draining).
    pub capacity: u32,
    /// The policy's raw targets.
    pub targets: TargetsView,
    /// Why, in a few words.
    pub reason: String,
}

/// A policy's raw targets before debounce and caps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct TargetsView {
    /// Instances wanted when growing.
    pub scale_out: u64,
    /// Instances wanted when shrinking.
    pub scale_in: u64,
}

/// The actions of one check and the notes on demand it could not meet.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlanView {
    /// In order: stuck and drained terminations, undrains, launches, scale-in.
    pub actions: Vec<ActionView>,
    /// Why demand was not met: caps, quotas, pool health, boot-time waits.
    pub notes: Vec<String>,
}

/// One action, tagged by `action`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionView {
    /// Start `count` instances in `pool`.
    Launch {
        /// The pool.
        pool: String,
        /// How many.
        count: u32,
    },
    /// Stop an idle, drained or stuck instance.
    Terminate {
        /// The pool.
        pool: String,
        /// The instance.
        id: String,
        /// Why.
        reason: TerminateReasonView,
    },
    /// Ask a busy instance to finish its batch.
    Drain {
        /// The pool.
        pool: String,
        /// The instance.
        id: String,
    },
    /// Take back a drain request.
    Undrain {
        /// The pool.
        pool: String,
        /// The instance.
        id: String,
    },
}

/// Why an instance is terminated: `"scale_in"`, `"drained"` or `{"stuck": "<why>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TerminateReasonView {
    /// Capacity is released and the instance was idle or not yet booted.
    ScaleIn,
    /// It finished its batch after a drain request.
    Drained,
    /// It is stuck; a replacement is planned in the same check.
    Stuck(Stuck),
}

/// Why an instance counts as stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stuck {
    /// Pending past the boot timeout.
    BootTimeout,
    /// Running without a heartbeat past the limit.
    NoHeartbeat,
    /// The cloud reports an error state.
    ErrorState,
}

// === from the controller's status ===

impl From<FleetStatus> for FleetView {
    fn from(s: FleetStatus) -> Self {
        Self {
            version: VERSION,
            controller: s.controller,
            policy: s.policy,
            dry_run: s.dry_run,
            updated_at_ms: s.updated_at_ms,
            observation: s.observation.into(),
            decisions: s.decisions.into_iter().map(DecisionView::from).collect(),
        }
    }
}

impl From<policies::Observation> for ObservationView {
    fn from(o: policies::Observation) -> Self {
        Self {
            backlog: o.backlog,
            delayed: o.delayed,
            pools: o.pools.into_iter().map(PoolView::from).collect(),
            throughput_per_instance: o.throughput_per_instance,
            arrivals: o.arrivals.map(|a| ArrivalsView {
                per_second: a.rate,
                sustained_per_second: a.sustained,
                trend: a.trend,
                quiet_seconds: a.quiet_s,
            }),
        }
    }
}

impl From<policies::PoolView> for PoolView {
    fn from(p: policies::PoolView) -> Self {
        let health = match p.health {
            policies::PoolHealth::Ok => PoolHealth::Ok,
            policies::PoolHealth::Full => PoolHealth::Full,
            policies::PoolHealth::Unavailable => PoolHealth::Unavailable,
            policies::PoolHealth::Throttled => PoolHealth::Throttled,
            policies::PoolHealth::AuthFailed => PoolHealth::AuthFailed,
        };
        Self {
            name: p.name,
            priority: p.priority,
            quota: p.quota,
            boot_seconds: p.boot_seconds,
            health,
            instances: p.instances.into_iter().map(InstanceView::from).collect(),
        }
    }
}

impl From<policies::InstanceView> for InstanceView {
    fn from(i: policies::InstanceView) -> Self {
        let state = match i.state {
            policies::InstanceState::Pending => InstanceState::Pending,
            policies::InstanceState::Running => InstanceState::Running,
            policies::InstanceState::Stopping => InstanceState::Stopping,
            policies::InstanceState::Error => InstanceState::Error,
        };
        let activity = match i.activity {
            policies::Activity::Unknown => Activity::Unknown,
            policies::Activity::Idle => Activity::Idle,
            policies::Activity::Busy => Activity::Busy,
            policies::Activity::Draining => Activity::Draining,
            policies::Activity::Drained => Activity::Drained,
        };
        Self { id: i.id, state, activity, heartbeat_age_s: i.heartbeat_age_s, age_s: i.age_s }
    }
}

impl From<DecisionRecord> for DecisionView {
    fn from(r: DecisionRecord) -> Self {
        let d = r.decision;
        Self {
            at_ms: r.at_ms,
            backlog: r.backlog,
            delayed: r.delayed,
            decision: DecisionSummary {
                desired: d.desired,
                capacity: d.capacity,
                targets: TargetsView { scale_out: d.targets.scale_out, scale_in: d.targets.scale_in },
                reason: d.reason,
            },
            plan: PlanView { actions: r.plan.actions.into_iter().map(ActionView::from).collect(), notes: r.plan.notes },
            acted: r.acted,
            errors: r.errors,
        }
    }
}

impl From<Action> for ActionView {
    fn from(a: Action) -> Self {
        match a {
            Action::Launch { pool, count } => Self::Launch { pool, count },
            Action::Terminate { pool, id, reason } => Self::Terminate { pool, id, reason: reason.into() },
            Action::Drain { pool, id } => Self::Drain { pool, id },
            Action::Undrain { pool, id } => Self::Undrain { pool, id },
        }
    }
}

impl From<TerminateReason> for TerminateReasonView {
    fn from(r: TerminateReason) -> Self {
        match r {
            TerminateReason::ScaleIn => Self::ScaleIn,
            TerminateReason::Drained => Self::Drained,
            TerminateReason::Stuck(StuckReason::BootTimeout) => Self::Stuck(Stuck::BootTimeout),
            TerminateReason::Stuck(StuckReason::NoHeartbeat) => Self::Stuck(Stuck::NoHeartbeat),
            TerminateReason::Stuck(StuckReason::ErrorState) => Self::Stuck(Stuck::ErrorState),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyburst_policies::{Decision, Plan, PolicyState, Targets};

    fn status() -> FleetStatus {
        let instance = policies::InstanceView {
            id: "local-1".into(),
            state: policies::InstanceState::Running,
            activity: policies::Activity::Busy,
            heartbeat_age_s: Some(1.5),
            age_s: 30.0,
        };
        let pool = policies::PoolView {
            name: "local".into(),
            priority: 1,
            quota: 4,
            boot_seconds: 2.0,
            shutdown_seconds: 0.0,
            billing_minimum_seconds: 0.0,
            health: policies::PoolHealth::AuthFailed,
            instances: vec![instance],
        };
        let plan = Plan {
            actions: vec![
                Action::Launch { pool: "local".into(), count: 2 },
                Action::Terminate {
                    pool: "local".into(),
                    id: "local-0".into(),
                    reason: TerminateReason::Stuck(StuckReason::ErrorState),
                },
            ],
            notes: vec!["capped".into()],
        };
        let decision = Decision {
            desired: 3,
            capacity: 1,
            targets: Targets { scale_out: 5, scale_in: 1 },
            reason: "scale out".into(),
            state: PolicyState::default(),
        };
        FleetStatus {
            controller: "controller-a-1".into(),
            policy: "seed-hybrid".into(),
            dry_run: false,
            updated_at_ms: 7,
            observation: policies::Observation {
                backlog: 9,
                delayed: 1,
                pools: vec![pool],
                throughput_per_instance: None,
                arrivals: None,
            },
            decisions: vec![DecisionRecord {
                at_ms: 6,
                backlog: 9,
                delayed: 1,
                decision,
                plan,
                acted: true,
                errors: vec![],
            }],
            policy_state: PolicyState::default(),
        }
    }

    #[test]
    fn version_one_has_the_documented_shape_and_no_policy_state() {
        let json = serde_json::to_value(FleetView::from(status())).unwrap();
        assert_eq!(json["version"], 1);
        assert!(json.get("policy_state").is_none(), "the debounce state is the controller's own");
        let pool = &json["observation"]["pools"][0];
        assert_eq!(pool["health"], "auth_failed");
        assert_eq!(pool["instances"][0]["state"], "running");
        assert_eq!(pool["instances"][0]["activity"], "busy");
        let d = &json["decisions"][0];
        assert_eq!(d["decision"]["desired"], 3);
        assert_eq!(d["decision"]["targets"]["scale_out"], 5);
        assert_eq!(d["plan"]["actions"][0], serde_json::json!({"action": "launch", "pool": "local", "count": 2}));
        assert_eq!(d["plan"]["actions"][1]["reason"], serde_json::json!({"stuck": "error_state"}));
    }

    #[test]
    fn every_wire_enum_value_matches_the_internal_spelling() {
        // Version 1 kept the first answer's spellings: each internal value serializes as its
        // wire counterpart does.
        let same = |internal: serde_json::Value, wire: serde_json::Value| assert_eq!(internal, wire);
        for health in [
            policies::PoolHealth::Ok,
            policies::PoolHealth::Full,
            policies::PoolHealth::Unavailable,
            policies::PoolHealth::Throttled,
            policies::PoolHealth::AuthFailed,
        ] {
            let mut pool = status().observation.pools.remove(0);
            pool.health = health;
            let wire = PoolView::from(pool.clone());
            same(serde_json::to_value(health).unwrap(), serde_json::to_value(wire.health).unwrap());
        }
        for reason in [
            TerminateReason::ScaleIn,
            TerminateReason::Drained,
            TerminateReason::Stuck(StuckReason::BootTimeout),
            TerminateReason::Stuck(StuckReason::NoHeartbeat),
        ] {
            same(
                serde_json::to_value(reason).unwrap(),
                serde_json::to_value(TerminateReasonView::from(reason)).unwrap(),
            );
        }
    }
}
