//! The modelled fleet: every instance's lifecycle (booting, running, stopping, gone) and job
//! slots, the per-pool bills, and the `Observation` the controller would build from it.

use std::collections::BTreeSet;

use skyburst_policies::{Activity, Arrivals, InstanceState, InstanceView, Observation, PoolHealth, PoolView};

use super::agenda::{Agenda, Kind};
use super::Scenario;

/// A job: its number in the trace, when it arrived and how long it holds a worker slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Job {
    /// Arrival order, from 0; also picks the service time.
    pub id: u64,
    /// Seconds from the start of the run.
    pub arrival: f64,
    /// Seconds of work.
    pub service: f64,
}

/// A job in service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Started {
    /// The job.
    pub job: Job,
    /// When its worker took it.
    pub start: f64,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Launched, not yet taking jobs (`Pending` to the policies).
    Booting,
    /// Taking jobs unless draining.
    Running,
    /// Terminated; still billed and counted toward quota and caps until gone.
    Stopping,
    /// Off the bill.
    Gone,
}

/// One modelled instance.
#[derive(Debug, Clone)]
struct Instance {
    /// `<pool>-<index>`, the index into `Fleet::instances`.
    id: String,
    /// Index into `Scenario::pools`.
    pool: usize,
    phase: Phase,
    /// Asked to drain: takes no new jobs.
    draining: bool,
    /// Billing starts here.
    launched_at: f64,
    /// At most the pool's `workers_per_instance`.
    jobs: Vec<Started>,
}

/// One pool's bill and high-water marks.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PoolTally {
    /// Launch to gone, summed over its instances.
    pub instance_seconds: f64,
    /// What the cloud bills for them: each life rounded by the pool's `billing`.
    pub billed_seconds: f64,
    /// Seconds of completed jobs served here.
    pub service_seconds: f64,
    /// Instances launched.
    pub launches: u64,
    /// Most instances at once, stopping ones included.
    pub max_occupied: u32,
}

/// Every instance of one run.
#[derive(Debug)]
pub(super) struct Fleet<'s> {
    scenario: &'s Scenario,
    /// Every instance ever launched, never removed: its index is its id. A day of flapping
    /// launches a few thousand at most.
    instances: Vec<Instance>,
    /// Per pool, the instances not yet gone, in launch order (the order a provider lists them).
    live: Vec<Vec<usize>>,
    /// (pool priority, instance) of each running, non-draining instance with a free slot. The
    /// first takes the next job: a free private worker is always preferred, the cheap case a
    /// real queue only approaches (its long polls pick among idle workers at random).
    free: BTreeSet<(u32, usize)>,
    /// Per pool, in scenario order.
    pub tallies: Vec<PoolTally>,
    /// Jobs in service over all instances.
    in_service: u64,
    /// Instances booting or stopping: the fleet has not settled while any remain.
    transient: u32,
}

impl<'s> Fleet<'s> {
    pub fn new(scenario: &'s Scenario) -> Self {
        let pools = scenario.pools.len();
        Self {
            scenario,
            instances: Vec::new(),
            live: vec![Vec::new(); pools],
            free: BTreeSet::new(),
            tallies: vec![PoolTally::default(); pools],
            in_service: 0,
            transient: 0,
        }
    }

    /// Instances in `pool` counting toward its quota (stopping ones included).
    pub fn occupied(&self, pool: usize) -> u32 {
        self.live[pool].len() as u32
    }

    /// Instances in all pools counting toward the caps.
    pub fn occupied_total(&self) -> u32 {
        self.live.iter().map(|l| l.len() as u32).sum()
    }

    /// Instances in `pool` that will take jobs: booting or running, not draining.
    pub fn capacity(&self, pool: usize) -> u32 {
        self.live[pool].iter().filter(|&&i| self.is_capacity(&self.instances[i])).count() as u32
    }

    pub fn in_service(&self) -> u64 {
        self.in_service
    }

    pub fn transient(&self) -> u32 {
        self.transient
    }

    /// The instance an action names, if it is still live.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        let index: usize = id.rsplit_once('-')?.1.parse().ok()?;
        self.instances.get(index).filter(|i| i.id == id && i.phase != Phase::Gone).map(|_| index)
    }

    fn is_capacity(&self, i: &Instance) -> bool {
        matches!(i.phase, Phase::Booting | Phase::Running) && !i.draining
    }

    /// Starts `count` instances in `pool`; each takes jobs after the pool's boot time.
    pub fn launch(&mut self, pool: usize, count: u32, now: f64, agenda: &mut Agenda) {
        let spec = &self.scenario.pools[pool];
        for _ in 0..count {
            let index = self.instances.len();
            self.instances.push(Instance {
                id: format!("{}-{index}", spec.name),
                pool,
                phase: Phase::Booting,
                draining: false,
                launched_at: now,
                jobs: Vec::with_capacity(spec.workers_per_instance as usize),
            });
            self.live[pool].push(index);
            self.transient += 1;
            agenda.at(now + spec.boot_s, Kind::Booted(index));
        }
        let tally = &mut self.tallies[pool];
        tally.launches += u64::from(count);
        tally.max_occupied = tally.max_occupied.max(self.live[pool].len() as u32);
    }

    /// A boot finished: true if the instance now takes jobs (false if it was terminated first).
    pub fn booted(&mut self, index: usize) -> bool {
        let instance = &mut self.instances[index];
        if instance.phase != Phase::Booting {
            return false;
        }
        instance.phase = Phase::Running;
        self.transient -= 1;
        self.refresh_slot(index);
        true
    }

    /// Terminates an instance; returns the jobs it was running, which go back to the queue as a
    /// real queue's visibility timeout would return them (the planner never stops a busy one).
    pub fn terminate(&mut self, index: usize, now: f64, agenda: &mut Agenda) -> Vec<Job> {
        let instance = &mut self.instances[index];
        match instance.phase {
            Phase::Booting => {}
            Phase::Running => self.transient += 1,
            Phase::Stopping | Phase::Gone => return Vec::new(),
        }
        instance.phase = Phase::Stopping;
        let aborted: Vec<Job> = instance.jobs.drain(..).map(|s| s.job).collect();
        self.in_service -= aborted.len() as u64;
        agenda.at(now + self.scenario.pools[instance.pool].shutdown_s, Kind::Gone(index));
        self.refresh_slot(index);
        aborted
    }

    /// Stops giving the instance new jobs; it reports drained when its jobs are done.
    pub fn drain(&mut self, index: usize) {
        self.instances[index].draining = true;
        self.refresh_slot(index);
    }

    /// Takes a drain request back.
    pub fn undrain(&mut self, index: usize) {
        self.instances[index].draining = false;
        self.refresh_slot(index);
    }

    /// A shutdown finished: the instance leaves the bill, the quota and the caps.
    pub fn gone(&mut self, index: usize, now: f64) {
        let instance = &mut self.instances[index];
        if instance.phase != Phase::Stopping {
            return;
        }
        instance.phase = Phase::Gone;
        self.transient -= 1;
        let (pool, lifetime) = (instance.pool, now - instance.launched_at);
        self.bill(pool, lifetime);
        self.live[pool].retain(|&i| i != index);
    }

    /// A job's service ended: the job, or `None` if it was requeued when its instance stopped.
    pub fn finish(&mut self, index: usize, job: u64, now: f64) -> Option<Started> {
        let instance = &mut self.instances[index];
        let slot = instance.jobs.iter().position(|s| s.job.id == job)?;
        let started = instance.jobs.swap_remove(slot);
        self.in_service -= 1;
        self.tallies[instance.pool].service_seconds += now - started.start;
        self.refresh_slot(index);
        Some(started)
    }

    /// The instance that takes the next job, if any has a free slot.
    pub fn next_free(&self) -> Option<usize> {
        self.free.first().map(|&(_, index)| index)
    }

    /// Gives `job` to the instance `next_free` returned.
    pub fn start(&mut self, index: usize, job: Job, now: f64, agenda: &mut Agenda) {
        self.instances[index].jobs.push(Started { job, start: now });
        self.in_service += 1;
        agenda.at(now + job.service, Kind::JobDone { instance: index, job: job.id });
        self.refresh_slot(index);
    }

    /// Bills every instance still live up to `now`, at the end of a run.
    pub fn close(&mut self, now: f64) {
        for pool in 0..self.live.len() {
            let lifetimes: Vec<f64> = self.live[pool].iter().map(|&i| now - self.instances[i].launched_at).collect();
            for lifetime in lifetimes {
                self.bill(pool, lifetime);
            }
        }
    }

    /// Adds one instance's life to its pool's tally and bill.
    fn bill(&mut self, pool: usize, lifetime: f64) {
        let tally = &mut self.tallies[pool];
        tally.instance_seconds += lifetime;
        tally.billed_seconds += self.scenario.pools[pool].billing.billed(lifetime);
    }

    /// Keeps `free` in step with the instance's phase, drain flag and jobs.
    fn refresh_slot(&mut self, index: usize) {
        let instance = &self.instances[index];
        let spec = &self.scenario.pools[instance.pool];
        let key = (spec.priority, index);
        let takes_jobs = instance.phase == Phase::Running
            && !instance.draining
            && instance.jobs.len() < spec.workers_per_instance as usize;
        if takes_jobs {
            self.free.insert(key);
        } else {
            self.free.remove(&key);
        }
    }

    /// What the controller would observe now: `health` per pool (scenario order), every
    /// heartbeat fresh, throughput = the fleet's average slots per instance ÷ the mean service
    /// time (the controller measures it from heartbeats), and the arrivals the run's meter measured.
    pub fn observe(&self, backlog: u64, arrivals: Option<Arrivals>, health: &[PoolHealth], now: f64) -> Observation {
        let pools: Vec<PoolView> = self
            .scenario
            .pools
            .iter()
            .enumerate()
            .map(|(p, spec)| PoolView {
                name: spec.name.clone(),
                priority: spec.priority,
                quota: spec.quota,
                boot_seconds: spec.boot_s,
                shutdown_seconds: spec.shutdown_s,
                billing_minimum_seconds: spec.billing.minimum_s,
                health: health[p],
                instances: self.live[p].iter().map(|&i| self.view(&self.instances[i], now)).collect(),
            })
            .collect();
        let (mut slots, mut counted) = (0u64, 0u64);
        for (p, spec) in self.scenario.pools.iter().enumerate() {
            let n = u64::from(self.capacity(p));
            slots += n * u64::from(spec.workers_per_instance);
            counted += n;
        }
        let per_instance = if counted > 0 {
            slots as f64 / counted as f64
        } else {
            // Nothing runs: the pool that would be launched first.
            let first = self.scenario.pools.iter().min_by_key(|p| p.priority).expect("validated: a pool");
            f64::from(first.workers_per_instance)
        };
        Observation {
            backlog,
            delayed: 0,
            pools,
            throughput_per_instance: Some(per_instance / self.scenario.service.mean_s()),
            arrivals,
        }
    }

    fn view(&self, i: &Instance, now: f64) -> InstanceView {
        let (state, activity, heartbeat_age_s) = match i.phase {
            Phase::Booting => (InstanceState::Pending, Activity::Unknown, None),
            Phase::Running => {
                let activity = match (i.draining, i.jobs.is_empty()) {
                    (false, true) => Activity::Idle,
                    (false, false) => Activity::Busy,
                    (true, false) => Activity::Draining,
                    (true, true) => Activity::Drained,
                };
                (InstanceState::Running, activity, Some(0.0))
            }
            Phase::Stopping | Phase::Gone => (InstanceState::Stopping, Activity::Idle, Some(0.0)),
        };
        InstanceView { id: i.id.clone(), state, activity, heartbeat_age_s, age_s: now - i.launched_at }
    }
}
