//! The `slo` policy: sizes the fleet from the arrival rate and the measured throughput per
//! instance (the AWS backlog-per-instance recipe's "acceptable backlog per instance" turned
//! around: the instances that keep up with arrivals), plus the instances that clear the backlog
//! within the latency objective; it releases capacity only when it would stay idle for longer
//! than a relaunch costs.
//!
//! Notation: `μ` the measured throughput of one instance (jobs/s), `L` the latency objective,
//! `B` the backlog, `c` the capacity (running and booting), `b` the boot time of the pool the
//! planner would launch in next, `H` the relaunch horizon of the pool a release would come from
//! ([`PoolView::relaunch_seconds`]: its shutdown + boot + billing minimum). The arrivals come
//! from an [`ArrivalMeter`](crate::ArrivalMeter): a short-window rate `λ`, a long-window
//! (sustained) rate `Λ` and the trend `τ` between them.
//!
//! # Scale-out: `max(λ' / μ, B' / (μ × D))`, once the queue cannot absorb the excess
//! - `λ' = Λ + max(τ, 0) × b`: the sustained rate where it will be when an instance launched now
//!   is up. The long window keeps a 30-second burst from reading as a lasting rate (each
//!   public launch pays a 90 s boot and a billing minimum); the trend still brings a real rise
//!   forward by a boot.
//! - `B' = max(0, B + (λ' − c × μ) × b)`: the backlog when that instance is up.
//! - `D = max(L − b, L / 2)`: what is left of the objective once it is up, for clearing `B'`.
//! - Arrivals above the fleet (`λ' > c × μ`) are met only once `B'` passes half an objective of
//!   the fleet's work (`μ × c × L / 2`); until then the queue absorbs them. A rate that wanders a
//!   little above the fleet (the noisy trace) mostly turns back before that, and a launch for it
//!   would be released again: on 16 seeds of the noisy trace this cut the most direction changes
//!   from 25 to 17.
//!
//! A steady load gets `ceil(λ/μ)` instances with an empty queue; a slow ramp is followed a boot
//! ahead; a flash crowd is met by its backlog, and by the public pool when the private one
//! cannot clear it within the objective.
//!
//! # Scale-in: billing-aware, with hysteresis
//! The fleet keeps `max(λ'' × (1 + headroom) / μ, (B + delayed) / (μ × L / 2))`, where
//! `λ'' = λ + max(τ, 0) × H`: the rate the next `H` seconds may bring on the present trend. An
//! instance above that would, on that forecast, stay idle for longer than releasing and
//! relaunching it costs, so releasing it pays (ski rental, with a forecast instead of a fixed
//! wait: a public instance, whose relaunch costs 180 s, is kept through a rise a private one is
//! not). Instances that still have half an objective of queued work each are never released.
//! `headroom` (15 %) is the hysteresis: a load that wanders within it never changes the fleet.
//! The release waits for agreeing checks over a tenth of `H` (the debounce), and keeps the
//! largest level they asked for. With the queue empty and no job arrived for `H`, the targets
//! are zero: the averages decay but never reach zero, and the last instances would idle longer
//! than a relaunch costs.
//!
//! Before any throughput is measured (an empty fleet) it falls back to `ceil(B / fallback_target)`,
//! as backlog-per-instance does. The planner stays in charge of where: private first, the
//! boot-time check before a public burst, idle-only and public-first release.
//!
//! The constants were chosen with `skyburst simulate` on the four mission traces and other
//! seeds of them (docs/simulator.md shows the figures).

use crate::caps::Debounce;
use crate::observation::{Arrivals, Observation, PoolHealth, PoolView};
use crate::policy::{PolicyName, ScalingPolicy, Targets};

/// The share of an objective's work for the fleet that the queue absorbs before arrivals above
/// the fleet are met with launches.
const QUEUE_SLACK: f64 = 0.5;

/// The `slo` policy's settings (`[scaling]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Seconds a job may wait (`latency_objective_seconds`).
    pub latency_objective_s: f64,
    /// Seconds between checks: turns the release wait into checks.
    pub tick_s: f64,
    /// Capacity a release keeps above the forecast arrivals, as a fraction: the hysteresis.
    pub headroom: f64,
    /// The release waits this fraction of the relaunch horizon, in agreeing checks.
    pub hold: f64,
    /// Jobs per instance while no throughput has been measured.
    pub fallback_target: f64,
}

impl Slo {
    /// The settings behind `policy = "slo"`: 15 % headroom, a tenth of the relaunch horizon.
    pub fn new(latency_objective_s: f64, tick_s: f64, fallback_target: f64) -> Self {
        Self { latency_objective_s, tick_s, headroom: 0.15, hold: 0.1, fallback_target }
    }

    fn objective(&self) -> f64 {
        if self.latency_objective_s.is_finite() {
            self.latency_objective_s.max(1.0)
        } else {
            60.0
        }
    }
}

impl ScalingPolicy for Slo {
    fn name(&self) -> &str {
        PolicyName::Slo.as_str()
    }

    fn targets(&self, o: &Observation) -> Targets {
        let Some(mu) = o.throughput_per_instance.filter(|r| r.is_finite() && *r > 0.0) else {
            let per = |jobs: u64| (jobs as f64 / self.fallback_target.max(1.0)).ceil() as u64;
            return Targets { scale_out: per(o.backlog), scale_in: per(o.backlog + o.delayed) };
        };
        let finite = |a: &Arrivals| a.rate.is_finite() && a.sustained.is_finite() && a.trend.is_finite();
        let Arrivals { rate, sustained, trend, quiet_s } =
            o.arrivals.filter(finite).unwrap_or(Arrivals { rate: 0.0, sustained: 0.0, trend: 0.0, quiet_s: 0.0 });
        let horizon = release_horizon_seconds(o);
        if o.backlog + o.delayed == 0 && quiet_s >= horizon.max(self.tick_s) {
            // No job for longer than a relaunch costs: the last instances would idle longer than
            // that too (the averages still decay, and never reach zero on their own).
            return Targets { scale_out: 0, scale_in: 0 };
        }
        let (rate, sustained, rising) = (rate.max(0.0), sustained.max(0.0), trend.max(0.0));
        let objective = self.objective();
        let boot = launch_boot_seconds(o);
        let capacity = f64::from(o.capacity());
        let coming = sustained + rising * boot;
        let backlog_then = (o.backlog as f64 + (coming - capacity * mu) * boot).max(0.0);
        let drain_s = (objective - boot).max(objective / 2.0);
        // Arrivals above the fleet are met at once only when the queue cannot absorb them until
        // a launch is up: a rate that wanders a little above the fleet turns back before the
        // queue holds half an objective of its work, and a launch for it would be released again.
        let absorbed = backlog_then <= QUEUE_SLACK * mu * capacity.max(1.0) * objective;
        let for_rate = if coming / mu > capacity && absorbed { capacity } else { coming / mu };
        let out = for_rate.max(backlog_then / (mu * drain_s));
        let forecast = (rate + rising * horizon) * (1.0 + self.headroom.max(0.0));
        let keep = (forecast / mu).max((o.backlog + o.delayed) as f64 / (mu * objective / 2.0));
        Targets { scale_out: whole(out), scale_in: whole(keep) }
    }

    fn debounce(&self, o: &Observation) -> Debounce {
        let checks = (self.hold.max(0.0) * release_horizon_seconds(o) / self.tick_s.max(0.1)).ceil();
        Debounce::try_new(checks.clamp(1.0, 10_000.0) as u32).expect("1..=10 000 is a valid debounce")
    }
}

/// Instances for a fractional need (a hair above a whole number is float noise, not one more).
fn whole(instances: f64) -> u64 {
    if instances.is_finite() {
        (instances - 1e-9).ceil().max(0.0) as u64
    } else {
        u64::MAX
    }
}

/// The boot time of the pool the planner would launch in next: the first by priority that is
/// healthy and has quota room (the last pool's if none has).
fn launch_boot_seconds(o: &Observation) -> f64 {
    let mut pools: Vec<&PoolView> = o.pools.iter().collect();
    pools.sort_by_key(|p| p.priority);
    let next = pools.iter().find(|p| p.health == PoolHealth::Ok && p.occupied() < p.quota).or(pools.last());
    next.map_or(0.0, |p| p.boot_seconds.max(0.0))
}

/// The relaunch cost of the pool a release would come from: the lowest priority with capacity.
fn release_horizon_seconds(o: &Observation) -> f64 {
    o.pools
        .iter()
        .filter(|p| p.capacity() > 0)
        .max_by_key(|p| p.priority)
        .map_or(0.0, |p| p.relaunch_seconds().max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::{Activity, InstanceState, InstanceView};
    use crate::policy::{decide, PolicyState};
    use crate::Caps;

    /// A pool with `running` idle instances booted long ago.
    fn pool(name: &str, priority: u32, quota: u32, running: u32, boot: f64, billing_minimum: f64) -> PoolView {
        let instances = (0..running)
            .map(|i| InstanceView {
                id: format!("{name}-{i}"),
                state: InstanceState::Running,
                activity: Activity::Idle,
                heartbeat_age_s: Some(1.0),
                age_s: 3600.0,
            })
            .collect();
        PoolView {
            name: name.into(),
            priority,
            quota,
            boot_seconds: boot,
            shutdown_seconds: 10.0,
            billing_minimum_seconds: billing_minimum,
            health: PoolHealth::Ok,
            instances,
        }
    }

    /// 7 jobs/s an instance; `private` 8 × 45 s boot, `public` 19 × 90 s boot with EC2's minute.
    fn observe(backlog: u64, private: u32, public: u32, rate: f64, trend: f64) -> Observation {
        Observation {
            backlog,
            delayed: 0,
            pools: vec![pool("private", 1, 8, private, 45.0, 0.0), pool("public", 2, 19, public, 90.0, 60.0)],
            throughput_per_instance: Some(7.0),
            arrivals: Some(Arrivals { rate, sustained: rate, trend, quiet_s: 0.0 }),
        }
    }

    fn slo() -> Slo {
        Slo::new(60.0, 5.0, 2.0)
    }

    #[test]
    fn a_steady_load_gets_the_instances_that_keep_up_and_keeps_them() {
        // 35 jobs/s at 7 an instance: 5, with an empty queue.
        let t = slo().targets(&observe(3, 5, 0, 35.0, 0.0));
        assert_eq!(t.scale_out, 5);
        // Kept with 15 % headroom (6 would be released only below 35 / 1.15 = 30.4 jobs/s).
        assert_eq!(t.scale_in, 6);
        let d = decide(&slo(), &Caps::default(), &observe(3, 6, 0, 35.0, 0.0), &PolicyState::default());
        assert_eq!(d.desired, 6, "a sixth instance within the headroom stays: {}", d.reason);
    }

    #[test]
    fn a_backlog_is_cleared_within_what_the_objective_leaves_after_a_boot() {
        // 1 000 queued, no arrivals, nothing running: the private boot (45 s) leaves 30 s of
        // the objective (at least half of it): 1 000 / (7 × 30) = 4.8 → 5.
        assert_eq!(slo().targets(&observe(1000, 0, 0, 0.0, 0.0)).scale_out, 5);
        // The same backlog while 3 instances run: they clear all but 1 000 − 3 × 7 × 45 = 55 of
        // it while a launch boots, which one instance clears in time.
        assert_eq!(slo().targets(&observe(1000, 3, 0, 0.0, 0.0)).scale_out, 1);
        // Arrivals above the fleet grow it during the boot: 20 jobs/s with 0 running.
        assert_eq!(slo().targets(&observe(0, 0, 0, 20.0, 0.0)).scale_out, 5, "(20 × 45) / (7 × 30) = 4.3");
    }

    #[test]
    fn a_rising_trend_is_met_a_boot_ahead_once_the_queue_cannot_absorb_it() {
        // 28 jobs/s rising by 0.1 per second is 32.5 in a 45 s boot, above 4 instances: the
        // backlog then is 700 + 4.5 × 45 = 902, past half an objective of their work (840).
        assert_eq!(slo().targets(&observe(700, 4, 0, 28.0, 0.1)).scale_out, 5);
        assert_eq!(slo().targets(&observe(700, 4, 0, 28.0, -0.1)).scale_out, 4, "a falling trend adds nothing");
        // The same rise on a short queue: the queue absorbs it, nothing is launched yet.
        assert_eq!(slo().targets(&observe(0, 4, 0, 28.0, 0.1)).scale_out, 4);
        assert_eq!(slo().targets(&observe(0, 4, 0, 30.0, 0.0)).scale_out, 4, "30 jobs/s on 4 × 7");
    }

    #[test]
    fn release_waits_for_the_pools_relaunch_cost() {
        // Private: 10 + 45 + 0 = 55 s, a tenth of it is 5.5 s: 2 checks of 5 s. Public, which a
        // release comes from first: 10 + 90 + 60 = 160 s: 4 checks.
        assert_eq!(slo().debounce(&observe(0, 3, 0, 0.0, 0.0)).checks(), 2);
        assert_eq!(slo().debounce(&observe(0, 8, 2, 0.0, 0.0)).checks(), 4);
        // A rise forecast over the relaunch horizon keeps a public instance a private one loses:
        // 30 jobs/s rising 0.05/s is 32.75 over 55 s (× 1.15 / 7 = 5.4: 6 kept) and 38 over
        // 160 s (6.2: 7 kept).
        assert_eq!(slo().targets(&observe(0, 7, 0, 30.0, 0.05)).scale_in, 6);
        assert_eq!(slo().targets(&observe(0, 5, 2, 30.0, 0.05)).scale_in, 7);
    }

    #[test]
    fn the_last_instances_go_once_no_job_came_for_longer_than_a_relaunch_costs() {
        let mut o = observe(0, 1, 0, 0.05, 0.0);
        let quiet = |o: &mut Observation, s: f64| o.arrivals.as_mut().unwrap().quiet_s = s;
        // A decaying average of 0.05 jobs/s still asks for an instance ...
        assert_eq!(slo().targets(&o), Targets { scale_out: 1, scale_in: 1 });
        // ... until no job has come for the private pool's relaunch cost (10 + 45 s).
        quiet(&mut o, 54.0);
        assert_eq!(slo().targets(&o).scale_in, 1);
        quiet(&mut o, 55.0);
        assert_eq!(slo().targets(&o), Targets { scale_out: 0, scale_in: 0 });
        // Never with jobs waiting.
        o.backlog = 1;
        assert_eq!(slo().targets(&o).scale_out, 1);
    }

    #[test]
    fn queued_work_keeps_the_instances_working_on_it() {
        // 2 000 queued and no arrivals: each instance has more than half an objective of work.
        assert_eq!(slo().targets(&observe(2000, 8, 2, 0.0, 0.0)).scale_in, 10);
    }

    #[test]
    fn without_a_throughput_it_falls_back_and_bad_rates_count_as_none() {
        let mut o = observe(9, 0, 0, 5.0, 0.0);
        o.throughput_per_instance = None;
        assert_eq!(slo().targets(&o), Targets { scale_out: 5, scale_in: 5 }, "ceil(9 / 2)");
        let mut o = observe(0, 1, 0, f64::NAN, 0.0);
        o.arrivals = Some(Arrivals { rate: f64::NAN, sustained: 1.0, trend: f64::INFINITY, quiet_s: 0.0 });
        assert_eq!(slo().targets(&o), Targets { scale_out: 0, scale_in: 0 });
        let nan = Slo { latency_objective_s: f64::NAN, tick_s: 0.0, ..slo() };
        assert_eq!(nan.targets(&observe(420, 0, 0, 0.0, 0.0)).scale_out, 2, "a 60 s objective: 420 / (7 × 30)");
        assert!(nan.debounce(&observe(0, 1, 0, 0.0, 0.0)).checks() >= 1);
    }
}
