#!/usr/bin/env bash
# What a change costs per job: two embedded deployments (`skyburst up --workers 1`), one from a
# baseline binary (BASELINE_BIN, e.g. a release build of the commit before the change) and one
# from this checkout's release build, loaded one after the other at concurrency 1 with
# `skyburst load --mode json`, in interleaved rounds (who goes first alternates). Per job,
# overhead = client latency - the detector time the answer reports; each round gives both
# builds' p50 overhead, and the report lists every round and the median over rounds of
# current - baseline. Used for the durability change (fsynced store writes and synchronous=FULL
# on the queue): docs/benchmarks.md.
#
#   BASELINE_BIN=/tmp/skyburst-before scripts/bench-ab.sh
#   ROUNDS=3 REQUESTS=32 BASELINE_BIN=... scripts/bench-ab.sh      # quick look
#
# Environment: BASELINE_BIN (required), BENCH_SKYBURST_BIN (the current build; default: cargo
# build --release --locked), REQUESTS (timed requests per run, default 64), ROUNDS (default 5),
# WARMUP (untimed requests per build first, default 8). Results: bench-out/ab.json; raw CSVs in
# bench-out/ab/.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/bench-up.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench-up.sh"
bench_settings "$@"
if [ -z "${BASELINE_BIN:-}" ] || [ ! -x "$BASELINE_BIN" ]; then
  echo "error: set BASELINE_BIN to a built skyburst binary to compare with" >&2
  exit 64
fi
BASELINE_BIN="$(realpath -m "$BASELINE_BIN")"
bench_binary
out="$root/bench-out/ab"
rm -rf "$out" && mkdir -p "$out"
bench_cleanup_on_exit
url_baseline="" url_current=""

bench_start baseline "$BASELINE_BIN"
bench_start current "$bin"
echo "baseline: $url_baseline  current: $url_current"
# The current build's client loads both.
for name in baseline current; do bench_load "$name" "$warmup" "$tmp/warm-$name.csv"; done
for ((r = 1; r <= rounds; r++)); do
  order=(baseline current)
  [ $((r % 2)) = 0 ] && order=(current baseline)
  for name in "${order[@]}"; do
    bench_load "$name" "$requests" "$out/$name-r$r.csv"
    echo "round $r: $name done"
  done
done

python3 - "$out" "$rounds" <<'PY'
import csv, json, pathlib, platform, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
def overheads(name, r):
    rows = list(csv.DictReader(open(out / f"{name}-r{r}.csv")))
    bad = [row for row in rows if row["status"] != "200" or not row["detector_ms"]]
    if bad:
        sys.exit(f"error: {name} round {r}: {len(bad)} requests failed: {bad[0]}")
    return [float(row["latency_ms"]) - float(row["detector_ms"]) for row in rows]
table = []
print(f"CPU: {cpu}, {len([l for l in open('/proc/cpuinfo') if l.startswith('processor')])} vCPU")
print("round  baseline p50 overhead ms  current p50 overhead ms  current - baseline ms")
for r in range(1, rounds + 1):
    b, c = statistics.median(overheads("baseline", r)), statistics.median(overheads("current", r))
    table.append({"round": r, "baseline_p50_ms": b, "current_p50_ms": c, "added_ms": c - b})
    print(f"{r:5}  {b:24.3f}  {c:23.3f}  {c - b:21.3f}")
added = statistics.median(row["added_ms"] for row in table)
base = statistics.median(row["baseline_p50_ms"] for row in table)
cur = statistics.median(row["current_p50_ms"] for row in table)
print(f"median over rounds: baseline {base:.3f} ms, current {cur:.3f} ms, added {added:+.3f} ms per job "
      f"(ratio {cur / base:.2f})")
summary = {"cpu": cpu, "rounds": table, "median_added_ms": added, "median_baseline_ms": base, "median_current_ms": cur}
(out.parent / "ab.json").write_text(json.dumps(summary, indent=2) + "\n")
PY
