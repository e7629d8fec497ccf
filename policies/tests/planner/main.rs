//! Table tests for the burst planner, one table per rule, and the seeds' worked examples run
//! end to end through `decide` and `plan`. Every row is labelled; a failing row names itself.
//! One test binary in three files: the rules of scale-out, the rules of scale-in and stuck
//! instances, and here the helpers and the worked examples.

mod scale_in;
mod scale_out;

use skyburst_policies::{
    decide, plan, Action, Activity, Caps, Debounce, InstanceState, InstanceView, Observation, Plan, PlannerConfig,
    PolicyState, PoolHealth, PoolView, QueueMinusRunning, ScalingPolicy, SeedHybrid, StuckReason, TerminateReason,
};

/// Seed-like limits: cap 19, no launch limit to speak of, 300 s to boot, 60 s between heartbeats.
const CFG: PlannerConfig = PlannerConfig {
    max_instances: 19,
    max_launches_per_tick: 19,
    boot_timeout_s: 300.0,
    heartbeat_timeout_s: 60.0,
    latency_objective_s: None,
};

fn instance(id: &str, state: InstanceState, activity: Activity) -> InstanceView {
    InstanceView { id: id.into(), state, activity, heartbeat_age_s: Some(5.0), age_s: 600.0 }
}
fn busy(id: &str) -> InstanceView {
    instance(id, InstanceState::Running, Activity::Busy)
}
fn idle(id: &str) -> InstanceView {
    instance(id, InstanceState::Running, Activity::Idle)
}
fn draining(id: &str) -> InstanceView {
    instance(id, InstanceState::Running, Activity::Draining)
}
fn drained(id: &str) -> InstanceView {
    instance(id, InstanceState::Running, Activity::Drained)
}
fn stopping(id: &str) -> InstanceView {
    instance(id, InstanceState::Stopping, Activity::Idle)
}
fn error(id: &str) -> InstanceView {
    InstanceView { heartbeat_age_s: None, ..instance(id, InstanceState::Error, Activity::Unknown) }
}
/// Launched `age_s` seconds ago, not booted, no heartbeat yet.
fn pending(id: &str, age_s: f64) -> InstanceView {
    InstanceView { heartbeat_age_s: None, age_s, ..instance(id, InstanceState::Pending, Activity::Unknown) }
}
/// Running, last heartbeat `age_s` ago (`None`: never reported, launched 600 s ago).
fn silent(id: &str, heartbeat_age_s: Option<f64>) -> InstanceView {
    InstanceView { heartbeat_age_s, ..busy(id) }
}
/// `n` instances `prefix0`, `prefix1`, …
fn many(prefix: &str, n: usize, make: fn(&str) -> InstanceView) -> Vec<InstanceView> {
    (0..n).map(|i| make(&format!("{prefix}{i}"))).collect()
}

fn pool(name: &str, priority: u32, quota: u32, instances: Vec<InstanceView>) -> PoolView {
    PoolView {
        name: name.into(),
        priority,
        quota,
        boot_seconds: 30.0,
        shutdown_seconds: 0.0,
        billing_minimum_seconds: 0.0,
        health: PoolHealth::Ok,
        instances,
    }
}
fn with_health(p: PoolView, health: PoolHealth) -> PoolView {
    PoolView { health, ..p }
}
/// The usual pair: private (priority 1, quota 5) and public (priority 2, quota 10), listed
/// public first so the planner has to sort them.
fn hybrid(private: Vec<InstanceView>, public: Vec<InstanceView>) -> Vec<PoolView> {
    vec![pool("public", 2, 10, public), pool("private", 1, 5, private)]
}
fn obs(backlog: u64, pools: Vec<PoolView>) -> Observation {
    Observation { backlog, delayed: 0, pools, throughput_per_instance: None, arrivals: None }
}

/// The plan as short lines: `launch POOL N`, `terminate ID REASON`, `drain ID`, `undrain ID`.
fn summary(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Launch { pool, count } => format!("launch {pool} {count}"),
            Action::Drain { id, .. } => format!("drain {id}"),
            Action::Undrain { id, .. } => format!("undrain {id}"),
            Action::Terminate { id, reason, .. } => {
                let why = match reason {
                    TerminateReason::ScaleIn => "scale_in",
                    TerminateReason::Drained => "drained",
                    TerminateReason::Stuck(StuckReason::BootTimeout) => "boot_timeout",
                    TerminateReason::Stuck(StuckReason::NoHeartbeat) => "no_heartbeat",
                    TerminateReason::Stuck(StuckReason::ErrorState) => "error_state",
                };
                format!("terminate {id} {why}")
            }
        })
        .collect()
}

/// One row: label, desired, observation, limits, expected actions in order (entries starting
/// with `note:` must instead appear in some note).
type Row<'a> = (&'a str, u32, Observation, PlannerConfig, &'a [&'a str]);

fn run_table(rule: &str, rows: Vec<Row<'_>>) {
    for (label, desired, o, config, expected) in rows {
        let p = plan(desired, &o, &config);
        let (notes, actions): (Vec<&str>, Vec<&str>) = expected.iter().partition(|e| e.starts_with("note:"));
        assert_eq!(summary(&p), actions, "{rule} / {label}: notes {:?}", p.notes);
        for note in notes {
            let note = note.trim_start_matches("note:").trim();
            assert!(p.notes.iter().any(|n| n.contains(note)), "{rule} / {label}: no note {note:?} in {:?}", p.notes);
        }
    }
}

/// (label, policy, backlog, running, checks, launched on the last check, removed on the last check).
type Example<'a> = (&'a str, &'a dyn ScalingPolicy, u64, usize, usize, u32, u32);

/// The seeds' worked examples, policy → decide → plan, on one private pool and the seed cap 19.
#[test]
fn worked_examples_end_to_end() {
    let caps = Caps::default();
    let seed = SeedHybrid { debounce: Debounce::try_new(3).unwrap() };
    // 16 running for 4 / 16: half idle (terminated), half busy (drained).
    let fleet = |backlog: u64, running: usize| {
        let mut instances = many("i", running / 2, idle);
        instances.extend(many("b", running - running / 2, busy));
        obs(backlog, vec![pool("private", 1, 30, instances)])
    };
    let removals = |p: &Plan| {
        p.actions.iter().filter(|a| matches!(a, Action::Terminate { .. } | Action::Drain { .. })).count() as u32
    };
    let table: [Example<'_>; 6] = [
        ("queue-minus-running: 14 / 6 → start 8", &QueueMinusRunning, 14, 6, 1, 8, 0),
        ("queue-minus-running: 48 / 17, cap 19 → start 2", &QueueMinusRunning, 48, 17, 1, 2, 0),
        ("queue-minus-running: 4 / 16 → terminate 12", &QueueMinusRunning, 4, 16, 1, 0, 12),
        ("seed-hybrid: 14 / 6 → start 1", &seed, 14, 6, 1, 1, 0),
        ("seed-hybrid: 48 / 17, cap 19 → start 2", &seed, 48, 17, 1, 2, 0),
        ("seed-hybrid: 4 / 16 → terminate 15 on the K = 3rd check", &seed, 4, 16, 3, 0, 15),
    ];
    for (label, policy, backlog, running, checks, launched, removed) in table {
        let o = fleet(backlog, running);
        let mut state = PolicyState::default();
        for check in 1..=checks {
            let d = decide(policy, &caps, &o, &state);
            let p = plan(d.desired, &o, &CFG);
            state = d.state;
            if check < checks {
                assert!(p.is_empty(), "{label}: check {check} acted early: {:?} ({})", p.actions, d.reason);
                continue;
            }
            assert_eq!(p.launches("private"), launched, "{label}: {}", d.reason);
            assert_eq!(removals(&p), removed, "{label}: {:?}", summary(&p));
            // Busy instances are only ever drained.
            for a in &p.actions {
                if let Action::Terminate { id, .. } = a {
                    assert!(id.starts_with('i'), "{label}: terminated busy {id}");
                }
            }
        }
    }
}
