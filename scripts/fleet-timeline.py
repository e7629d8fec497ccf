#!/usr/bin/env python3
"""Watches a Skyburst fleet through a burst, prints its timeline and checks its order.

    scripts/fleet-timeline.py --url URL --while-pid PID [--since-ms MS] [--private NAME]
                              [--public NAME] [--settle-seconds 90] [--failures FILE]

scripts/run.sh runs it beside the `skyburst load --trace` that sends the demo's burst. It polls
GET URL/api/fleet twice a second while process PID runs, then until the public pool takes no
jobs and the private pool is back to what it had at the start (at most --settle-seconds after
PID has ended). It prints one line per change of the fleet: seconds since the burst began
(--since-ms, ms since the Unix epoch; default: now), the backlog, the instances of each pool,
and the actions of the controller's decisions since the line before (those taken since the
burst began). Then it checks, from what it saw, that:

  - the burst reached the public pool;
  - the public pool took jobs only while the private pool was full;
  - the public pool was released first: the private pool never shrank while a public instance
    still took jobs, and no decision released a private instance before a public one;
  - the public pool took no jobs any more at the end.

Exit 0 if every check holds. Otherwise it names each failed check, writes them one per line
to --failures FILE, and exits 1. Exit 2 on bad arguments or when /api/fleet cannot be read.
Only the Python 3 standard library.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

POLL_SECONDS = 0.5
# Consecutive failed reads of /api/fleet before giving up (10 s).
MAX_READ_FAILURES = 20


def give_up(message):
    """Exit 2: the watch itself could not be done."""
    print(f"fleet-timeline: {message}", file=sys.stderr)
    sys.exit(2)


def read_fleet(url):
    """GET /api/fleet, or None when it cannot be read this time."""
    try:
        with urllib.request.urlopen(url + "/api/fleet", timeout=5) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def running(pid):
    """Whether PID runs: a child that has exited stays a zombie until its parent waits for it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pool_counts(pool):
    """What one pool's instances are doing, and how many take jobs and count toward its quota."""
    counts = {"running": 0, "booting": 0, "draining": 0, "stopping": 0, "failed": 0}
    for instance in pool["instances"]:
        state, activity = instance["state"], instance["activity"]
        if state == "running" and activity in ("draining", "drained"):
            counts["draining"] += 1
        elif state == "running":
            counts["running"] += 1
        elif state == "pending":
            counts["booting"] += 1
        elif state == "stopping":
            counts["stopping"] += 1
        else:
            counts["failed"] += 1
    counts["capacity"] = counts["running"] + counts["booting"]
    counts["occupied"] = len(pool["instances"])
    counts["quota"] = pool["quota"]
    return counts


def describe(counts):
    """`2 running, 1 booting`, or `-` for an empty pool."""
    words = [f"{counts[k]} {k}" for k in ("running", "booting", "draining", "stopping", "failed") if counts[k]]
    return ", ".join(words) or "-"


def action_key(action):
    """(verb, pool, why) of one action of a decision."""
    reason = action.get("reason")
    if isinstance(reason, dict):
        reason = "stuck: " + ", ".join(str(v) for v in reason.values())
    return action["action"], action["pool"], (reason or "").replace("_", "-")


def summarize_actions(decisions):
    """`launch private ×1, launch public ×2`: the decisions' actions, runs of the same grouped."""
    groups = []
    for decision in decisions:
        for action in decision["plan"]["actions"]:
            key = action_key(action)
            count = action.get("count", 1)
            if groups and groups[-1][0] == key:
                groups[-1][1] += count
            else:
                groups.append([key, count])
    return ", ".join(f"{verb} {pool} ×{n}" + (f" ({why})" if why else "") for (verb, pool, why), n in groups)


def released_private_first(decision, private, public):
    """Whether one decision's scale-in released a private instance before a public one."""
    order = [
        a["pool"]
        for a in decision["plan"]["actions"]
        if a["action"] == "drain" or (a["action"] == "terminate" and a.get("reason") == "scale_in")
    ]
    return private in order and public in order and order.index(private) < len(order) - order[::-1].index(public) - 1


class Watch:
    """The samples and decisions seen, and the timeline printed from them."""

    def __init__(self, private, public, since_ms):
        self.private, self.public = private, public
        self.samples = []  # (t, backlog, {pool: counts})
        self.decisions = []  # (t, decision), each once
        self.last_decision_ms = since_ms
        self.last_line = None
        self.since_ms = since_ms

    def look(self, fleet):
        t = time.time() - self.since_ms / 1000
        pools = {p["name"]: pool_counts(p) for p in fleet["observation"]["pools"]}
        for name in (self.private, self.public):
            if name not in pools:
                give_up(f"no pool {name!r} in /api/fleet (pools: {', '.join(pools)}); pass --private and --public")
        new = [d for d in fleet["decisions"] if d["at_ms"] > self.last_decision_ms]
        self.last_decision_ms = max([self.last_decision_ms] + [d["at_ms"] for d in new])
        self.decisions.extend((d["at_ms"] / 1000 - self.since_ms / 1000, d) for d in new)
        backlog = fleet["observation"]["backlog"]
        self.samples.append((t, backlog, pools))
        self.print_line(t, backlog, pools, [d for d in new if d["plan"]["actions"]])

    def print_line(self, t, backlog, pools, acting):
        shape = (describe(pools[self.private]), describe(pools[self.public]))
        if shape == self.last_line and not acting:
            return
        if self.last_line is None:
            heads = [f"{name} (quota {pools[name]['quota']})" for name in (self.private, self.public)]
            print(f"  {'t':>6}  {'backlog':>7}  {heads[0]:<24} {heads[1]:<24} actions", flush=True)
        self.last_line = shape
        line = f"  {t:5.1f}s  {backlog:>7}  {shape[0]:<24} {shape[1]:<24} {summarize_actions(acting)}"
        print(line.rstrip(), flush=True)

    def settled(self):
        """The public pool takes no jobs and the private pool is back to its start."""
        first, last = self.samples[0][2], self.samples[-1][2]
        return last[self.public]["capacity"] == 0 and last[self.private]["capacity"] <= first[self.private]["capacity"]

    def summary(self):
        peak_t, peak_backlog, _ = max(self.samples, key=lambda s: s[1])
        used = [t for t, _, pools in self.samples if pools[self.public]["capacity"] > 0]
        line = f"  peak backlog {peak_backlog} at {peak_t:.1f} s"
        if used:
            line += f"; {self.public} took jobs from {used[0]:.1f} s to {used[-1]:.1f} s"
        print(line)

    def failures(self):
        """The failed checks, in words."""
        private, public = self.private, self.public
        failed = []
        if not any(pools[public]["capacity"] > 0 for _, _, pools in self.samples):
            peak = max(pools[private]["capacity"] for _, _, pools in self.samples)
            backlog = max(b for _, b, _ in self.samples)
            failed.append(
                f"the burst never reached the {public} pool (peak backlog {backlog}, {private} peaked at {peak})"
            )
        for t, _, pools in self.samples:
            p, q = pools[private], pools[public]
            if q["capacity"] > 0 and p["occupied"] < p["quota"]:
                failed.append(
                    f"{public} took jobs at {t:.1f} s while {private} held {p['occupied']} of its {p['quota']}"
                )
                break
        used = False
        for t, _, pools in self.samples:
            p, q = pools[private], pools[public]
            used = used or q["capacity"] > 0
            if used and p["capacity"] < p["quota"] and q["capacity"] > 0:
                failed.append(
                    f"{private} shrank to {p['capacity']} at {t:.1f} s while {public} still had "
                    f"{q['capacity']} taking jobs"
                )
                break
        for t, decision in self.decisions:
            if released_private_first(decision, private, public):
                failed.append(f"the decision at {t:.1f} s released {private} before {public}")
                break
        last = self.samples[-1]
        if last[2][public]["capacity"] > 0:
            failed.append(f"{public} still had {last[2][public]['capacity']} taking jobs at the end ({last[0]:.1f} s)")
        return failed


def watch(args):
    """Polls until PID has ended and the fleet has settled (or the settle time has passed)."""
    since_ms = args.since_ms if args.since_ms is not None else int(time.time() * 1000)
    timeline = Watch(args.private, args.public, since_ms)
    ended = None
    read_failures = 0
    while True:
        fleet = read_fleet(args.url)
        if fleet is None:
            read_failures += 1
            if read_failures >= MAX_READ_FAILURES:
                give_up(f"cannot read {args.url}/api/fleet for 10 s (is the controller running?)")
        else:
            read_failures = 0
            timeline.look(fleet)
        if ended is None and not running(args.while_pid):
            ended = time.monotonic()
        if ended is not None and timeline.samples and timeline.settled():
            break
        if ended is not None and time.monotonic() - ended > args.settle_seconds:
            break
        time.sleep(POLL_SECONDS)
    return timeline


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="the front end, e.g. http://127.0.0.1:8080")
    parser.add_argument("--while-pid", type=int, required=True, help="watch while this process runs")
    parser.add_argument("--since-ms", type=int, help="when the burst began, ms since the epoch (default: now)")
    parser.add_argument("--private", default="private", help="the pool that fills first")
    parser.add_argument("--public", default="public", help="the pool the controller bursts to")
    parser.add_argument("--settle-seconds", type=float, default=90.0, help="most to wait after PID ends")
    parser.add_argument("--failures", help="write the failed checks here, one per line")
    args = parser.parse_args()
    if not 0 < args.settle_seconds <= 3600:
        parser.error("--settle-seconds must be in (0, 3600]")
    if args.since_ms is not None and abs(args.since_ms / 1000 - time.time()) > 3600:
        parser.error("--since-ms must be within an hour of now (ms since the Unix epoch)")
    timeline = watch(args)
    timeline.summary()
    failed = timeline.failures()
    if args.failures:
        with open(args.failures, "w", encoding="utf-8") as out:
            out.writelines(f + "\n" for f in failed)
    for f in failed:
        print(f"fleet-timeline: check failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: scripts/run.sh stops everything; no traceback
