//! The burst planner: turns a desired instance count into actions per pool. Private first:
//! scale-out fills pools in priority order, scale-in releases the lowest priority first and
//! never stops a busy instance (it is asked to drain). Stuck instances are replaced.

use serde::{Deserialize, Serialize};

use crate::observation::{Activity, InstanceState, InstanceView, Observation, PoolHealth, PoolView};

/// The planner's limits, from `[scaling]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannerConfig {
    /// `scaling.max`: instances over all pools, stopping ones included.
    pub max_instances: u32,
    /// At most this many launches per check, over all pools: a bad policy or observation
    /// cannot start a whole quota at once.
    pub max_launches_per_tick: u32,
    /// A pending instance older than this is stuck.
    pub boot_timeout_s: f64,
    /// A running instance whose worker has not reported for this long is stuck.
    pub heartbeat_timeout_s: f64,
    /// Seconds a job may wait; enables the boot-time check before a public burst.
    pub latency_objective_s: Option<f64>,
}

/// Why an instance is stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckReason {
    /// Pending past `boot_timeout`.
    BootTimeout,
    /// Running without a heartbeat past the limit.
    NoHeartbeat,
    /// The cloud reports an error state.
    ErrorState,
}

/// Why an instance is terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateReason {
    /// Capacity is released and this instance was idle or not yet booted.
    ScaleIn,
    /// It finished its batch after a drain request.
    Drained,
    /// It is stuck; a replacement is planned in the same check.
    Stuck(StuckReason),
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start `count` instances in `pool`.
    Launch {
        /// The pool.
        pool: String,
        /// How many.
        count: u32,
    },
    /// Stop an instance; it is never busy.
    Terminate {
        /// The pool.
        pool: String,
        /// The instance.
        id: String,
        /// Why.
        reason: TerminateReason,
    },
    /// Ask a busy instance to finish its batch and report drained.
    Drain {
        /// The pool.
        pool: String,
        /// The instance.
        id: String,
    },
    /// Take back a drain request: cheaper than booting a new instance.
    Undrain {
        /// The pool.
        pool: String,
        /// The instance.
        id: String,
    },
}

/// The actions of one check, with the notes that explain the ones not taken.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// In order: stuck and drained terminations, undrains, launches, scale-in.
    pub actions: Vec<Action>,
    /// Why demand was not met: caps, quotas, pool health, boot-time waits.
    pub notes: Vec<String>,
}

impl Plan {
    /// Instances launched in `pool`.
    pub fn launches(&self, pool: &str) -> u32 {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Launch { pool: p, count } if p == pool => *count,
                _ => 0,
            })
            .sum()
    }

    /// True if nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Plans the actions that move the fleet toward `desired` instances of capacity.
pub fn plan(desired: u32, o: &Observation, config: &PlannerConfig) -> Plan {
    let mut pools: Vec<PoolState<'_>> = o.pools.iter().map(PoolState::new).collect();
    pools.sort_by_key(|p| p.view.priority);
    let mut plan = Plan::default();
    for pool in &mut pools {
        pool.retire_stuck_and_drained(config, &mut plan);
    }
    let capacity: u32 = pools.iter().map(|p| p.capacity).sum();
    if desired > capacity {
        grow(desired - capacity, &mut pools, o, config, &mut plan);
    } else if desired < capacity {
        shrink(capacity - desired, &mut pools, &mut plan);
    }
    plan
}

/// A pool while a plan is made: its capacity and occupancy after the actions so far.
struct PoolState<'a> {
    view: &'a PoolView,
    /// Instances that will take jobs after the actions so far.
    capacity: u32,
    /// Instances counting toward the quota (terminated ones become stopping and still count).
    occupied: u32,
    /// Instances launched this check.
    launched: u32,
    /// Ids already given an action this check.
    touched: Vec<&'a str>,
}

impl<'a> PoolState<'a> {
    fn new(view: &'a PoolView) -> Self {
        Self { view, capacity: view.capacity(), occupied: view.occupied(), launched: 0, touched: Vec::new() }
    }

    fn room(&self) -> u32 {
        self.view.quota.saturating_sub(self.occupied)
    }

    fn terminate(&mut self, instance: &'a InstanceView, reason: TerminateReason, plan: &mut Plan) {
        if instance.is_capacity() {
            self.capacity -= 1;
        }
        self.touched.push(&instance.id);
        plan.actions.push(Action::Terminate { pool: self.view.name.clone(), id: instance.id.clone(), reason });
    }

    fn retire_stuck_and_drained(&mut self, config: &PlannerConfig, plan: &mut Plan) {
        for instance in &self.view.instances {
            if let Some(why) = stuck(instance, config) {
                self.terminate(instance, TerminateReason::Stuck(why), plan);
            } else if instance.state == InstanceState::Running && instance.activity == Activity::Drained {
                self.terminate(instance, TerminateReason::Drained, plan);
            }
        }
    }

    fn untouched(&self, wanted: impl Fn(&InstanceView) -> bool) -> Vec<&'a InstanceView> {
        let view: &'a PoolView = self.view;
        view.instances.iter().filter(|i| !self.touched.contains(&i.id.as_str()) && wanted(i)).collect()
    }
}

fn stuck(i: &InstanceView, config: &PlannerConfig) -> Option<StuckReason> {
    match i.state {
        InstanceState::Error => Some(StuckReason::ErrorState),
        InstanceState::Pending if i.age_s > config.boot_timeout_s => Some(StuckReason::BootTimeout),
        InstanceState::Running => {
            let silent = match i.heartbeat_age_s {
                Some(age) => age > config.heartbeat_timeout_s,
                // Booted but the worker never reported: give it the boot timeout from launch.
                None => i.age_s > config.boot_timeout_s + config.heartbeat_timeout_s,
            };
            silent.then_some(StuckReason::NoHeartbeat)
        }
        _ => None,
    }
}

/// Adds `gap` instances of capacity: undrain first, then launch in priority order.
fn grow(mut gap: u32, pools: &mut [PoolState<'_>], o: &Observation, config: &PlannerConfig, plan: &mut Plan) {
    for pool in pools.iter_mut() {
        for instance in pool.untouched(|i| i.state == InstanceState::Running && i.activity == Activity::Draining) {
            if gap == 0 {
                return;
            }
            pool.touched.push(&instance.id);
            pool.capacity += 1;
            gap -= 1;
            plan.actions.push(Action::Undrain { pool: pool.view.name.clone(), id: instance.id.clone() });
        }
    }
    let mut launches_left = config.max_launches_per_tick;
    let mut global_room = config.max_instances.saturating_sub(pools.iter().map(|p| p.occupied).sum());
    for i in 0..pools.len() {
        if gap == 0 || launches_left == 0 || global_room == 0 {
            break;
        }
        let pool = &pools[i];
        // Health before room: a Throttled or AuthFailed pool stops the walk even when it is at
        // its quota, or a throttled private cloud would still send the overflow to the public one.
        match pool.view.health {
            PoolHealth::Ok => {}
            PoolHealth::Full | PoolHealth::Unavailable => {
                plan.notes.push(format!("pool {} is {:?}: bursting past it", pool.view.name, pool.view.health));
                continue;
            }
            PoolHealth::Throttled | PoolHealth::AuthFailed => {
                plan.notes.push(format!(
                    "pool {} is {:?}: no launches and no burst past it",
                    pool.view.name, pool.view.health
                ));
                return;
            }
        }
        let room = pool.room().min(global_room).min(launches_left).min(gap);
        if room == 0 {
            continue;
        }
        // Checked for every pool below the first, whether or not the pools above had room this
        // check: a private pool at its quota with instances still booting is the usual case.
        if higher_pools_absorb(&pools[..i], o, config) {
            plan.notes.push(format!(
                "no burst to {}: capacity in higher-priority pools clears the backlog within the latency objective",
                pool.view.name
            ));
            return;
        }
        let pool = &mut pools[i];
        pool.occupied += room;
        pool.capacity += room;
        pool.launched += room;
        gap -= room;
        launches_left -= room;
        global_room -= room;
        plan.actions.push(Action::Launch { pool: pool.view.name.clone(), count: room });
    }
    if gap > 0 {
        plan.notes.push(format!("{gap} instances short: caps, quotas or max_launches_per_tick reached"));
    }
}

/// True if the capacity in `higher` pools (running, undrained, booting, launched this check)
/// clears a non-empty backlog within the latency objective, so a public burst would only cost
/// money: on the simulator's spike trace, public instances launched once the private ones were
/// up arrived 90 s after the last job was done. An empty backlog never blocks (the policy's
/// count stands: `scaling.min` above the private quota, say).
fn higher_pools_absorb(higher: &[PoolState<'_>], o: &Observation, config: &PlannerConfig) -> bool {
    let (Some(objective), Some(rate)) = (config.latency_objective_s, o.throughput_per_instance) else {
        return false;
    };
    let mut jobs = 0.0;
    for pool in higher {
        let boot = pool.view.boot_seconds;
        let listed = pool.view.instances.iter().filter(|i| i.is_capacity() && !pool.touched.contains(&i.id.as_str()));
        let mut counted = 0;
        for i in listed {
            let remaining_boot = match i.state {
                InstanceState::Pending => (boot - i.age_s).max(0.0),
                _ => 0.0,
            };
            jobs += rate * (objective - remaining_boot).max(0.0);
            counted += 1;
        }
        // Undrained this check: running, no boot ahead of them.
        let undrained = pool.capacity.saturating_sub(counted + pool.launched);
        jobs += undrained as f64 * rate * objective;
        // Launched this check: a full boot ahead of them.
        jobs += pool.launched as f64 * rate * (objective - boot).max(0.0);
    }
    o.backlog > 0 && jobs >= o.backlog as f64
}

/// Removes `excess` instances of capacity: lowest priority first; within a pool, not-yet-booted
/// ones, then idle ones are terminated, then busy ones are asked to drain.
fn shrink(mut excess: u32, pools: &mut [PoolState<'_>], plan: &mut Plan) {
    for pool in pools.iter_mut().rev() {
        let by_preference = [
            pool.untouched(|i| i.is_capacity() && i.state == InstanceState::Pending),
            pool.untouched(|i| i.is_capacity() && i.state == InstanceState::Running && i.activity == Activity::Idle),
            pool.untouched(|i| {
                i.is_capacity()
                    && i.state == InstanceState::Running
                    && matches!(i.activity, Activity::Busy | Activity::Unknown)
            }),
        ];
        for (rank, candidates) in by_preference.into_iter().enumerate() {
            for instance in candidates {
                if excess == 0 {
                    return;
                }
                excess -= 1;
                if rank < 2 {
                    pool.terminate(instance, TerminateReason::ScaleIn, plan);
                } else {
                    pool.touched.push(&instance.id);
                    pool.capacity -= 1;
                    plan.actions.push(Action::Drain { pool: pool.view.name.clone(), id: instance.id.clone() });
                }
            }
        }
    }
}
