//! Control records in the output bucket: worker heartbeats, drain requests, the controller's
//! lease and its fleet status. Workers, the controller and the front end share them through
//! the store, so no part needs an address for another.

use serde::{Deserialize, Serialize};
use skyburst_policies::{Activity, Decision, Observation, Plan, PolicyState};

/// Prefix of the heartbeat records, one per worker instance.
pub const HEARTBEATS: &str = "control/heartbeats/";
/// Prefix of the drain requests, one per instance asked to drain.
pub const DRAINS: &str = "control/drain/";
/// The controller's lease: only its holder acts.
pub const LEASE: &str = "control/lease.json";
/// The fleet and the latest decisions, served at `/api/fleet`.
pub const STATUS: &str = "control/status.json";

/// Key of an instance's heartbeat.
pub fn heartbeat_key(instance: &str) -> String {
    format!("{HEARTBEATS}{instance}")
}

/// Key of an instance's drain request.
pub fn drain_key(instance: &str) -> String {
    format!("{DRAINS}{instance}")
}

/// The instance id in a heartbeat or drain key (`None` for other keys).
pub fn instance_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|id| !id.is_empty())
}

/// What a worker reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker's instance id.
    pub instance: String,
    /// Its pool.
    pub pool: String,
    /// Idle, busy or drained (the worker never reports `unknown` or `draining`: the controller
    /// knows which instances it asked to drain).
    pub activity: Activity,
    /// The job in hand, if busy.
    pub job: Option<String>,
    /// When this record was written, ms since the Unix epoch.
    pub at_ms: i64,
    /// Jobs finished since the worker started.
    pub jobs_done: u64,
    /// Milliseconds spent on jobs since the worker started: `jobs_done / busy_ms` is its
    /// throughput while busy, which the policies use.
    pub busy_ms: u64,
}

impl Heartbeat {
    /// Jobs per second while busy, once a few jobs have been timed.
    pub fn throughput(&self) -> Option<f64> {
        // Fewer than 3 jobs include the first forward pass's warm-up (~2× a steady one).
        (self.jobs_done >= 3 && self.busy_ms > 0).then(|| self.jobs_done as f64 * 1000.0 / self.busy_ms as f64)
    }
}

/// A drain request: finish the batch in hand, take no more, report drained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// When it was asked, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The controller's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The controller holding it (`<hostname>-<pid>`).
    pub holder: String,
    /// When it lapses unless renewed, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// One check, as logged and kept in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// What was seen.
    pub backlog: u64,
    /// Delayed messages.
    pub delayed: u64,
    /// The policy's answer.
    pub decision: Decision,
    /// What the planner chose (including re-plans after a full pool).
    pub plan: Plan,
    /// Whether the actions were carried out (false under `--dry-run` or when one failed).
    pub acted: bool,
    /// Provider or store errors met in this check.
    pub errors: Vec<String>,
}

/// `control/status.json`: the fleet and the latest decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The controller that wrote it.
    pub controller: String,
    /// The policy in force.
    pub policy: String,
    /// True under `--dry-run`.
    pub dry_run: bool,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// The latest observation with its actions applied (launched instances pending, terminated
    /// ones stopping): every pool and instance.
    pub observation: Observation,
    /// The latest decisions that acted or changed the target, oldest first.
    pub decisions: Vec<DecisionRecord>,
    /// The policy's state, so a restarted controller carries on its debounce.
    pub policy_state: PolicyState,
}
