#!/usr/bin/env python3
"""Writes the mission traces of examples/traces/ (issue 25's four kinds), sized so that
examples/configs/hybrid.toml (8 private instances, 19 public, 0.14 s jobs: about 7 jobs/s an
instance, 57 on the private cloud) has to burst to the public pool:

  evening-peak.csv  a day, one row a minute: 8.5 jobs/s at night rising to about 113 jobs/s at
                    20:00 (a Gaussian evening peak, 1.45 h wide), each minute's rate times a
                    random 0.9..1.1; about 1.7 M jobs, a fifth of them beyond the private cloud
  flash-crowd.csv   18 000 jobs in 2 minutes (150 jobs/s) on an idle service
  bursts.csv        an hour of 3 000 jobs in 30 s (100 jobs/s) then 1 job/s for 9.5 minutes,
                    six times
  noisy.csv         two hours, one row every 30 s: a random walk of the rate between 5 and 80
                    jobs/s (steps of N(0, 6), reflected at the bounds)

The shapes are calibrated to issue 25's measurements of its four kinds: on these files the three
seed policies give the cost ratios, waits and direction changes that issue measured (docs/simulator.md).

Every count is rounded by largest remainder so each row holds whole jobs and the totals are
exact; the random parts come from one seeded generator, so the files are the same on every run.

  scripts/make-traces.py                 # writes into examples/traces/
  scripts/make-traces.py --out DIR --seed 7
"""

import argparse
import math
import pathlib
import random


def rows_from_rates(rates, step_s):
    """(t, count) rows for per-row rates (jobs/s), whole jobs by largest remainder, plus the
    closing count = 0 row."""
    exact = [r * step_s for r in rates]
    counts = [math.floor(x) for x in exact]
    short = round(sum(exact)) - sum(counts)
    order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[:short]:
        counts[i] += 1
    rows = [(i * step_s, c) for i, c in enumerate(counts)]
    rows.append((len(counts) * step_s, 0))
    return rows


def evening_peak(rng):
    rates = []
    for m in range(24 * 60):
        h = (m + 0.5) / 60
        rate = 8.5 + 105 * math.exp(-(((h - 20) / 1.45) ** 2))
        rates.append(rate * rng.uniform(0.9, 1.1))
    return rows_from_rates(rates, 60)


def flash_crowd(_rng):
    return [(0, 18_000), (120, 0)]


def bursts(_rng):
    rows = []
    for cycle in range(6):
        t = cycle * 600
        rows += [(t, 3_000), (t + 30, 570)]
    rows.append((3600, 0))
    return rows


def noisy(rng):
    rates, rate = [], 30.0
    for _ in range(2 * 3600 // 30):
        rate += rng.gauss(0, 6)
        if rate < 5:
            rate = 10 - rate
        if rate > 80:
            rate = 160 - rate
        rates.append(rate)
    return rows_from_rates(rates, 30)


TRACES = {"evening-peak": evening_peak, "flash-crowd": flash_crowd, "bursts": bursts, "noisy": noisy}


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=root / "examples" / "traces")
    parser.add_argument("--seed", type=int, default=25)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in TRACES.items():
        rows = make(random.Random(f"{args.seed}-{name}"))
        text = "t_seconds,count\n" + "".join(f"{t},{c}\n" for t, c in rows)
        (args.out / f"{name}.csv").write_text(text)
        print(f"{name}.csv: {sum(c for _, c in rows)} jobs over {rows[-1][0]} s")


if __name__ == "__main__":
    main()
