//! The event loop: arrivals from the trace, job completions, boots, shutdowns and the
//! controller's checks, in simulated time. Each check runs the policies crate's `decide` and
//! `plan` on the observation the controller would see, and applies the plan.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use skyburst_policies::{
    decide, plan, Action, ArrivalMeter, Observation, Plan, PlannerConfig, PolicyState, PoolHealth, ScalingPolicy,
    TerminateReason,
};

use super::agenda::{Agenda, Kind, ARRIVAL_RANK};
use super::fleet::{Fleet, Job};
use super::report::{Invariants, PoolReport, PoolSample, Report, Sample};
use super::trace::{Arrivals, Trace};
use super::{Result, Scenario};

/// Simulates `trace` under `policy` until every job is done and the fleet has settled at the
/// policy's level (plan empty, no scale-in pending, nothing booting or stopping), or until the
/// last arrival + every job served one at a time + a day, whichever comes first.
pub fn simulate(scenario: &Scenario, trace: &Trace, policy: &dyn ScalingPolicy) -> Result<Report> {
    scenario.validate()?;
    let mut run = Run::new(scenario, trace, Driver::Policy(policy));
    let (end, settled) = run.run(trace);
    Ok(run.report(end, settled))
}

/// The clairvoyant reference ([`super::clairvoyant`]): the plan made from the whole trace,
/// played through this same engine, reported as the policy `clairvoyant`.
pub fn simulate_clairvoyant(scenario: &Scenario, trace: &Trace) -> Result<Report> {
    scenario.validate()?;
    let plan = super::clairvoyant::plan(scenario, trace);
    let mut run = Run::new(scenario, trace, Driver::Plan(plan));
    let (end, settled) = run.run(trace);
    Ok(run.report(end, settled))
}

/// What decides the fleet's size at each check.
enum Driver<'a> {
    /// A scaling policy through `decide`, as the controller runs it.
    Policy(&'a dyn ScalingPolicy),
    /// Instances wanted at each check, made in advance from the whole trace.
    Plan(Vec<u32>),
}

impl Driver<'_> {
    fn name(&self) -> &str {
        match self {
            Driver::Policy(policy) => policy.name(),
            Driver::Plan(_) => CLAIRVOYANT,
        }
    }

    /// Instances wanted at this check (within the caps and quotas), the policy's state for the
    /// next one, and the planner to place them with.
    fn decide(
        &self,
        scenario: &Scenario,
        o: &Observation,
        state: &PolicyState,
        now: f64,
    ) -> (u32, PolicyState, PlannerConfig) {
        match self {
            Driver::Policy(policy) => {
                let decision = decide(*policy, &scenario.caps, o, state);
                (decision.desired, decision.state, scenario.planner)
            }
            Driver::Plan(plan) => {
                let wanted = plan.get((now / scenario.tick_s).round() as usize).copied().unwrap_or(0);
                // The plan is fluid; jobs are not: one instance stays while any job waits.
                let wanted = wanted.max(u32::from(o.backlog > 0));
                let desired = scenario.caps.clamp(u64::from(wanted), o.total_quota());
                (desired, PolicyState::default(), super::clairvoyant::planner(scenario))
            }
        }
    }
}

/// The clairvoyant reference's name in reports.
pub const CLAIRVOYANT: &str = "clairvoyant";

/// Longest wait the percentiles resolve, 2^42 µs ≈ 50 days (about 0.5 MB of counters); longer
/// waits count as this in p50/p95, while `wait_max_s` stays exact.
const WAIT_BOUND_US: u64 = 1 << 42;

/// One run's state.
struct Run<'a> {
    scenario: &'a Scenario,
    driver: Driver<'a>,
    fleet: Fleet<'a>,
    agenda: Agenda,
    arrivals: Arrivals<'a>,
    /// Jobs waiting for a worker, oldest first (FIFO, as SQS standard queues roughly are).
    queue: VecDeque<Job>,
    /// The policy's memory between checks.
    state: PolicyState,
    /// The arrival rate, measured as the controller measures it (from the backlog and the jobs
    /// finished), so policies see the same estimate, lag included.
    meter: ArrivalMeter,
    /// Waits in microseconds, 3 significant digits (p95 within 0.1 %), up to `WAIT_BOUND_US`.
    waits: Histogram<u64>,
    wait_max_s: f64,
    jobs: u64,
    jobs_arrived: u64,
    jobs_done: u64,
    /// Service seconds of every arrived job: the oracle's work.
    work_s: f64,
    peak_backlog: u64,
    /// Sign of the latest check that changed capacity: +1 out, −1 in.
    last_direction: i8,
    direction_changes: u32,
    invariants: Invariants,
    timeline: Vec<Sample>,
    events: u64,
}

/// What applying one plan did.
#[derive(Debug, Default)]
struct Applied {
    /// Instances launched.
    launched: u32,
    /// Launches and undrains: capacity added.
    adds: u32,
    /// Scale-in terminations and drains: capacity removed.
    removes: u32,
    /// A launch hit a pool's cloud capacity; the rest of the plan was not applied.
    refused: bool,
}

impl<'a> Run<'a> {
    fn new(scenario: &'a Scenario, trace: &'a Trace, driver: Driver<'a>) -> Self {
        Self {
            scenario,
            driver,
            fleet: Fleet::new(scenario),
            agenda: Agenda::default(),
            arrivals: trace.arrivals(),
            queue: VecDeque::new(),
            state: PolicyState::default(),
            meter: ArrivalMeter::default(),
            waits: Histogram::new_with_bounds(1, WAIT_BOUND_US, 3).expect("1 µs ..= 50 days at 3 digits is valid"),
            wait_max_s: 0.0,
            jobs: trace.jobs(),
            jobs_arrived: 0,
            jobs_done: 0,
            work_s: 0.0,
            peak_backlog: 0,
            last_direction: 0,
            direction_changes: 0,
            invariants: Invariants { max_occupied_per_pool: vec![0; scenario.pools.len()], ..Invariants::default() },
            timeline: Vec::new(),
            events: 0,
        }
    }

    /// Runs to the end; returns the end time and whether the fleet settled before the bound.
    fn run(&mut self, trace: &Trace) -> (f64, bool) {
        let tick_s = self.scenario.tick_s;
        let bound = trace.duration_s() + trace.jobs() as f64 * self.scenario.service.mean_s() + 86_400.0;
        let mut ticks: u64 = 0;
        self.agenda.at(0.0, Kind::Tick);
        loop {
            self.events += 1;
            let top = self.agenda.peek();
            if let Some(t) = self.arrivals.peek() {
                if top.is_none_or(|(top_t, rank)| t < top_t || (t == top_t && rank > ARRIVAL_RANK)) {
                    self.arrive(t);
                    continue;
                }
            }
            let (now, kind) = self.agenda.pop().expect("a check is always scheduled");
            match kind {
                Kind::JobDone { instance, job } => {
                    if let Some(started) = self.fleet.finish(instance, job, now) {
                        self.record_wait(started.start - started.job.arrival);
                        self.dispatch(now);
                    }
                }
                Kind::Booted(instance) => {
                    if self.fleet.booted(instance) {
                        self.dispatch(now);
                    }
                }
                Kind::Gone(instance) => self.fleet.gone(instance, now),
                Kind::Tick => {
                    let settled = self.tick(now);
                    if settled || now >= bound {
                        return (now, settled);
                    }
                    ticks += 1;
                    // Multiplying, not adding, keeps a day of 5 s checks free of drift.
                    self.agenda.at(ticks as f64 * tick_s, Kind::Tick);
                }
            }
        }
    }

    fn arrive(&mut self, t: f64) {
        self.arrivals.advance();
        let id = self.jobs_arrived;
        self.jobs_arrived += 1;
        let service = self.scenario.service.for_job(self.scenario.seed, id);
        self.work_s += service;
        self.queue.push_back(Job { id, arrival: t, service });
        self.peak_backlog = self.peak_backlog.max(self.backlog());
        self.dispatch(t);
    }

    fn record_wait(&mut self, wait_s: f64) {
        self.jobs_done += 1;
        self.wait_max_s = self.wait_max_s.max(wait_s);
        self.waits.saturating_record((wait_s * 1e6).round() as u64);
    }

    /// Free workers take queued jobs, oldest first.
    fn dispatch(&mut self, now: f64) {
        while !self.queue.is_empty() {
            let Some(instance) = self.fleet.next_free() else { return };
            let job = self.queue.pop_front().expect("not empty");
            self.fleet.start(instance, job, now, &mut self.agenda);
        }
    }

    fn backlog(&self) -> u64 {
        self.queue.len() as u64 + self.fleet.in_service()
    }

    /// One controller check: observe, decide, plan, act (re-planning on a refused launch).
    /// Returns true once the run is over and the fleet has settled.
    fn tick(&mut self, now: f64) -> bool {
        let backlog = self.backlog();
        let mut health = vec![PoolHealth::Ok; self.scenario.pools.len()];
        let arrivals = self.meter.observe(now, backlog, self.jobs_done);
        let mut observation = self.fleet.observe(backlog, arrivals, &health, now);
        let (desired, state, mut planner) = self.driver.decide(self.scenario, &observation, &self.state, now);
        let (mut adds, mut removes, mut acted) = (0, 0, false);
        // Each refusal marks one more pool Full, so there are at most as many re-plans as pools.
        for _ in 0..=self.scenario.pools.len() {
            let plan = plan(desired, &observation, &planner);
            acted |= !plan.is_empty();
            let applied = self.apply(&plan, &mut health, now);
            adds += applied.adds;
            removes += applied.removes;
            if !applied.refused {
                break;
            }
            // The launches already made this check count against its limit.
            planner.max_launches_per_tick = planner.max_launches_per_tick.saturating_sub(applied.launched);
            if planner.max_launches_per_tick == 0 {
                break;
            }
            observation = self.fleet.observe(backlog, arrivals, &health, now);
        }
        self.state = state;
        let direction = match (adds > 0, removes > 0) {
            (true, false) => 1,
            (false, true) => -1,
            _ => 0,
        };
        if direction != 0 {
            if self.last_direction != 0 && direction != self.last_direction {
                self.direction_changes += 1;
            }
            self.last_direction = direction;
        }
        self.dispatch(now);
        let pools = (0..self.scenario.pools.len())
            .map(|p| PoolSample { capacity: self.fleet.capacity(p), occupied: self.fleet.occupied(p) })
            .collect();
        self.timeline.push(Sample { t_s: now, backlog: self.backlog(), pools });
        self.arrivals.peek().is_none()
            && self.backlog() == 0
            && !acted
            && self.state.scale_in_window.is_empty()
            && self.fleet.transient() == 0
    }

    fn apply(&mut self, plan: &Plan, health: &mut [PoolHealth], now: f64) -> Applied {
        let mut applied = Applied::default();
        for action in &plan.actions {
            match action {
                Action::Launch { pool, count } => {
                    let p = self.pool_index(pool);
                    self.check_private_first(p, health);
                    let spec = &self.scenario.pools[p];
                    let fits =
                        spec.cloud_capacity.map_or(*count, |c| c.saturating_sub(self.fleet.occupied(p)).min(*count));
                    self.fleet.launch(p, fits, now, &mut self.agenda);
                    applied.launched += fits;
                    applied.adds += u32::from(fits > 0);
                    let per_pool = &mut self.invariants.max_occupied_per_pool[p];
                    *per_pool = (*per_pool).max(self.fleet.occupied(p));
                    self.invariants.max_occupied = self.invariants.max_occupied.max(self.fleet.occupied_total());
                    if fits < *count {
                        // The cloud said `Capacity`: the controller marks the pool full and
                        // re-plans the rest in the same check.
                        health[p] = PoolHealth::Full;
                        self.invariants.capacity_refusals += 1;
                        applied.refused = true;
                        return applied;
                    }
                }
                Action::Terminate { id, reason, .. } => {
                    // Already gone counts as success, as in the controller.
                    let Some(index) = self.fleet.index_of(id) else { continue };
                    let aborted = self.fleet.terminate(index, now, &mut self.agenda);
                    self.invariants.requeued_jobs += aborted.len() as u64;
                    for job in aborted.into_iter().rev() {
                        self.queue.push_front(job);
                    }
                    applied.removes += u32::from(*reason == TerminateReason::ScaleIn);
                }
                Action::Drain { id, .. } => {
                    if let Some(index) = self.fleet.index_of(id) {
                        self.fleet.drain(index);
                        applied.removes += 1;
                    }
                }
                Action::Undrain { id, .. } => {
                    if let Some(index) = self.fleet.index_of(id) {
                        self.fleet.undrain(index);
                        applied.adds += 1;
                    }
                }
            }
        }
        applied
    }

    fn pool_index(&self, name: &str) -> usize {
        self.scenario.pools.iter().position(|p| p.name == name).expect("the planner names only observed pools")
    }

    /// Counts a launch into pool `p` while a higher-priority pool had quota room and was Ok.
    fn check_private_first(&mut self, p: usize, health: &[PoolHealth]) {
        let priority = self.scenario.pools[p].priority;
        let skipped = self.scenario.pools.iter().enumerate().any(|(q, spec)| {
            spec.priority < priority && health[q] == PoolHealth::Ok && self.fleet.occupied(q) < spec.quota
        });
        self.invariants.private_full_violations += u64::from(skipped);
    }

    fn report(mut self, end: f64, settled: bool) -> Report {
        self.fleet.close(end);
        let scenario = self.scenario;
        let pools: Vec<PoolReport> = scenario
            .pools
            .iter()
            .zip(&self.fleet.tallies)
            .map(|(spec, tally)| PoolReport {
                name: spec.name.clone(),
                priority: spec.priority,
                instance_seconds: tally.instance_seconds,
                billed_seconds: tally.billed_seconds,
                cost: tally.billed_seconds / 3600.0 * spec.price_per_hour,
                service_seconds: tally.service_seconds,
                launches: tally.launches,
            })
            .collect();
        let top = scenario.pools.iter().map(|p| p.priority).min().expect("validated: a pool");
        let served: f64 = pools.iter().map(|p| p.service_seconds).sum();
        let public: f64 = pools.iter().filter(|p| p.priority > top).map(|p| p.service_seconds).sum();
        // The oracle runs every job on the densest instance (most slots) with zero boot time and
        // no cap; its money uses the cheapest price per slot.
        let slots = scenario.pools.iter().map(|p| f64::from(p.workers_per_instance)).fold(1.0, f64::max);
        let oracle_instance_seconds = self.work_s / slots;
        let per_slot_hour = scenario
            .pools
            .iter()
            .map(|p| p.price_per_hour / f64::from(p.workers_per_instance))
            .fold(f64::MAX, f64::min);
        let instance_seconds: f64 = pools.iter().map(|p| p.instance_seconds).sum();
        let billed_seconds: f64 = pools.iter().map(|p| p.billed_seconds).sum();
        let quantile = |q: f64| if self.jobs_done == 0 { 0.0 } else { self.waits.value_at_quantile(q) as f64 / 1e6 };
        Report {
            policy: self.driver.name().to_string(),
            jobs: self.jobs,
            jobs_done: self.jobs_done,
            instance_seconds,
            cost: pools.iter().map(|p| p.cost).sum(),
            oracle_instance_seconds,
            oracle_cost: self.work_s / 3600.0 * per_slot_hour,
            cost_ratio: match (oracle_instance_seconds > 0.0, billed_seconds > 0.0) {
                (true, _) => billed_seconds / oracle_instance_seconds,
                // No work: free if nothing ran, infinitely dear if warm instances did.
                (false, false) => 1.0,
                (false, true) => f64::INFINITY,
            },
            wait_p50_s: quantile(0.50),
            wait_p95_s: quantile(0.95),
            wait_max_s: self.wait_max_s,
            peak_backlog: self.peak_backlog,
            direction_changes: self.direction_changes,
            public_share: if served > 0.0 { public / served } else { 0.0 },
            end_s: end,
            settled,
            events: self.events,
            pools,
            timeline: self.timeline,
            invariants: self.invariants,
        }
    }
}
