//! Scale-out rules: private first, undrain before launching, launch limits, `scaling.max`, pool
//! health and the boot-time check before a public burst.

use super::*;

#[test]
fn scale_out_fills_private_to_quota_before_public() {
    run_table(
        "private first",
        vec![
            ("3 wanted, private has room", 3, obs(3, hybrid(vec![], vec![])), CFG, &["launch private 3"]),
            (
                "8 wanted: private to 5, rest public",
                8,
                obs(8, hybrid(vec![], vec![])),
                CFG,
                &["launch private 5", "launch public 3"],
            ),
            (
                "4 running in private, 3 more",
                7,
                obs(7, hybrid(many("a", 4, busy), vec![])),
                CFG,
                &["launch private 1", "launch public 2"],
            ),
            ("private full: all to public", 7, obs(7, hybrid(many("a", 5, busy), vec![])), CFG, &["launch public 2"]),
            (
                "stopping fills private's quota",
                5,
                obs(5, hybrid([many("a", 3, busy), many("s", 2, stopping)].concat(), vec![])),
                CFG,
                &["launch public 2"],
            ),
            (
                "public already used: private room first",
                7,
                obs(7, hybrid(many("a", 3, busy), many("b", 2, busy))),
                CFG,
                &["launch private 2"],
            ),
            (
                "quota 0 private is never used",
                2,
                obs(2, vec![pool("private", 1, 0, vec![]), pool("public", 2, 10, vec![])]),
                CFG,
                &["launch public 2"],
            ),
        ],
    );
}

#[test]
fn undrain_before_launching() {
    let fleet = || obs(0, hybrid(vec![draining("d0"), draining("d1"), busy("b0")], vec![draining("p0")]));
    run_table(
        "undrain first",
        vec![
            ("1 → 2: one undrain", 2, fleet(), CFG, &["undrain d0"]),
            ("1 → 4: all three undrained, private first", 4, fleet(), CFG, &["undrain d0", "undrain d1", "undrain p0"]),
            (
                "1 → 6: undrain, then launch",
                6,
                fleet(),
                CFG,
                &["undrain d0", "undrain d1", "undrain p0", "launch private 2"],
            ),
            (
                "undrains are not launches",
                6,
                fleet(),
                PlannerConfig { max_launches_per_tick: 1, ..CFG },
                &["undrain d0", "undrain d1", "undrain p0", "launch private 1", "note: 1 instances short"],
            ),
        ],
    );
}

#[test]
fn at_most_max_launches_per_tick() {
    let limit = |n: u32| PlannerConfig { max_launches_per_tick: n, ..CFG };
    run_table(
        "max_launches_per_tick",
        vec![
            (
                "10 wanted, 3 per tick",
                10,
                obs(10, hybrid(vec![], vec![])),
                limit(3),
                &["launch private 3", "note: 7 instances short"],
            ),
            (
                "limit spans pools",
                10,
                obs(10, hybrid(many("a", 4, busy), vec![])),
                limit(3),
                &["launch private 1", "launch public 2"],
            ),
            ("limit 0: no launch", 2, obs(2, hybrid(vec![], vec![])), limit(0), &[]),
            (
                "stuck replacement counts too",
                3,
                obs(3, vec![pool("private", 1, 9, vec![pending("x", 301.0), busy("b0"), busy("b1")])]),
                limit(0),
                &["terminate x boot_timeout"],
            ),
        ],
    );
}

#[test]
fn scaling_max_counts_stopping_instances() {
    let max = |n: u32| PlannerConfig { max_instances: n, ..CFG };
    run_table(
        "scaling.max",
        vec![
            (
                "2 running + 2 stopping, max 5",
                5,
                obs(5, hybrid([many("a", 2, busy), many("s", 2, stopping)].concat(), vec![])),
                max(5),
                &["launch private 1"],
            ),
            (
                "stopping in public counts too",
                5,
                obs(5, hybrid(many("a", 2, busy), many("s", 2, stopping))),
                max(5),
                &["launch private 1"],
            ),
            (
                "17 running + 1 stopping, cap 19",
                19,
                obs(48, vec![pool("private", 1, 30, [many("a", 17, busy), many("s", 1, stopping)].concat())]),
                CFG,
                &["launch private 1", "note: 1 instances short"],
            ),
            (
                "at max: nothing",
                19,
                obs(48, vec![pool("private", 1, 30, [many("a", 17, busy), many("s", 2, stopping)].concat())]),
                CFG,
                &[],
            ),
            (
                "above max (lowered cap): nothing",
                3,
                obs(9, vec![pool("private", 1, 30, many("s", 5, stopping))]),
                max(4),
                &[],
            ),
        ],
    );
}

#[test]
fn pool_health_full_unavailable_burst_past_throttled_auth_stop() {
    let private = |h: PoolHealth, n: usize| with_health(pool("private", 1, 5, many("a", n, busy)), h);
    let public = |h: PoolHealth| with_health(pool("public", 2, 10, vec![]), h);
    let backup = pool("backup", 3, 10, vec![]);
    run_table(
        "pool health",
        vec![
            (
                "private Full: burst",
                3,
                obs(3, vec![private(PoolHealth::Full, 0), public(PoolHealth::Ok)]),
                CFG,
                &["launch public 3", "note: Full"],
            ),
            (
                "private Unavailable: burst",
                3,
                obs(3, vec![private(PoolHealth::Unavailable, 0), public(PoolHealth::Ok)]),
                CFG,
                &["launch public 3", "note: Unavailable"],
            ),
            (
                "private Throttled: no burst",
                3,
                obs(3, vec![private(PoolHealth::Throttled, 0), public(PoolHealth::Ok)]),
                CFG,
                &["note: no burst past it"],
            ),
            (
                "private AuthFailed: no burst",
                3,
                obs(3, vec![private(PoolHealth::AuthFailed, 0), public(PoolHealth::Ok)]),
                CFG,
                &["note: AuthFailed"],
            ),
            (
                "private Throttled at quota: still no burst",
                7,
                obs(7, vec![private(PoolHealth::Throttled, 5), public(PoolHealth::Ok)]),
                CFG,
                &["note: no burst past it"],
            ),
            (
                "public Throttled: private only",
                8,
                obs(8, vec![private(PoolHealth::Ok, 0), public(PoolHealth::Throttled)]),
                CFG,
                &["launch private 5", "note: Throttled"],
            ),
            (
                "public Full: past it to backup",
                8,
                obs(8, vec![private(PoolHealth::Ok, 0), public(PoolHealth::Full), backup.clone()]),
                CFG,
                &["launch private 5", "launch backup 3"],
            ),
            (
                "Throttled still scales in",
                3,
                obs(
                    0,
                    vec![
                        private(PoolHealth::Throttled, 0),
                        with_health(pool("public", 2, 10, many("b", 4, idle)), PoolHealth::Throttled),
                    ],
                ),
                CFG,
                &["terminate b0 scale_in"],
            ),
        ],
    );
}

#[test]
fn boot_aware_no_public_burst_while_pending_private_absorbs() {
    // 0.5 jobs/s per instance, a 60 s objective, private boots in 30 s, public in 90 s.
    let cfg = PlannerConfig { latency_objective_s: Some(60.0), ..CFG };
    let o = |backlog: u64, private: Vec<InstanceView>, health: PoolHealth, rate: Option<f64>| Observation {
        throughput_per_instance: rate,
        ..obs(
            backlog,
            vec![
                with_health(pool("private", 1, 4, private), health),
                PoolView { boot_seconds: 90.0, ..pool("public", 2, 10, vec![]) },
            ],
        )
    };
    let booting = || many("n", 4, |id| pending(id, 10.0)); // 20 s left: 4 × 0.5 × 40 = 80 jobs.
    let ok = PoolHealth::Ok;
    let absorbs = "note: no burst to public";
    run_table(
        "boot-aware",
        vec![
            ("4 pending private clear 60 ≤ 80 jobs", 8, o(60, booting(), ok, Some(0.5)), cfg, &[absorbs]),
            ("4 pending private clear 80 ≤ 80 jobs", 8, o(80, booting(), ok, Some(0.5)), cfg, &[absorbs]),
            ("81 jobs > 80: burst", 8, o(81, booting(), ok, Some(0.5)), cfg, &["launch public 4"]),
            (
                "launched this check: 4 × 0.5 × 30 = 60 ≥ 50",
                8,
                o(50, vec![], ok, Some(0.5)),
                cfg,
                &["launch private 4", absorbs],
            ),
            (
                "launched this check: 60 < 70, burst",
                8,
                o(70, vec![], ok, Some(0.5)),
                cfg,
                &["launch private 4", "launch public 4"],
            ),
            (
                "Unavailable private, last-known pending absorb",
                8,
                o(60, booting(), PoolHealth::Unavailable, Some(0.5)),
                cfg,
                &[absorbs],
            ),
            ("no latency objective: burst", 8, o(60, booting(), ok, Some(0.5)), CFG, &["launch public 4"]),
            ("no throughput measured: burst", 8, o(60, booting(), ok, None), cfg, &["launch public 4"]),
            (
                "nothing booting, running private clear 10 jobs in time: no burst",
                6,
                o(10, many("a", 4, busy), ok, Some(0.5)),
                cfg,
                &[],
            ),
            (
                "nothing booting, running private cannot clear 200 jobs in time: burst",
                6,
                o(200, many("a", 4, busy), ok, Some(0.5)),
                cfg,
                &["launch public 2"],
            ),
            (
                "min warm instances with an empty queue",
                5,
                o(0, many("a", 4, idle), ok, Some(0.5)),
                cfg,
                &["launch public 1"],
            ),
            (
                // 2 pending (2 × 20 jobs) + 2 undrained, running (2 × 0.5 × 60 = 60 jobs).
                "undrained private instances count as running",
                8,
                o(90, [many("n", 2, |id| pending(id, 10.0)), many("d", 2, draining)].concat(), ok, Some(0.5)),
                cfg,
                &["undrain d0", "undrain d1", absorbs],
            ),
        ],
    );
}
