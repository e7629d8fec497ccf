//! The clairvoyant reference: what was possible with the same pools, boot and shutdown times,
//! quotas, caps, billing and latency objective, for a controller that knew the whole trace in
//! advance. Reported beside the zero-boot oracle, it says how far a policy is from the best a
//! fleet that must boot could have done, where the oracle (zero boot, no cap, never idle) is a
//! bound nothing approaches on a spike.
//!
//! # How the plan is made
//! 1. **When the work is done.** Each job (the same service time every run draws) is due one
//!    latency objective after it arrives. The plan serves work as evenly as the deadlines allow:
//!    cumulative service runs between the work arrived (it cannot serve earlier) and the work
//!    due (it must not serve later), along the taut string between the two, the flattest such
//!    path. The queue absorbs peaks shorter than the objective, so fewer instances run, and
//!    fewer are launched (each launch pays a boot).
//! 2. **How many instances.** Each check interval gets the fewest instances, filled in priority
//!    order (private first, the caps and quotas as limits), whose capacity keeps up with that
//!    path: a fractional need alternates between two counts with the right average.
//! 3. **Whole lives.** Instance *i* (counting in priority order) is needed in some runs of
//!    checks. Two runs share one life when keeping the instance idle in the gap costs no more than
//!    stopping it and launching another (its shutdown and boot, billed with the pool's minimum
//!    and increment); otherwise the first is released and another launched. Each life is
//!    launched one boot time before it is first needed and released when last needed.
//! 4. **Launch limits.** Launches beyond `max_launches_per_tick` in one check start a check
//!    earlier.
//! 5. **Played through the same engine.** The count of lives per check is handed to the same
//!    planner and fleet model every policy runs in (private first, idle-only release, drains),
//!    so the reference is billed, queued and checked exactly like a policy. The planner's
//!    boot-time check before a public burst is off: it guesses what the plan already knows.
//!
//! # Why it never beats the zero-boot oracle
//! It runs in the engine, which bills every instance from launch to gone, rounded up by its
//! pool's billing; every second of service is run on a billed instance's slot. So billed
//! instance-seconds ≥ service seconds ÷ the most slots an instance has = the oracle's
//! instance-seconds, for this run as for any policy's. `invariants.rs` checks it on every trace.

use skyburst_policies::PlannerConfig;

use super::trace::Trace;
use super::{Scenario, SimPool};

/// The latency objective the plan keeps when the scenario has none (`[scaling]` without
/// `latency_objective_seconds`): the `slo` policy's default.
const DEFAULT_OBJECTIVE_S: f64 = crate::config::DEFAULT_SLO_OBJECTIVE_S;

/// Instances wanted at each check (index = check number), for [`super::simulate`]'s schedule.
pub(super) fn plan(scenario: &Scenario, trace: &Trace) -> Vec<u32> {
    let tick = scenario.tick_s;
    let levels = levels(scenario);
    if levels.is_empty() {
        return Vec::new();
    }
    let needed = instances_over_time(&serve_smoothly(scenario, trace, &levels), tick, &levels);
    let mut lives: Vec<Life> = Vec::new();
    for (level, pool) in levels.iter().enumerate() {
        lives.extend(lives_of(level, pool, &needed, tick));
    }
    spread_launches(&mut lives, scenario.planner.max_launches_per_tick.max(1) as usize);
    let end = lives.iter().map(|l| l.release).max().unwrap_or(0);
    let mut desired = vec![0u32; end + 1];
    for life in &lives {
        for wanted in &mut desired[life.launch..life.release] {
            *wanted += 1;
        }
    }
    desired
}

/// The planner the plan is played with: the scenario's limits without the boot-time check.
pub(super) fn planner(scenario: &Scenario) -> PlannerConfig {
    PlannerConfig { latency_objective_s: None, ..scenario.planner }
}

/// Instance slots in the order the planner fills them: each pool's quota in priority order, at
/// most `scaling.max` in all.
fn levels(scenario: &Scenario) -> Vec<&SimPool> {
    let mut pools: Vec<&SimPool> = scenario.pools.iter().collect();
    pools.sort_by_key(|p| p.priority);
    pools
        .into_iter()
        .flat_map(|p| std::iter::repeat_n(p, p.quota as usize))
        .take(scenario.caps.max() as usize)
        .collect()
}

/// Seconds of work served in each check interval: the flattest service that serves no job before
/// it arrives and every job by its deadline. Cumulative service must stay between the work
/// due (below) and the work arrived (above); the flattest path between two such curves is the
/// taut string, which is also the schedule with the lowest peak for deadlines in arrival order
/// (every job has the same objective): fewest instances, so fewest boots.
fn serve_smoothly(scenario: &Scenario, trace: &Trace, levels: &[&SimPool]) -> Vec<f64> {
    let tick = scenario.tick_s;
    let objective = scenario.planner.latency_objective_s.unwrap_or(DEFAULT_OBJECTIVE_S);
    // Work per interval, arrived and due: every deadline falls within the trace plus the objective.
    let deadlines = ((trace.duration_s() + objective) / tick) as usize + 1;
    let (mut arrived, mut due) = (vec![0.0; deadlines], vec![0.0; deadlines]);
    let (mut arrivals, mut job, mut work) = (trace.arrivals(), 0u64, 0.0);
    while let Some(t) = arrivals.peek() {
        arrivals.advance();
        let seconds = scenario.service.for_job(scenario.seed, job);
        job += 1;
        work += seconds;
        arrived[((t / tick) as usize).min(deadlines - 1)] += seconds;
        due[(((t + objective) / tick) as usize).min(deadlines - 1)] += seconds;
    }
    // Long enough, too, for the whole work at full capacity after every boot.
    let slowest_boot = levels.iter().map(|p| p.boot_s).fold(0.0, f64::max);
    let slots: f64 = levels.iter().map(|p| f64::from(p.workers_per_instance)).sum();
    let horizon = deadlines.max(((slowest_boot + work / slots) / tick).ceil() as usize) + 2;
    arrived.resize(horizon, 0.0);
    due.resize(horizon, 0.0);
    let cumulative = |v: &[f64]| -> Vec<f64> {
        std::iter::once(0.0)
            .chain(v.iter().scan(0.0, |sum, x| {
                *sum += x;
                Some(*sum)
            }))
            .collect()
    };
    // The most each interval can serve: only instances booted by its start (the fleet starts
    // empty), at most the levels' slots.
    let most: Vec<f64> = (0..horizon)
        .map(|k| {
            let t = k as f64 * tick;
            tick * levels.iter().filter(|p| p.boot_s <= t).map(|p| f64::from(p.workers_per_instance)).sum::<f64>()
        })
        .collect();
    let (mut lower, mut upper) = (cumulative(&due), cumulative(&arrived));
    // Served by each boundary at most: what has arrived and what the capacity so far could serve.
    let reachable = cumulative(&most);
    for (u, r) in upper.iter_mut().zip(&reachable) {
        *u = u.min(*r);
    }
    // Served by each boundary at least: what is due, and what later intervals cannot fit. Where
    // that is more than can be served (the fleet was still booting), the jobs are late.
    for k in (0..horizon).rev() {
        lower[k] = lower[k].max(lower[k + 1] - most[k]);
    }
    for (l, u) in lower.iter_mut().zip(&upper) {
        *l = l.min(*u);
    }
    let path = taut_string(&lower, &upper);
    path.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect()
}

/// The taut string from `(0, 0)` to the last point between `lower` and `upper` (equal length,
/// `lower[k] <= upper[k]`, equal at both ends): at each vertex it bends only where it touches a
/// curve. Returns its height at every index.
fn taut_string(lower: &[f64], upper: &[f64]) -> Vec<f64> {
    let n = lower.len();
    let mut path = vec![0.0; n];
    let (mut i, mut height) = (0usize, lower[0].max(0.0).min(upper[0]));
    path[0] = height;
    while i + 1 < n {
        // The steepest line under `upper` and the flattest over `lower` seen so far from (i, height).
        let (mut hi, mut hi_at, mut lo, mut lo_at) = (f64::INFINITY, i + 1, f64::NEG_INFINITY, i + 1);
        let mut bend = None;
        for j in i + 1..n {
            let run = (j - i) as f64;
            let (up, down) = ((upper[j] - height) / run, (lower[j] - height) / run);
            if down > hi {
                bend = Some((hi_at, hi));
                break;
            }
            if up < lo {
                bend = Some((lo_at, lo));
                break;
            }
            if up < hi {
                (hi, hi_at) = (up, j);
            }
            if down > lo {
                (lo, lo_at) = (down, j);
            }
        }
        // No bend before the end: straight to the last point, which both curves share.
        let (to, slope) = bend.unwrap_or((n - 1, (lower[n - 1] - height) / (n - 1 - i) as f64));
        for (k, h) in path.iter_mut().enumerate().take(to + 1).skip(i + 1) {
            *h = height + slope * (k - i) as f64;
        }
        height = path[to];
        i = to;
    }
    path
}

/// Instances per check that serve `work` (seconds per interval): the fewest levels, in priority
/// order, whose capacity summed so far covers the work summed so far. A fractional need (1.2
/// instances) becomes runs of 1 and 2 whose average is the need; [`lives_of`] then decides
/// whether the second instance idles through the runs of 1 or is relaunched.
fn instances_over_time(work: &[f64], tick: f64, levels: &[&SimPool]) -> Vec<usize> {
    let (mut served, mut capacity) = (0.0, 0.0);
    work.iter()
        .map(|&w| {
            served += w;
            let mut n = 0;
            let mut this = 0.0;
            while n < levels.len() && capacity + this < served - 1e-9 {
                this += tick * f64::from(levels[n].workers_per_instance);
                n += 1;
            }
            capacity += this;
            n
        })
        .collect()
}

/// One planned instance: launched at check `launch`, released at check `release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Life {
    launch: usize,
    release: usize,
}

/// The lives of level `level` (a `pool` instance): its runs of needed checks, joined across a
/// gap when idling through it costs no more than a relaunch.
fn lives_of(level: usize, pool: &SimPool, needed: &[usize], tick: f64) -> Vec<Life> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (k, &n) in needed.iter().enumerate() {
        if n > level {
            match runs.last_mut() {
                Some((_, end)) if *end == k => *end = k + 1,
                _ => runs.push((k, k + 1)),
            }
        }
    }
    let billed = |seconds: f64| pool.billing.billed(pool.boot_s + seconds + pool.shutdown_s);
    let mut joined: Vec<(usize, usize)> = Vec::new();
    for (start, end) in runs {
        if let Some((first, last)) = joined.last_mut() {
            let together = billed((end - *first) as f64 * tick);
            let apart = billed((*last - *first) as f64 * tick) + billed((end - start) as f64 * tick);
            // Apart only if the old instance is gone before the new one is launched: two
            // instances on one level could pass the pool's quota.
            let gap = (start - *last) as f64 * tick;
            if together <= apart || gap < pool.boot_s + pool.shutdown_s {
                *last = end;
                continue;
            }
        }
        joined.push((start, end));
    }
    let boot_checks = (pool.boot_s / tick).ceil() as usize;
    joined.into_iter().map(|(start, end)| Life { launch: start.saturating_sub(boot_checks), release: end }).collect()
}

/// Starts launches a check earlier where a check has more than `limit` of them.
fn spread_launches(lives: &mut [Life], limit: usize) {
    lives.sort_by_key(|l| std::cmp::Reverse(l.launch));
    let Some(last) = lives.first().map(|l| l.launch) else { return };
    let mut per_check = vec![0usize; last + 1];
    for life in lives.iter_mut() {
        while life.launch > 0 && per_check[life.launch] >= limit {
            life.launch -= 1;
        }
        per_check[life.launch] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{simulate_clairvoyant, Billing, ServiceTime};

    #[test]
    fn a_steady_load_gets_a_steady_fleet_launched_a_boot_ahead() {
        let mut scenario = Scenario::example();
        scenario.service = ServiceTime::Constant { mean_s: 1.0 };
        // 4 jobs/s of 1 s jobs on 2-slot instances: 2 instances, from t = 60 s for 10 minutes.
        let trace = Trace::parse("t_seconds,count\n60,2400\n660,0\n").unwrap();
        let desired = plan(&scenario, &trace);
        let private_boot_checks = (scenario.pools[0].boot_s / scenario.tick_s) as usize;
        let first = desired.iter().position(|&n| n > 0).unwrap();
        assert!(first * 5 <= 120 - private_boot_checks * 5, "launched a boot ahead of the deadlines: check {first}");
        let steady = &desired[40..120];
        assert!(steady.iter().all(|&n| n == 2), "{steady:?}");
        let last = desired.iter().rposition(|&n| n > 0).unwrap();
        assert_eq!(desired.len() - 1, last + 1, "released after the last check it is needed");
        assert!(last * 5 >= 660 && last * 5 <= 660 + 60 + 5, "the last jobs are due by 720 s: check {last}");
    }

    #[test]
    fn short_gaps_keep_the_instance_and_long_ones_release_it() {
        let pool = SimPool { billing: Billing::default(), ..Scenario::example().pools[0].clone() };
        // Boot 60 s + shutdown 20 s: a 50 s gap is kept, a 200 s gap is released.
        let mut needed = vec![1; 10];
        needed.extend(vec![0; 10]);
        needed.extend(vec![1; 10]);
        needed.extend(vec![0; 40]);
        needed.extend(vec![1; 10]);
        let lives = lives_of(0, &pool, &needed, 5.0);
        assert_eq!(lives, vec![Life { launch: 0, release: 30 }, Life { launch: 58, release: 80 }]);
        // EC2's minute makes a short second life dearer: a gap a little past a relaunch is kept.
        let ec2 = SimPool { billing: Billing { minimum_s: 600.0, increment_s: 1.0 }, ..pool };
        assert_eq!(lives_of(0, &ec2, &needed, 5.0), vec![Life { launch: 0, release: 80 }]);
    }

    #[test]
    fn the_taut_string_is_straight_where_it_can_be_and_bends_at_the_curves() {
        // A tube with a notch: the work arrives only at index 2 (upper), and is due by index 4.
        let upper = [0.0, 0.0, 10.0, 10.0, 10.0];
        let lower = [0.0, 0.0, 0.0, 0.0, 10.0];
        let path = taut_string(&lower, &upper);
        assert_eq!(path, vec![0.0, 0.0, 10.0 / 3.0, 20.0 / 3.0, 10.0], "waits at 0, then evenly");
        let straight = taut_string(&[0.0, 0.0, 0.0, 6.0], &[0.0, 6.0, 6.0, 6.0]);
        assert_eq!(straight, vec![0.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn a_fractional_need_alternates_with_the_right_average() {
        let pool = Scenario::example().pools[0].clone();
        let levels = vec![&pool; 4];
        // 1.5 instances of 2 slots × 5 s = 15 slot-seconds per interval.
        let n = instances_over_time(&[15.0; 8], 5.0, &levels);
        assert_eq!(n.iter().sum::<usize>(), 12, "{n:?}");
        assert!(n.iter().all(|&k| k == 1 || k == 2), "{n:?}");
    }

    #[test]
    fn launches_past_the_limit_start_earlier() {
        let mut lives: Vec<Life> = (0..5).map(|_| Life { launch: 10, release: 20 }).collect();
        spread_launches(&mut lives, 2);
        let mut launches: Vec<usize> = lives.iter().map(|l| l.launch).collect();
        launches.sort_unstable();
        assert_eq!(launches, vec![8, 9, 9, 10, 10]);
    }

    #[test]
    fn a_spike_is_met_by_instances_booted_before_it() {
        let scenario = Scenario::example();
        let trace = Trace::parse("t_seconds,count\n300,100\n300,0\n").unwrap();
        let r = simulate_clairvoyant(&scenario, &trace).unwrap();
        assert_eq!(r.jobs_done, 100);
        // Booted before the spike: it is served within the objective (the 60 s a reacting
        // policy waits for the private boot alone, before any job is served).
        assert!(r.wait_max_s <= 60.0 + 5.0, "{}", r.wait_max_s);
        // One instance serves the 100 s of work within the minute; two would pay two boots.
        assert!(r.pools[0].launches <= 2, "{:?}", r.pools);
        assert!(r.cost_ratio >= 1.0, "{}", r.cost_ratio);
    }
}
