//! Scale-in rules (lowest priority first; pending, then idle terminated, busy drained), drained
//! instances, and stuck instances terminated and replaced.

use super::*;

#[test]
fn scale_in_releases_public_first() {
    let three = || {
        vec![
            pool("c", 3, 9, many("c", 2, idle)),
            pool("a", 1, 9, many("a", 2, idle)),
            pool("b", 2, 9, many("b", 2, idle)),
        ]
    };
    run_table(
        "public released first",
        vec![
            (
                "6 → 4: two public",
                4,
                obs(0, hybrid(many("a", 3, idle), many("b", 3, idle))),
                CFG,
                &["terminate b0 scale_in", "terminate b1 scale_in"],
            ),
            (
                "6 → 2: public, then private",
                2,
                obs(0, hybrid(many("a", 3, idle), many("b", 3, idle))),
                CFG,
                &["terminate b0 scale_in", "terminate b1 scale_in", "terminate b2 scale_in", "terminate a0 scale_in"],
            ),
            (
                "busy public drained before idle private",
                2,
                obs(0, hybrid(many("a", 2, idle), many("b", 1, busy))),
                CFG,
                &["drain b0"],
            ),
            (
                "3 pools: lowest priority (3) first",
                3,
                obs(0, three()),
                CFG,
                &["terminate c0 scale_in", "terminate c1 scale_in", "terminate b0 scale_in"],
            ),
        ],
    );
}

#[test]
fn within_a_pool_pending_then_idle_terminated_then_busy_drained() {
    // u0: running, its worker has not reported yet (young enough not to be stuck).
    let u0 = InstanceView { age_s: 30.0, activity: Activity::Unknown, ..silent("u0", None) };
    let fleet = || {
        obs(
            0,
            vec![pool("private", 1, 9, vec![busy("b0"), idle("i0"), pending("n0", 10.0), u0.clone(), draining("d0")])],
        )
    };
    run_table(
        "pending, idle, busy",
        vec![
            ("4 → 3: the pending one", 3, fleet(), CFG, &["terminate n0 scale_in"]),
            ("4 → 2: pending, then idle", 2, fleet(), CFG, &["terminate n0 scale_in", "terminate i0 scale_in"]),
            (
                "4 → 1: busy is drained",
                1,
                fleet(),
                CFG,
                &["terminate n0 scale_in", "terminate i0 scale_in", "drain b0"],
            ),
            (
                "4 → 0: unknown is drained too",
                0,
                fleet(),
                CFG,
                &["terminate n0 scale_in", "terminate i0 scale_in", "drain b0", "drain u0"],
            ),
            ("4 → 4: the draining one is left alone", 4, fleet(), CFG, &[]),
        ],
    );
}

#[test]
fn drained_instances_are_terminated() {
    let fleet = || obs(0, vec![pool("private", 1, 9, vec![drained("d0"), busy("b0"), busy("b1")])]);
    run_table(
        "drained → terminated",
        vec![
            ("hold at 2", 2, fleet(), CFG, &["terminate d0 drained"]),
            ("grow to 3: drained is not capacity", 3, fleet(), CFG, &["terminate d0 drained", "launch private 1"]),
            ("shrink to 1", 1, fleet(), CFG, &["terminate d0 drained", "drain b0"]),
        ],
    );
}

#[test]
fn stuck_instances_are_terminated_and_replaced() {
    let with = |extra: InstanceView| obs(3, vec![pool("private", 1, 9, vec![extra, busy("b0"), busy("b1")])]);
    run_table(
        "stuck",
        vec![
            (
                "pending past boot timeout",
                3,
                with(pending("x", 301.0)),
                CFG,
                &["terminate x boot_timeout", "launch private 1"],
            ),
            ("pending within boot timeout", 3, with(pending("x", 299.0)), CFG, &[]),
            (
                "heartbeat too old",
                3,
                with(silent("x", Some(61.0))),
                CFG,
                &["terminate x no_heartbeat", "launch private 1"],
            ),
            ("heartbeat just in time", 3, with(silent("x", Some(60.0))), CFG, &[]),
            (
                "never reported past boot + heartbeat timeout",
                3,
                with(InstanceView { age_s: 361.0, ..silent("x", None) }),
                CFG,
                &["terminate x no_heartbeat", "launch private 1"],
            ),
            (
                "never reported, still booting its worker",
                3,
                with(InstanceView { age_s: 359.0, ..silent("x", None) }),
                CFG,
                &[],
            ),
            (
                "draining but silent",
                2,
                with(InstanceView { heartbeat_age_s: Some(61.0), ..draining("x") }),
                CFG,
                &["terminate x no_heartbeat"],
            ),
            // An error instance is not capacity, so desired 3 already asks for one more.
            ("error state", 3, with(error("x")), CFG, &["terminate x error_state", "launch private 1"]),
            (
                "replacement capped: stopping still counts",
                3,
                with(pending("x", 301.0)),
                PlannerConfig { max_instances: 3, ..CFG },
                &["terminate x boot_timeout", "note: 1 instances short"],
            ),
            (
                "replacement bursts past a full quota",
                5,
                obs(3, hybrid([vec![pending("x", 301.0)], many("a", 4, busy)].concat(), vec![])),
                CFG,
                &["terminate x boot_timeout", "launch public 1"],
            ),
            (
                "stuck during a scale-in is not replaced",
                1,
                obs(0, vec![pool("private", 1, 9, vec![pending("x", 301.0), idle("i0"), idle("i1")])]),
                CFG,
                &["terminate x boot_timeout", "terminate i0 scale_in"],
            ),
            (
                "stopping is never stuck",
                2,
                with(InstanceView { heartbeat_age_s: None, age_s: 9999.0, ..stopping("x") }),
                CFG,
                &[],
            ),
        ],
    );
}
