//! The policy simulator behind `skyburst simulate`: replays an arrival trace against a modelled
//! fleet, in simulated time (no sleeping), driven by the same [`decide`] and [`plan`] the
//! controller runs, and reports cost, waits and flapping per policy.
//!
//! # Trace semantics
//! A trace is CSV with the header `t_seconds,count`. Each row's `count` jobs arrive spread evenly
//! over `[t, next row's t)`; the last row's jobs all arrive at its `t`. Rows are sorted by `t`
//! (equal times are allowed: `60,100` followed by `60,0` is a burst of 100 at once).
//!
//! # Model
//! - One event queue keyed by time: job completions, boots and shutdowns, arrivals, then the
//!   controller's check every `tick_s`, in that order at equal times.
//! - Each check builds the [`Observation`] the controller would (backlog = queued + in service),
//!   calls [`decide`] then [`plan`] and applies the actions. A launch beyond a pool's
//!   `cloud_capacity` launches what fits, marks the pool [`PoolHealth::Full`] and re-plans in the
//!   same check, as the controller does on a `Capacity` error.
//! - Job `n`'s service time depends only on the seed and `n`, so every policy serves the very
//!   same workload and the oracle is the same for all of them.
//!
//! # Layout
//! - [`trace`]: the arrival trace ([`Trace`]).
//! - [`service`]: service-time distributions ([`ServiceTime`]).
//! - `agenda`: future events in time order.
//! - `fleet`: the modelled instances and the observation built from them.
//! - `engine`: the event loop ([`simulate`], [`simulate_clairvoyant`]).
//! - `clairvoyant`: the reference plan made from the whole trace (what was possible with the
//!   same pools, boots, caps, billing and objective), and why it never beats the oracle.
//! - [`report`]: per-policy results, the summary table and the CSV files ([`Report`]).
//! - [`plot`]: backlog and instances over time as a PNG.
//! - `invariants` (tests only): the invariants on every shipped trace with every named policy.
//!
//! [`decide`]: skyburst_policies::decide
//! [`plan`]: skyburst_policies::plan
//! [`Observation`]: skyburst_policies::Observation
//! [`PoolHealth::Full`]: skyburst_policies::PoolHealth::Full

mod agenda;
mod clairvoyant;
mod engine;
mod fleet;
#[cfg(test)]
mod invariants;
pub mod plot;
pub mod report;
pub mod service;
pub mod trace;

use std::path::PathBuf;

use skyburst_policies::{Caps, PlannerConfig, ScalingPolicy};

pub use engine::{simulate, simulate_clairvoyant, CLAIRVOYANT};
pub use plot::plot_png;
pub use report::{summary_table, write_csv, write_timeline_csv, Invariants, PoolReport, PoolSample, Report, Sample};
pub use service::ServiceTime;
pub use trace::{Trace, TraceRow};

/// What can go wrong reading a trace, checking a scenario or writing the outputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A trace line that is not `t_seconds,count` with numbers in order.
    #[error("{origin}:{line}: {message}")]
    Trace {
        /// The file, or `trace` for text parsed directly.
        origin: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The trace file could not be read.
    #[error("cannot read the trace {path}: {source}")]
    ReadTrace {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A scenario that cannot be simulated; every problem is listed.
    #[error("the scenario cannot be simulated: {}", problems.join("; "))]
    Scenario {
        /// One line per problem.
        problems: Vec<String>,
    },
    /// An output file (CSV or PNG) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The simulator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything about the modelled system except the arrivals and the policy: built by the caller
/// from the config (`[[pools]]`, `[scaling]`, `[controller]`, `[simulate]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The pools, in any order (the planner sorts them by priority).
    pub pools: Vec<SimPool>,
    /// How long one job holds a worker.
    pub service: ServiceTime,
    /// Seconds between controller checks (`controller.tick_seconds`, default 5).
    pub tick_s: f64,
    /// `scaling.min ..= scaling.max` over all pools.
    pub caps: Caps,
    /// The planner's limits, as the controller builds them from `[scaling]`.
    pub planner: PlannerConfig,
    /// Seed of the service times: the same seed gives the same report.
    pub seed: u64,
}

/// One pool of instances on one modelled cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPool {
    /// The pool's name (`pools.name`).
    pub name: String,
    /// Lower fills first: the private cloud 1, the public cloud 2.
    pub priority: u32,
    /// Most instances in this pool, stopping ones included.
    pub quota: u32,
    /// Seconds from launch to taking the first job.
    pub boot_s: f64,
    /// Seconds from terminate to gone; billed, and counted toward quota and caps meanwhile.
    pub shutdown_s: f64,
    /// Money per instance-hour, billed from launch to gone under `billing`.
    pub price_per_hour: f64,
    /// How the cloud rounds a bill: a minimum and an increment per launch.
    pub billing: Billing,
    /// Jobs one instance runs at once (`pools.workers_per_instance`).
    pub workers_per_instance: u32,
    /// The cloud's real free capacity: launches beyond it fail with `Capacity`. `None` = unlimited.
    pub cloud_capacity: Option<u32>,
}

/// How a cloud bills one instance's life, launch to gone (boot and shutdown included: both
/// are paid and do no work).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Billing {
    /// Every launch is billed at least this long (EC2: 60 s; an owned private cloud: 0).
    pub minimum_s: f64,
    /// Bills are rounded up to a multiple of this (EC2 Linux: 1 s); 0 bills exactly.
    pub increment_s: f64,
}

impl Billing {
    /// EC2's on-demand Linux billing: per second, at least 60 s a launch.
    pub const EC2: Billing = Billing { minimum_s: 60.0, increment_s: 1.0 };

    /// The seconds billed for an instance that lived `lifetime_s`.
    pub fn billed(&self, lifetime_s: f64) -> f64 {
        let rounded = match self.increment_s > 0.0 {
            // A hair under a whole increment is float noise, not another increment.
            true => ((lifetime_s / self.increment_s) - 1e-9).ceil().max(0.0) * self.increment_s,
            false => lifetime_s,
        };
        rounded.max(self.minimum_s)
    }
}

#[cfg(test)]
mod billing_tests {
    use super::Billing;

    #[test]
    fn a_short_launch_costs_the_minimum_and_bills_round_up_to_the_increment() {
        assert_eq!(Billing::EC2.billed(10.0), 60.0, "a launch released within a minute costs a minute");
        assert_eq!(Billing::EC2.billed(60.2), 61.0);
        assert_eq!(Billing::EC2.billed(90.0), 90.0);
        assert_eq!(Billing::EC2.billed(0.0), 60.0);
        let exact = Billing::default();
        assert_eq!(exact.billed(10.25), 10.25);
        let hourly = Billing { minimum_s: 0.0, increment_s: 3600.0 };
        assert_eq!((hourly.billed(1.0), hourly.billed(3600.0), hourly.billed(3601.0)), (3600.0, 3600.0, 7200.0));
    }
}

impl Scenario {
    /// The two-pool hybrid used by the tests and `examples/traces/README.md`: a private pool of 8
    /// (60 s boot, 0.02/h, billed exactly) bursting to a public pool of 19 (40 s boot, 0.10/h,
    /// billed as EC2 bills), at most 19 instances, 1 s lognormal jobs, 2 workers per instance,
    /// checks every 5 s.
    pub fn example() -> Self {
        let pool = |name: &str, priority, quota, boot_s, price_per_hour, billing| SimPool {
            name: name.into(),
            priority,
            quota,
            boot_s,
            shutdown_s: 20.0,
            price_per_hour,
            billing,
            workers_per_instance: 2,
            cloud_capacity: None,
        };
        Self {
            pools: vec![
                pool("private", 1, 8, 60.0, 0.02, Billing::default()),
                pool("public", 2, 19, 40.0, 0.10, Billing::EC2),
            ],
            service: ServiceTime::LogNormal { mean_s: 1.0, sigma: 0.5 },
            tick_s: 5.0,
            caps: Caps::try_new(0, Caps::SEED_MAX).expect("0..=19 are valid caps"),
            planner: PlannerConfig {
                max_instances: Caps::SEED_MAX,
                max_launches_per_tick: 10,
                boot_timeout_s: 600.0,
                heartbeat_timeout_s: 60.0,
                latency_objective_s: None,
            },
            seed: 1,
        }
    }

    /// Every reason this scenario cannot be simulated; empty when it can.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(!self.pools.is_empty(), "at least one pool is needed".into());
        check(self.tick_s.is_finite() && self.tick_s > 0.0, format!("tick_s = {} must be positive", self.tick_s));
        check(self.planner.max_launches_per_tick >= 1, "planner.max_launches_per_tick must be at least 1".into());
        if let Err(problem) = self.service.check() {
            check(false, problem);
        }
        for (i, p) in self.pools.iter().enumerate() {
            check(
                !self.pools[..i].iter().any(|q| q.name == p.name),
                format!("the pool name {:?} is used twice", p.name),
            );
            check(p.workers_per_instance >= 1, format!("pool {}: workers_per_instance must be at least 1", p.name));
            let billing = [("billing.minimum_s", p.billing.minimum_s), ("billing.increment_s", p.billing.increment_s)];
            for (key, v) in [("boot_s", p.boot_s), ("shutdown_s", p.shutdown_s), ("price_per_hour", p.price_per_hour)]
                .into_iter()
                .chain(billing)
            {
                check(v.is_finite() && v >= 0.0, format!("pool {}: {key} = {v} must be zero or more", p.name));
            }
            // A boot longer than the timeout would be terminated as stuck at every check and
            // relaunched forever: the run would never finish a job.
            check(
                p.boot_s < self.planner.boot_timeout_s,
                format!(
                    "pool {}: boot_s = {} must be below planner.boot_timeout_s = {}, or every instance looks stuck",
                    p.name, p.boot_s, self.planner.boot_timeout_s
                ),
            );
        }
        problems
    }

    /// `Ok` if [`problems`](Self::problems) is empty.
    pub fn validate(&self) -> Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Scenario { problems })
        }
    }
}

/// Simulates `trace` once per policy, on one thread each (every run is independent and
/// deterministic), and returns the reports in the order of `policies`.
pub fn simulate_each(
    scenario: &Scenario,
    trace: &Trace,
    policies: &[&(dyn ScalingPolicy + Sync)],
) -> Result<Vec<Report>> {
    scenario.validate()?;
    std::thread::scope(|scope| {
        let runs: Vec<_> = policies
            .iter()
            .map(|&policy| scope.spawn(move || simulate(scenario, trace, policy as &dyn ScalingPolicy)))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid_and_bad_scenarios_list_every_problem() {
        assert_eq!(Scenario::example().problems(), Vec::<String>::new());
        let mut bad = Scenario::example();
        bad.tick_s = 0.0;
        bad.pools[1].name = "private".into();
        bad.pools[0].boot_s = 900.0;
        bad.service = ServiceTime::Exponential { mean_s: -1.0 };
        let problems = bad.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        let message = bad.validate().unwrap_err().to_string();
        assert!(message.contains("tick_s") && message.contains("used twice") && message.contains("stuck"), "{message}");
    }
}
