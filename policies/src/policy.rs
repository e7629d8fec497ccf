//! Scaling policies: how many instances the backlog needs. A policy is a scale-out rule, a
//! scale-in rule and a debounce; [`decide`] applies them with the caps and the state carried
//! from the previous check.

use serde::{Deserialize, Serialize};

use crate::caps::{Caps, Debounce};
use crate::observation::Observation;

/// What a policy's two rules ask for, before caps and debounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// Instances wanted when growing: acted on at once.
    pub scale_out: u64,
    /// Instances wanted when shrinking: acted on only after the debounce agrees.
    pub scale_in: u64,
}

/// A scaling policy: pure rules over one observation.
pub trait ScalingPolicy {
    /// The policy's name in logs and reports.
    fn name(&self) -> &str;
    /// The scale-out and scale-in targets for this observation.
    fn targets(&self, observation: &Observation) -> Targets;
    /// Consecutive checks whose scale-in targets must all be below capacity before acting; it
    /// may depend on the pools (how long a release takes to pay off).
    fn debounce(&self, observation: &Observation) -> Debounce;
}

/// The named policies of DESIGN.md, as config values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// Out to ceil(backlog / 2), in to ceil(backlog / 10) after K checks (the hybrid seed).
    SeedHybrid,
    /// Desired = backlog, at once both ways (the AWS seed).
    QueueMinusRunning,
    /// Desired = ceil(backlog / T), T given or derived from a latency objective.
    BacklogPerInstance,
    /// Arrivals ÷ throughput + what the backlog needs within the latency objective; releases
    /// only capacity that would stay idle longer than a relaunch costs.
    Slo,
}

impl PolicyName {
    /// Every named policy, for reports and `--policy` help.
    pub const ALL: [PolicyName; 4] =
        [PolicyName::SeedHybrid, PolicyName::QueueMinusRunning, PolicyName::BacklogPerInstance, PolicyName::Slo];

    /// The name as written in config files.
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyName::SeedHybrid => "seed-hybrid",
            PolicyName::QueueMinusRunning => "queue-minus-running",
            PolicyName::BacklogPerInstance => "backlog-per-instance",
            PolicyName::Slo => "slo",
        }
    }
}

impl std::str::FromStr for PolicyName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            format!("unknown policy {s:?}: use slo, seed-hybrid, queue-minus-running or backlog-per-instance")
        })
    }
}

// === the named policies ===

/// Out to ceil(backlog / 2) at once; in to ceil(backlog / 10) once K checks agree. The seed's
/// tracker array kept instances that were just started for a queue already draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedHybrid {
    /// K.
    pub debounce: Debounce,
}

impl ScalingPolicy for SeedHybrid {
    fn name(&self) -> &str {
        PolicyName::SeedHybrid.as_str()
    }

    fn targets(&self, o: &Observation) -> Targets {
        Targets { scale_out: o.backlog.div_ceil(2), scale_in: (o.backlog + o.delayed).div_ceil(10) }
    }

    fn debounce(&self, _: &Observation) -> Debounce {
        self.debounce
    }
}

/// One instance per message, both ways at once: the AWS seed's `messages − running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMinusRunning;

impl ScalingPolicy for QueueMinusRunning {
    fn name(&self) -> &str {
        PolicyName::QueueMinusRunning.as_str()
    }

    fn targets(&self, o: &Observation) -> Targets {
        Targets { scale_out: o.backlog, scale_in: o.backlog + o.delayed }
    }

    fn debounce(&self, _: &Observation) -> Debounce {
        Debounce::try_new(1).expect("1 is a valid debounce")
    }
}

/// ceil(backlog / T) instances. T is `target` if given; otherwise the jobs one instance clears
/// within the latency objective at its measured throughput; `fallback_target` until measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BacklogPerInstance {
    /// A fixed T (jobs per instance), overriding the latency objective.
    pub target: Option<f64>,
    /// Seconds a job may wait: T = throughput × objective.
    pub latency_objective_s: Option<f64>,
    /// T while no throughput has been measured.
    pub fallback_target: f64,
    /// K.
    pub debounce: Debounce,
}

impl BacklogPerInstance {
    /// The T in force for this observation (at least 1 job per instance).
    pub fn effective_target(&self, o: &Observation) -> f64 {
        let derived = match (self.latency_objective_s, o.throughput_per_instance) {
            (Some(objective), Some(rate)) if rate > 0.0 => Some(rate * objective),
            _ => None,
        };
        self.target.or(derived).unwrap_or(self.fallback_target).max(1.0)
    }
}

impl ScalingPolicy for BacklogPerInstance {
    fn name(&self) -> &str {
        PolicyName::BacklogPerInstance.as_str()
    }

    fn targets(&self, o: &Observation) -> Targets {
        let t = self.effective_target(o);
        let per = |jobs: u64| (jobs as f64 / t).ceil() as u64;
        Targets { scale_out: per(o.backlog), scale_in: per(o.backlog + o.delayed) }
    }

    fn debounce(&self, _: &Observation) -> Debounce {
        self.debounce
    }
}

// === deciding ===

/// The policy's memory between checks: all of it, so a restarted controller can carry it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Scale-in targets of the latest consecutive checks that were all below capacity (at most K).
    pub scale_in_window: Vec<u32>,
    /// The latest scale-in, until the next scale-out. Growing again needs a larger backlog than
    /// it saw: the seed's rules disagree at a steady backlog (in to b/10, then out to b/2),
    /// which would flap every K checks.
    pub released: Option<Release>,
}

/// A scale-in that was acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The backlog it saw.
    pub backlog: u64,
    /// The instances it kept; lost ones are replaced up to this.
    pub to: u32,
}

/// One check's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Instances wanted in all pools, within the caps.
    pub desired: u32,
    /// Capacity seen (running + pending, not draining).
    pub capacity: u32,
    /// The rules' raw targets.
    pub targets: Targets,
    /// Why, in a few words.
    pub reason: String,
    /// The state to pass to the next check.
    pub state: PolicyState,
}

/// Applies `policy` to one observation: scale out at once; scale in to the largest scale-in
/// target of the last K checks once, in all K, both targets were below capacity; hold otherwise; always within `caps` and
/// the pools' quotas.
pub fn decide(policy: &dyn ScalingPolicy, caps: &Caps, o: &Observation, previous: &PolicyState) -> Decision {
    let quota = o.total_quota();
    let capacity = o.capacity();
    let targets = policy.targets(o);
    let out = caps.clamp(targets.scale_out, quota);
    let inward = caps.clamp(targets.scale_in, quota);
    let k = policy.debounce(o).checks() as usize;
    let mut state = previous.clone();
    let grown_since_release = state.released.is_none_or(|r| o.backlog > r.backlog);
    let (desired, reason) = if out > capacity && (grown_since_release || capacity < caps.min()) {
        state = PolicyState::default();
        (out, format!("scale out: {} wants {out}", policy.name()))
    } else if inward < capacity && out < capacity {
        // Both rules must find capacity to spare: while the scale-out rule still wants all of
        // it (a spike waiting for instances to boot), releasing any would cancel instances
        // started for that very backlog (the simulator's spike trace: seed-hybrid launched 19,
        // then terminated 9 still booting after 3 checks).
        state.scale_in_window.push(inward);
        // Keep the newest K. Not just one removal: a state carried over a restart with a smaller
        // K holds more than K + 1 entries and would never be exactly K long again.
        let excess = state.scale_in_window.len().saturating_sub(k);
        state.scale_in_window.drain(..excess);
        if state.scale_in_window.len() == k {
            let target = *state.scale_in_window.iter().max().expect("k >= 1");
            state.released = Some(Release { backlog: o.backlog, to: target });
            (target, format!("scale in: {k} checks agree on at most {target}"))
        } else {
            (capacity, format!("hold: scale in to {inward} waits ({}/{k} checks)", state.scale_in_window.len()))
        }
    } else {
        state.scale_in_window.clear();
        match state.released {
            Some(r) if r.to > capacity => (r.to, format!("replace: back to the {} kept at the last scale-in", r.to)),
            _ => (capacity, "hold: capacity matches the backlog".to_string()),
        }
    };
    let desired = caps.clamp(desired as u64, quota);
    Decision { desired, capacity, targets, reason, state }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::{Activity, InstanceState, InstanceView, PoolHealth, PoolView};

    fn observe(backlog: u64, running: u32) -> Observation {
        let instances = (0..running)
            .map(|i| InstanceView {
                id: format!("i-{i}"),
                state: InstanceState::Running,
                activity: Activity::Busy,
                heartbeat_age_s: Some(1.0),
                age_s: 600.0,
            })
            .collect();
        let pool = PoolView {
            name: "private".into(),
            priority: 1,
            quota: 100,
            boot_seconds: 30.0,
            shutdown_seconds: 0.0,
            billing_minimum_seconds: 0.0,
            health: PoolHealth::Ok,
            instances,
        };
        Observation { backlog, delayed: 0, pools: vec![pool], throughput_per_instance: None, arrivals: None }
    }

    fn seed(k: u32) -> SeedHybrid {
        SeedHybrid { debounce: Debounce::try_new(k).unwrap() }
    }

    /// Runs `checks` consecutive decisions on the same observation; returns the last one.
    fn decide_n(policy: &dyn ScalingPolicy, caps: Caps, o: &Observation, checks: usize) -> Decision {
        let mut state = PolicyState::default();
        let mut last = None;
        for _ in 0..checks {
            let d = decide(policy, &caps, o, &state);
            state = d.state.clone();
            last = Some(d);
        }
        last.unwrap()
    }

    /// (policy, backlog, running, cap, checks, desired): the seeds' worked examples.
    #[test]
    fn the_seeds_worked_examples() {
        let caps = Caps::default();
        let table: [(&dyn ScalingPolicy, u64, u32, usize, u32); 6] = [
            // queue-minus-running: 14 backlog / 6 running → start 8.
            (&QueueMinusRunning, 14, 6, 1, 14),
            // queue-minus-running: 48 / 17, cap 19 → start 2.
            (&QueueMinusRunning, 48, 17, 1, 19),
            // queue-minus-running: 4 / 16 → terminate 12.
            (&QueueMinusRunning, 4, 16, 1, 4),
            // seed-hybrid: 14 / 6 → start 1 (ceil(14/2) = 7).
            (&seed(3), 14, 6, 1, 7),
            // seed-hybrid: 48 / 17, cap 19 → start 2.
            (&seed(3), 48, 17, 1, 19),
            // seed-hybrid: 4 / 16 → terminate 15 (ceil(4/10) = 1), after K = 3 checks.
            (&seed(3), 4, 16, 3, 1),
        ];
        for (policy, backlog, running, checks, desired) in table {
            let d = decide_n(policy, caps, &observe(backlog, running), checks);
            assert_eq!(d.desired, desired, "{} with {backlog} / {running}: {}", policy.name(), d.reason);
        }
    }

    #[test]
    fn seed_hybrid_scales_in_only_after_k_checks_agree() {
        let caps = Caps::default();
        let o = observe(4, 16);
        let mut state = PolicyState::default();
        for check in 1..=3 {
            let d = decide(&seed(3), &caps, &o, &state);
            let expected = if check < 3 { 16 } else { 1 };
            assert_eq!(d.desired, expected, "check {check}: {}", d.reason);
            state = d.state;
        }
        // A scale-out in between resets the window.
        let d1 = decide(&seed(3), &caps, &o, &PolicyState::default());
        let d2 = decide(&seed(3), &caps, &observe(100, 16), &d1.state);
        assert!(d2.state.scale_in_window.is_empty());
        assert_eq!(decide(&seed(3), &caps, &o, &d2.state).desired, 16);
    }

    #[test]
    fn scale_in_takes_the_largest_target_of_the_window() {
        let caps = Caps::default();
        let mut state = PolicyState::default();
        let mut desired = 0;
        // A queue draining from 30 to 10: targets 3, 2, 1 → acts on 3, not 1.
        for backlog in [30, 20, 10] {
            let d = decide(&seed(3), &caps, &observe(backlog, 16), &state);
            desired = d.desired;
            state = d.state;
        }
        assert_eq!(desired, 3);
    }

    #[test]
    fn min_and_quota_bound_every_answer() {
        let caps = Caps::try_new(2, 19).unwrap();
        assert_eq!(decide_n(&QueueMinusRunning, caps, &observe(0, 5), 1).desired, 2);
        let mut o = observe(1000, 0);
        o.pools[0].quota = 7;
        assert_eq!(decide_n(&QueueMinusRunning, caps, &o, 1).desired, 7);
    }

    #[test]
    fn backlog_per_instance_uses_target_then_objective_then_fallback() {
        let k = Debounce::try_new(1).unwrap();
        let fixed = BacklogPerInstance {
            target: Some(5.0),
            latency_objective_s: Some(10.0),
            fallback_target: 2.0,
            debounce: k,
        };
        let mut o = observe(23, 0);
        assert_eq!(fixed.targets(&o).scale_out, 5);
        let by_objective = BacklogPerInstance { target: None, ..fixed };
        assert_eq!(by_objective.targets(&o).scale_out, 12, "fallback T = 2 before a measurement");
        o.throughput_per_instance = Some(0.5);
        assert_eq!(by_objective.targets(&o).scale_out, 5, "T = 0.5 jobs/s × 10 s = 5");
    }

    #[test]
    fn a_steady_backlog_does_not_flap_after_a_scale_in() {
        let caps = Caps::default();
        let o = observe(20, 2);
        // In to ceil(20/10) = 2 was just done at backlog 20; out would want 10.
        let state = PolicyState { scale_in_window: vec![], released: Some(Release { backlog: 20, to: 2 }) };
        assert_eq!(decide(&seed(3), &caps, &o, &state).desired, 2);
        // An instance is lost: replaced up to the level kept, not out to 10.
        assert_eq!(decide(&seed(3), &caps, &observe(20, 1), &state).desired, 2);
        // The queue grows: out again.
        assert_eq!(decide(&seed(3), &caps, &observe(21, 2), &state).desired, 11);
    }

    #[test]
    fn a_smaller_k_after_a_restart_still_scales_in() {
        // Carried from a controller that ran with K = 5; this one runs with K = 2.
        let state = PolicyState { scale_in_window: vec![1, 1, 1, 1], released: None };
        let d = decide(&seed(2), &Caps::default(), &observe(4, 16), &state);
        assert_eq!(d.desired, 1, "{}", d.reason);
        assert_eq!(d.state.scale_in_window, vec![1, 1]);
    }

    #[test]
    fn instances_booting_for_a_spike_are_not_released() {
        // 100 images at once, 19 instances (the cap) booting: out still wants 19, so the
        // scale-in target ceil(100/10) = 10 is never acted on, however many checks pass.
        let d = decide_n(&seed(3), Caps::default(), &observe(100, 19), 10);
        assert_eq!(d.desired, 19, "{}", d.reason);
        assert!(d.state.scale_in_window.is_empty());
    }

    #[test]
    fn names_round_trip() {
        for name in PolicyName::ALL {
            assert_eq!(name.as_str().parse::<PolicyName>(), Ok(name));
        }
        assert!("fastest".parse::<PolicyName>().unwrap_err().contains("seed-hybrid"));
    }
}
