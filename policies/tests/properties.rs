//! Property tests: random pools, caps, fleets, backlogs, arrival rates and the named policies, through
//! `decide` and `plan`, checked one check at a time and over 50 checks of a tiny fleet model.
//!
//! The model: a Launch adds Pending instances, which run (Idle or Busy) the next tick; a
//! Terminate makes an instance Stopping for one tick, then it is gone; a Drain makes it
//! Draining, then Drained the next tick; an Undrain makes it Busy again. Running instances send
//! a heartbeat every tick; Error instances stay in error until terminated.

use std::collections::HashSet;

use proptest::prelude::*;
use skyburst_policies::{
    decide, plan, Action, Activity, Arrivals, BacklogPerInstance, Caps, Debounce, InstanceState, InstanceView,
    Observation, Plan, PlannerConfig, PolicyState, PoolHealth, PoolView, QueueMinusRunning, ScalingPolicy, SeedHybrid,
    Slo, TerminateReason,
};

/// Seconds between checks in the model.
const TICK_S: f64 = 10.0;

// === generators ===

fn state() -> impl Strategy<Value = InstanceState> {
    prop_oneof![
        3 => Just(InstanceState::Running),
        1 => Just(InstanceState::Pending),
        1 => Just(InstanceState::Stopping),
        1 => Just(InstanceState::Error),
    ]
}

fn activity() -> impl Strategy<Value = Activity> {
    prop_oneof![
        Just(Activity::Unknown),
        Just(Activity::Idle),
        Just(Activity::Busy),
        Just(Activity::Draining),
        Just(Activity::Drained),
    ]
}

fn health() -> impl Strategy<Value = PoolHealth> {
    prop_oneof![
        6 => Just(PoolHealth::Ok),
        1 => Just(PoolHealth::Full),
        1 => Just(PoolHealth::Unavailable),
        1 => Just(PoolHealth::Throttled),
        1 => Just(PoolHealth::AuthFailed),
    ]
}

/// Instances without ids (given per pool): state, activity, heartbeat age, age since launch.
fn instances() -> impl Strategy<Value = Vec<InstanceView>> {
    let one = (state(), activity(), proptest::option::of(0.0..120.0f64), 0.0..700.0f64).prop_map(
        |(state, activity, heartbeat_age_s, age_s)| InstanceView {
            id: String::new(),
            state,
            activity,
            heartbeat_age_s,
            age_s,
        },
    );
    proptest::collection::vec(one, 0..=12)
}

/// 1–3 pools, priorities 1–3 (ties allowed), quotas 0–10, instance ids unique over all pools.
fn pools() -> impl Strategy<Value = Vec<PoolView>> {
    let one = (1u32..=3, 0u32..=10, (10.0..120.0f64, 0.0..60.0f64, 0.0..120.0f64), health(), instances());
    proptest::collection::vec(one, 1..=3).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(
                |(
                    n,
                    (priority, quota, (boot_seconds, shutdown_seconds, billing_minimum_seconds), health, mut instances),
                )| {
                    for (i, instance) in instances.iter_mut().enumerate() {
                        instance.id = format!("p{n}-{i}");
                    }
                    PoolView {
                        name: format!("pool{n}"),
                        priority,
                        quota,
                        boot_seconds,
                        shutdown_seconds,
                        billing_minimum_seconds,
                        health,
                        instances,
                    }
                },
            )
            .collect()
    })
}

/// Arrival rates up to 20 jobs/s, trends of ±0.5 jobs/s per second, up to 5 quiet minutes.
fn arrivals() -> impl Strategy<Value = Arrivals> {
    (0.0..20.0f64, 0.0..20.0f64, -0.5..0.5f64, 0.0..300.0f64).prop_map(|(rate, sustained, trend, quiet_s)| Arrivals {
        rate,
        sustained,
        trend,
        quiet_s,
    })
}

fn caps() -> impl Strategy<Value = Caps> {
    (1u32..=25).prop_flat_map(|max| (0..=max).prop_map(move |min| Caps::try_new(min, max).unwrap()))
}

/// One of the named policies: 0 seed-hybrid, 1 queue-minus-running, 2 backlog-per-instance, 3 slo.
#[derive(Debug, Clone, Copy)]
struct PolicyChoice {
    which: u8,
    k: u32,
    target: Option<f64>,
}

impl PolicyChoice {
    fn build(self) -> Box<dyn ScalingPolicy> {
        let debounce = Debounce::try_new(self.k).unwrap();
        match self.which {
            0 => Box::new(SeedHybrid { debounce }),
            1 => Box::new(QueueMinusRunning),
            3 => Box::new(Slo::new(30.0, TICK_S, 3.0)),
            _ => Box::new(BacklogPerInstance {
                target: self.target,
                latency_objective_s: Some(30.0),
                fallback_target: 3.0,
                debounce,
            }),
        }
    }
}

fn policy() -> impl Strategy<Value = PolicyChoice> {
    (0u8..4, 1u32..=4, proptest::option::of(1.0..8.0f64)).prop_map(|(which, k, target)| PolicyChoice {
        which,
        k,
        target,
    })
}

#[derive(Debug, Clone)]
struct World {
    observation: Observation,
    caps: Caps,
    config: PlannerConfig,
    policy: PolicyChoice,
    /// Picks Idle or Busy for instances that start running in the model.
    seed: u64,
}

fn world() -> impl Strategy<Value = World> {
    let limits = (0u32..=10, proptest::option::of(10.0..120.0f64));
    let load = (0u64..=60, 0u64..=10, proptest::option::of(0.05..2.0f64), proptest::option::of(arrivals()));
    (pools(), caps(), limits, load, policy(), any::<u64>()).prop_map(
        |(
            pools,
            caps,
            (max_launches_per_tick, latency_objective_s),
            (backlog, delayed, rate, arrivals),
            policy,
            seed,
        )| World {
            observation: Observation { backlog, delayed, pools, throughput_per_instance: rate, arrivals },
            caps,
            config: PlannerConfig {
                max_instances: caps.max(),
                max_launches_per_tick,
                boot_timeout_s: 300.0,
                heartbeat_timeout_s: 60.0,
                latency_objective_s,
            },
            policy,
            seed,
        },
    )
}

// === the fleet model ===

fn find<'a>(pools: &'a [PoolView], pool: &str, id: &str) -> Option<&'a InstanceView> {
    pools.iter().find(|p| p.name == pool)?.instances.iter().find(|i| i.id == id)
}

/// The fleet right after the plan's actions, before time passes; also the ids they touched.
fn apply(pools: &[PoolView], p: &Plan, next_id: &mut u32) -> (Vec<PoolView>, HashSet<String>) {
    let mut after = pools.to_vec();
    let mut touched = HashSet::new();
    for action in &p.actions {
        let (pool, id) = match action {
            Action::Launch { pool, count } => {
                let target = after.iter_mut().find(|q| &q.name == pool).expect("launch in a listed pool");
                for _ in 0..*count {
                    *next_id += 1;
                    let id = format!("new-{next_id}");
                    touched.insert(id.clone());
                    target.instances.push(InstanceView {
                        id,
                        state: InstanceState::Pending,
                        activity: Activity::Unknown,
                        heartbeat_age_s: None,
                        age_s: 0.0,
                    });
                }
                continue;
            }
            Action::Terminate { pool, id, .. } | Action::Drain { pool, id } | Action::Undrain { pool, id } => {
                (pool, id)
            }
        };
        assert!(touched.insert(id.clone()), "{id} given two actions in one plan");
        let target = after.iter_mut().find(|q| &q.name == pool).expect("action in a listed pool");
        let instance = target.instances.iter_mut().find(|i| &i.id == id).expect("action on a listed instance");
        match action {
            Action::Terminate { .. } => instance.state = InstanceState::Stopping,
            Action::Drain { .. } => instance.activity = Activity::Draining,
            Action::Undrain { .. } => instance.activity = Activity::Busy,
            Action::Launch { .. } => unreachable!(),
        }
    }
    (after, touched)
}

/// One tick later: instances the plan did not touch move on; every instance ages.
fn advance(pools: &mut [PoolView], touched: &HashSet<String>, seed: u64) {
    let runs_as = |id: &str| {
        let h = id.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        if h % 3 == 0 {
            Activity::Idle
        } else {
            Activity::Busy
        }
    };
    for pool in pools {
        pool.instances.retain(|i| touched.contains(&i.id) || i.state != InstanceState::Stopping);
        for i in &mut pool.instances {
            i.age_s += TICK_S;
            if touched.contains(&i.id) {
                continue;
            }
            match (i.state, i.activity) {
                (InstanceState::Pending, _) => i.state = InstanceState::Running,
                (InstanceState::Running, Activity::Draining) => i.activity = Activity::Drained,
                _ => {}
            }
            if i.state == InstanceState::Running {
                i.heartbeat_age_s = Some(1.0);
                if matches!(i.activity, Activity::Unknown) {
                    i.activity = runs_as(&i.id);
                }
            }
        }
    }
}

// === the properties of one check ===

/// (a)–(d) for one plan; returns the direction of its capacity change: `Some(true)` up (launch,
/// undrain; stuck replacements aside), `Some(false)` down (scale-in terminate, drain), `None`.
fn check(o: &Observation, caps: &Caps, config: &PlannerConfig, desired: Option<u32>, p: &Plan) -> Option<bool> {
    // (a) desired within caps and quota.
    if let Some(desired) = desired {
        let quota = o.total_quota();
        assert!(desired <= caps.max() && desired <= quota, "desired {desired} above max or quota {quota}");
        assert!(desired >= caps.min().min(quota), "desired {desired} below min(min, quota)");
    }
    let (after, _) = apply(&o.pools, p, &mut 0);
    let launched: u32 = o.pools.iter().map(|q| p.launches(&q.name)).sum();
    assert!(launched <= config.max_launches_per_tick, "{launched} launches over the per-tick limit");
    // (a) occupancy after the plan: never pushed above max or a quota.
    let before = o.occupied();
    assert!(launched <= config.max_instances.saturating_sub(before), "{before} occupied + {launched} launched > max");
    for (b, a) in o.pools.iter().zip(&after) {
        assert!(a.occupied() <= b.quota.max(b.occupied()), "pool {} over quota after the plan", a.name);
    }
    for pool in &o.pools {
        // (b) launch only into Ok pools, below no Throttled/AuthFailed pool, after filling the
        // Ok pools above.
        if p.launches(&pool.name) > 0 {
            assert_eq!(pool.health, PoolHealth::Ok, "launch into {} while {:?}", pool.name, pool.health);
            for (h, ha) in o.pools.iter().zip(&after).filter(|(h, _)| h.priority < pool.priority) {
                let blocks = matches!(h.health, PoolHealth::Throttled | PoolHealth::AuthFailed);
                assert!(!blocks, "launch into {} below {} which is {:?}", pool.name, h.name, h.health);
                let full = ha.occupied() >= h.quota || h.health != PoolHealth::Ok;
                assert!(full, "launch into {} while {} has room", pool.name, h.name);
            }
        }
    }
    let mut down = 0;
    let mut stuck_capacity = 0;
    for action in &p.actions {
        let (pool, id) = match action {
            Action::Terminate { pool, id, .. } | Action::Drain { pool, id } | Action::Undrain { pool, id } => {
                (pool, id)
            }
            Action::Launch { .. } => continue,
        };
        let i = find(&o.pools, pool, id).expect("listed");
        let running_busy = i.state == InstanceState::Running
            && matches!(i.activity, Activity::Busy | Activity::Draining | Activity::Unknown);
        let scale_in = match action {
            // (d) busy instances are only drained, unless stuck.
            Action::Terminate { reason: TerminateReason::Stuck(_), .. } => {
                stuck_capacity += i.is_capacity() as u32;
                false
            }
            Action::Terminate { reason, .. } => {
                assert!(!running_busy, "terminated {id} ({:?}, {:?}) for {reason:?}", i.state, i.activity);
                *reason == TerminateReason::ScaleIn
            }
            Action::Drain { .. } => true,
            _ => false,
        };
        if scale_in {
            down += 1;
            // (c) scale-in only once every lower-priority pool has no capacity left.
            let priority = o.pools.iter().find(|q| &q.name == pool).unwrap().priority;
            for (l, la) in o.pools.iter().zip(&after).filter(|(l, _)| l.priority > priority) {
                assert_eq!(la.capacity(), 0, "scale-in in {pool} while {} keeps capacity", l.name);
            }
        }
    }
    let undrained = p.actions.iter().filter(|a| matches!(a, Action::Undrain { .. })).count() as u32;
    if down > 0 {
        Some(false)
    } else if launched + undrained > stuck_capacity {
        Some(true)
    } else {
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a)–(d) on one check, with the policy's desired count and with an arbitrary one.
    #[test]
    fn one_check_keeps_the_rules(w in world(), raw_desired in 0u32..=30) {
        let policy = w.policy.build();
        let d = decide(policy.as_ref(), &w.caps, &w.observation, &PolicyState::default());
        let p = plan(d.desired, &w.observation, &w.config);
        check(&w.observation, &w.caps, &w.config, Some(d.desired), &p);
        let p = plan(raw_desired, &w.observation, &w.config);
        check(&w.observation, &w.caps, &w.config, None, &p);
    }

    /// (e) Over 50 checks of a constant backlog, capacity changes direction at most once
    /// (stuck replacements aside), and (a)–(d) hold on every check.
    #[test]
    fn a_constant_backlog_changes_direction_at_most_once(w in world()) {
        let policy = w.policy.build();
        let mut o = w.observation.clone();
        let mut state = PolicyState::default();
        let mut next_id = 0;
        let mut directions = Vec::new();
        for tick in 0..50 {
            let d = decide(policy.as_ref(), &w.caps, &o, &state);
            let p = plan(d.desired, &o, &w.config);
            if let Some(up) = check(&o, &w.caps, &w.config, Some(d.desired), &p) {
                directions.push((tick, up, d.reason.clone()));
            }
            state = d.state;
            let (mut after, touched) = apply(&o.pools, &p, &mut next_id);
            advance(&mut after, &touched, w.seed);
            o.pools = after;
        }
        let changes = directions.windows(2).filter(|w| w[0].1 != w[1].1).count();
        prop_assert!(changes <= 1, "{} with {:?}: {directions:?}", policy.name(), w.policy);
    }
}
