//! Invariant tests of the simulator on every shipped trace with every named policy: caps and
//! quotas hold, every job is done, private fills before public, no run beats the oracle.
//! Properties, not frozen numbers, so a better policy or planner never breaks them.

use std::time::Instant;

use skyburst_policies::{BacklogPerInstance, Debounce, QueueMinusRunning, ScalingPolicy, SeedHybrid, Slo};

use super::*;

const STEADY: &str = include_str!("../../examples/traces/steady.csv");
const SPIKE: &str = include_str!("../../examples/traces/spike.csv");
const RAMP: &str = include_str!("../../examples/traces/ramp.csv");
const DIURNAL: &str = include_str!("../../examples/traces/diurnal.csv");

fn k(checks: u32) -> Debounce {
    Debounce::try_new(checks).unwrap()
}

/// The named policies as the config builds them: K = 3, T and the objective 10 s.
struct Named {
    seed: SeedHybrid,
    queue: QueueMinusRunning,
    backlog: BacklogPerInstance,
    slo: Slo,
}

impl Named {
    fn new() -> Self {
        Self {
            seed: SeedHybrid { debounce: k(3) },
            queue: QueueMinusRunning,
            backlog: BacklogPerInstance {
                target: None,
                latency_objective_s: Some(10.0),
                fallback_target: 2.0,
                debounce: k(3),
            },
            slo: Slo::new(10.0, 5.0, 2.0),
        }
    }

    fn all(&self) -> [&(dyn ScalingPolicy + Sync); 4] {
        [&self.seed, &self.queue, &self.backlog, &self.slo]
    }
}

/// Checks every invariant of one report; `what` names the run in failures.
fn check(what: &str, scenario: &Scenario, trace: &Trace, r: &Report) {
    let max = scenario.caps.max();
    let inv = &r.invariants;
    assert!(r.settled, "{what}: did not settle by {} s", r.end_s);
    assert_eq!(r.jobs_done, trace.jobs(), "{what}: every job is done");
    assert!(inv.max_occupied <= max, "{what}: {} instances, cap {max}", inv.max_occupied);
    for (p, pool) in scenario.pools.iter().enumerate() {
        let seen = inv.max_occupied_per_pool[p];
        assert!(seen <= pool.quota, "{what}: pool {} held {seen}, quota {}", pool.name, pool.quota);
        // A pool cannot serve more slot-seconds than its instances were up.
        let served = r.pools[p].service_seconds / f64::from(pool.workers_per_instance);
        assert!(r.pools[p].instance_seconds >= served - 1e-6, "{what}: pool {} served beyond its uptime", pool.name);
    }
    assert_eq!(inv.private_full_violations, 0, "{what}: a public launch while the private pool had room");
    assert_eq!(inv.requeued_jobs, 0, "{what}: the planner stopped a busy instance");
    assert!(r.cost_ratio >= 1.0 - 1e-9, "{what}: cost ratio {} beats the oracle", r.cost_ratio);
    assert!(r.wait_p50_s >= 0.0 && r.wait_p50_s <= r.wait_p95_s, "{what}: p50 {} p95 {}", r.wait_p50_s, r.wait_p95_s);
    // The histogram reports a bucket's upper edge: within 0.1 % (3 significant digits) + 1 µs.
    assert!(r.wait_p95_s <= r.wait_max_s * 1.001 + 1e-6, "{what}: p95 {} max {}", r.wait_p95_s, r.wait_max_s);
    assert!((0.0..=1.0).contains(&r.public_share), "{what}: public share {}", r.public_share);
    assert!(!r.timeline.is_empty(), "{what}: no samples");
    // Scale-in releases the lowest priority first: a check that lowers a pool's capacity
    // leaves no capacity in any lower-priority pool.
    for pair in r.timeline.windows(2) {
        for (p, pool) in scenario.pools.iter().enumerate() {
            if pair[1].pools[p].capacity < pair[0].pools[p].capacity {
                let lower = scenario.pools.iter().enumerate().filter(|(_, q)| q.priority > pool.priority);
                for (q, other) in lower {
                    assert_eq!(
                        pair[1].pools[q].capacity, 0,
                        "{what}: {} kept while {} shrank at {} s",
                        other.name, pool.name, pair[1].t_s
                    );
                }
            }
        }
    }
    for s in &r.timeline {
        let occupied: u32 = s.pools.iter().map(|p| p.occupied).sum();
        assert!(occupied <= max, "{what}: {occupied} instances at {} s", s.t_s);
        assert!(s.pools.iter().all(|p| p.capacity <= p.occupied), "{what}: capacity above occupancy at {} s", s.t_s);
    }
}

/// The two-pool scenario with a private quota of `private_quota`.
fn scenario(private_quota: u32) -> Scenario {
    let mut scenario = Scenario::example();
    scenario.pools[0].quota = private_quota;
    scenario
}

#[test]
fn every_short_trace_keeps_the_invariants_under_every_policy() {
    let named = Named::new();
    for (name, text) in [("steady", STEADY), ("spike", SPIKE), ("ramp", RAMP)] {
        let trace = Trace::parse(text).unwrap();
        for quota in [4, 8] {
            let mut scenarios = vec![scenario(quota)];
            // The planner's boot-time check before a public burst, and the other service shapes.
            let mut other = scenario(quota);
            other.planner.latency_objective_s = Some(10.0);
            other.service = ServiceTime::Exponential { mean_s: 1.0 };
            scenarios.push(other);
            let mut constant = scenario(quota);
            constant.service = ServiceTime::Constant { mean_s: 0.5 };
            constant.caps = skyburst_policies::Caps::try_new(2, 19).unwrap();
            scenarios.push(constant);
            for (s, scenario) in scenarios.iter().enumerate() {
                let reports = simulate_each(scenario, &trace, &named.all()).unwrap();
                for r in &reports {
                    check(&format!("{name}, quota {quota}, scenario {s}, {}", r.policy), scenario, &trace, r);
                }
            }
        }
    }
}

#[test]
fn the_spike_is_a_hundred_at_once_and_bursts_to_public() {
    let trace = Trace::parse(SPIKE).unwrap();
    let reports = simulate_each(&scenario(4), &trace, &Named::new().all()).unwrap();
    for r in &reports {
        assert_eq!(r.peak_backlog, 100, "{}", r.policy);
    }
    // seed-hybrid and queue-minus-running want 19 for 100 jobs: the private 4 cannot hold them.
    for r in &reports[..2] {
        assert!(r.pools[1].launches > 0 && r.public_share > 0.0, "{}: {:?}", r.policy, r.pools);
    }
}

#[test]
fn the_diurnal_million_keeps_the_invariants_and_reports_its_speed() {
    let started = Instant::now();
    let trace = Trace::parse(DIURNAL).unwrap();
    assert_eq!(trace.jobs(), 1_000_000);
    assert_eq!(trace.duration_s(), 86_400.0);
    let parsed = started.elapsed();
    let scenario = scenario(8);
    let named = Named::new();
    for policy in named.all() {
        let started = Instant::now();
        let r = simulate(&scenario, &trace, policy).unwrap();
        let wall = started.elapsed().as_secs_f64();
        // Printed, not asserted (never assert on wall-clock): `cargo test -- --nocapture` shows it.
        eprintln!(
            "diurnal, {}: {} jobs, {} events in {wall:.2} s = {:.0} jobs/s (trace parsed in {parsed:.1?})",
            r.policy,
            r.jobs,
            r.events,
            r.jobs as f64 / wall
        );
        check(&format!("diurnal, {}", r.policy), &scenario, &trace, &r);
    }
}

#[test]
fn a_full_private_cloud_bursts_and_still_finishes() {
    let trace = Trace::parse(SPIKE).unwrap();
    let mut scenario = scenario(8);
    // The cloud has room for 2 of the 8 the quota allows: launches beyond it fail with Capacity.
    scenario.pools[0].cloud_capacity = Some(2);
    let named = Named::new();
    for policy in named.all() {
        let r = simulate(&scenario, &trace, policy).unwrap();
        check(&format!("capacity, {}", r.policy), &scenario, &trace, &r);
        assert!(r.invariants.max_occupied_per_pool[0] <= 2, "{}: {:?}", r.policy, r.invariants);
        assert!(r.pools[1].launches > 0 && r.public_share > 0.0, "{}: {:?}", r.policy, r.pools);
        assert!(r.invariants.capacity_refusals > 0, "{}: {:?}", r.policy, r.invariants);
    }
    // A public cloud that is full too: the work is still done on what could be had.
    scenario.pools[1].cloud_capacity = Some(1);
    let r = simulate(&scenario, &trace, &QueueMinusRunning).unwrap();
    check("both clouds short", &scenario, &trace, &r);
    assert!(r.invariants.max_occupied <= 3, "{:?}", r.invariants);
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let trace = Trace::parse(RAMP).unwrap();
    let policy = SeedHybrid { debounce: k(3) };
    let scenario = scenario(4);
    let first = simulate(&scenario, &trace, &policy).unwrap();
    assert_eq!(first, simulate(&scenario, &trace, &policy).unwrap());
    let other = Scenario { seed: 2, ..scenario.clone() };
    let second = simulate(&other, &trace, &policy).unwrap();
    assert_ne!(first.oracle_instance_seconds, second.oracle_instance_seconds);
    // Every policy serves the same jobs: the oracle does not depend on the policy.
    let third = simulate(&scenario, &trace, &QueueMinusRunning).unwrap();
    assert_eq!(first.oracle_instance_seconds, third.oracle_instance_seconds);
}

#[test]
fn the_png_and_the_csvs_are_written() {
    let trace = Trace::parse(RAMP).unwrap();
    let reports = simulate_each(&scenario(4), &trace, &Named::new().all()).unwrap();
    let dir = std::env::temp_dir().join(format!("skyburst-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    plot_png(&reports, dir.join("ramp.png")).unwrap();
    write_csv(&reports, dir.join("ramp.csv")).unwrap();
    write_timeline_csv(&reports, dir.join("ramp-timeline.csv")).unwrap();
    let png = std::fs::read(dir.join("ramp.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    let csv = std::fs::read_to_string(dir.join("ramp.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    let timeline = std::fs::read_to_string(dir.join("ramp-timeline.csv")).unwrap();
    assert!(timeline.lines().count() > 3 * 240, "a sample per 5 s check over 20 minutes, per policy");
    let table = summary_table(&reports);
    assert_eq!(table.lines().count(), 6, "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The hybrid example's scenario and its named policies as that config builds them.
fn hybrid() -> (crate::config::Config, Scenario) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = crate::config::Config::load_with_env(Some(&root.join("examples/configs/hybrid.toml")), Vec::new())
        .expect("the hybrid example loads");
    let scenario = crate::cmd::simulate::scenario(&config);
    (config, scenario)
}

fn mission_trace(name: &str) -> Trace {
    Trace::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/traces/{name}.csv"))).unwrap()
}

const MISSION: [&str; 4] = ["evening-peak", "flash-crowd", "bursts", "noisy"];

/// The mission traces (`scripts/make-traces.py`: an evening-peak day, a flash crowd, bursts every
/// ten minutes, a noisy two hours) on `examples/configs/hybrid.toml`'s pools with every named
/// policy as that config builds them: the invariants hold, and the day and the flash crowd
/// burst to the public pool under every policy, which is what they are sized for.
#[test]
fn the_mission_traces_keep_the_invariants_and_burst_on_the_hybrid_example() {
    let (config, scenario) = hybrid();
    let tick = config.controller.tick_seconds;
    let policies: Vec<Box<dyn ScalingPolicy + Send + Sync>> =
        skyburst_policies::PolicyName::ALL.iter().map(|&n| config.scaling.policy_named(n, tick)).collect();
    let borrowed: Vec<&(dyn ScalingPolicy + Sync)> = policies.iter().map(|p| p.as_ref() as _).collect();
    for name in MISSION {
        let trace = mission_trace(name);
        for r in simulate_each(&scenario, &trace, &borrowed).unwrap() {
            check(&format!("{name}, {}", r.policy), &scenario, &trace, &r);
            if matches!(name, "evening-peak" | "flash-crowd") {
                assert!(r.public_share > 0.05, "{name}, {}: public share {}", r.policy, r.public_share);
            }
        }
    }
}

/// The clairvoyant reference keeps every invariant a policy keeps (it runs in the same engine,
/// through the same planner) and never beats the zero-boot oracle: every second of service runs
/// on a billed instance's slot, and every instance is billed at least from launch to gone.
#[test]
fn the_clairvoyant_plan_keeps_the_invariants_and_never_beats_the_oracle() {
    let mut runs: Vec<(String, Scenario, Trace)> = Vec::new();
    for (name, text) in [("steady", STEADY), ("spike", SPIKE), ("ramp", RAMP), ("diurnal", DIURNAL)] {
        for quota in [4, 8] {
            runs.push((format!("{name}, quota {quota}"), scenario(quota), Trace::parse(text).unwrap()));
        }
    }
    let mut constant = scenario(4);
    constant.service = ServiceTime::Constant { mean_s: 0.5 };
    constant.caps = skyburst_policies::Caps::try_new(2, 19).unwrap();
    runs.push(("ramp, constant service, min 2".into(), constant, Trace::parse(RAMP).unwrap()));
    let (_, hybrid) = hybrid();
    for name in MISSION {
        runs.push((format!("{name}, hybrid"), hybrid.clone(), mission_trace(name)));
    }
    for (what, scenario, trace) in &runs {
        let r = simulate_clairvoyant(scenario, trace).unwrap();
        assert_eq!(r.policy, CLAIRVOYANT);
        check(&format!("clairvoyant, {what}"), scenario, trace, &r);
        let billed: f64 = r.pools.iter().map(|p| p.billed_seconds).sum();
        assert!(
            billed >= r.oracle_instance_seconds - 1e-6,
            "clairvoyant, {what}: {billed} < {}",
            r.oracle_instance_seconds
        );
    }
}

/// The scaling issue's targets (cost × the zero-boot oracle / p95 wait / direction changes) for
/// the shipped policy of `examples/configs/hybrid.toml` on the mission traces: bounds, not
/// frozen figures, so a better policy keeps passing. Two targets are not asserted because no
/// plan meets them on these traces (see the next test): the evening peak's cost (≤ 1.25 × the
/// oracle) and the bursts' cost (≤ 2.3 ×, and 1.3 × the clairvoyant reference).
#[test]
fn the_shipped_policy_meets_the_scaling_targets_on_the_mission_traces() {
    let (config, scenario) = hybrid();
    assert_eq!(config.scaling.policy, skyburst_policies::PolicyName::Slo, "the example ships the slo policy");
    let policy = config.scaling.policy(config.controller.tick_seconds);
    // (trace, most cost × oracle, most p95 wait s, most direction changes, most × clairvoyant)
    let targets = [
        ("evening-peak", None, 75.0, Some(40), Some(1.3)),
        ("flash-crowd", Some(1.8), 100.0, None, Some(1.3)),
        ("bursts", None, 90.0, None, None),
        ("noisy", Some(1.3), 75.0, Some(20), Some(1.3)),
    ];
    for (name, cost, p95, changes, vs_clairvoyant) in targets {
        let trace = mission_trace(name);
        let r = simulate(&scenario, &trace, policy.as_ref()).unwrap();
        check(&format!("{name}, slo"), &scenario, &trace, &r);
        let reference = simulate_clairvoyant(&scenario, &trace).unwrap();
        let figures = format!(
            "{name}: {:.3} × oracle, p95 {:.1} s, {} direction changes, {:.3} × clairvoyant ({:.3} × oracle)",
            r.cost_ratio,
            r.wait_p95_s,
            r.direction_changes,
            r.cost_ratio / reference.cost_ratio,
            reference.cost_ratio
        );
        eprintln!("{figures}");
        assert!(cost.is_none_or(|most| r.cost_ratio <= most), "{figures}: cost above {cost:?}");
        assert!(r.wait_p95_s <= p95, "{figures}: p95 above {p95} s");
        assert!(changes.is_none_or(|most| r.direction_changes <= most), "{figures}: changes above {changes:?}");
        let vs = r.cost_ratio / reference.cost_ratio;
        assert!(vs_clairvoyant.is_none_or(|most| vs <= most), "{figures}: above {vs_clairvoyant:?} × clairvoyant");
    }
}

/// Why two of the scaling issue's cost targets are not asserted above: on these traces nothing
/// meets them.
/// - The evening peak's night runs at about 1.19 instances of load, so a fleet that does not
///   flap holds 2, and even the clairvoyant plan (which may flap) costs more than 1.25 × the
///   oracle, whatever its latency objective.
/// - For the bursts, every fixed response (k instances launched at the first check that sees a
///   burst and kept until its backlog is gone: the best a reacting policy can do with k) either
///   costs more than 2.3 × the oracle or keeps a p95 wait above 90 s: the jobs of a burst wait
///   for the 45 s boot. Only a plan that launches before the burst does (the clairvoyant, with
///   a 75 s objective) gets there.
#[test]
fn the_evening_and_bursts_cost_targets_are_beyond_a_reacting_fleet() {
    let (_, scenario) = hybrid();
    for objective in [60.0, 75.0, 90.0] {
        let mut s = scenario.clone();
        s.planner.latency_objective_s = Some(objective);
        let r = simulate_clairvoyant(&s, &mission_trace("evening-peak")).unwrap();
        assert!(r.cost_ratio > 1.25, "objective {objective} s: the clairvoyant plan costs {}", r.cost_ratio);
    }
    /// k instances while a burst's backlog lasts, one otherwise.
    struct Fixed(u64);
    impl ScalingPolicy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn targets(&self, o: &skyburst_policies::Observation) -> skyburst_policies::Targets {
            let n = if o.backlog > 30 { self.0 } else { 1 };
            skyburst_policies::Targets { scale_out: n, scale_in: n }
        }
        fn debounce(&self, _: &skyburst_policies::Observation) -> Debounce {
            k(1)
        }
    }
    let bursts = mission_trace("bursts");
    for n in 2..=12 {
        let r = simulate(&scenario, &bursts, &Fixed(n)).unwrap();
        check(&format!("bursts, fixed {n}"), &scenario, &bursts, &r);
        assert!(
            r.cost_ratio > 2.3 || r.wait_p95_s > 90.0,
            "k = {n}: {:.3} × oracle, p95 {:.1} s",
            r.cost_ratio,
            r.wait_p95_s
        );
    }
    let mut foresight = scenario.clone();
    foresight.planner.latency_objective_s = Some(75.0);
    let r = simulate_clairvoyant(&foresight, &bursts).unwrap();
    assert!(r.cost_ratio <= 2.3 && r.wait_p95_s <= 90.0, "{:.3} × oracle, p95 {:.1} s", r.cost_ratio, r.wait_p95_s);
}
