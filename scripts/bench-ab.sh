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
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requests="${REQUESTS:-64}"
rounds="${ROUNDS:-5}"
warmup="${WARMUP:-8}"
case "${1:-}" in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 (settings come from the environment; --help lists them)" >&2; exit 64 ;;
esac
for n in "$requests" "$rounds" "$warmup"; do
  case "$n" in '' | *[!0-9]*) echo "error: REQUESTS, ROUNDS and WARMUP must be whole numbers" >&2; exit 64 ;; esac
done
if [ "$requests" -lt 1 ] || [ "$rounds" -lt 1 ]; then echo "error: REQUESTS and ROUNDS must be >= 1" >&2; exit 64; fi
if [ -z "${BASELINE_BIN:-}" ] || [ ! -x "$BASELINE_BIN" ]; then
  echo "error: set BASELINE_BIN to a built skyburst binary to compare with" >&2
  exit 64
fi
BASELINE_BIN="$(realpath -m "$BASELINE_BIN")"
if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then BENCH_SKYBURST_BIN="$(realpath -m "$BENCH_SKYBURST_BIN")"; fi

"$root/scripts/fetch-assets.sh"
cd "$root"
if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then
  bin="$BENCH_SKYBURST_BIN"
else
  echo "building: cargo build --release --locked --bin skyburst"
  cargo build --release --locked --bin skyburst
  bin="$root/target/release/skyburst"
fi
[ -x "$bin" ] || { echo "error: no skyburst binary at $bin" >&2; exit 1; }

out="$root/bench-out/ab"
rm -rf "$out" && mkdir -p "$out"
tmp="$(mktemp -d)"
pids=()
url_baseline="" url_current=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME BIN: `skyburst up --workers 1` of BIN on a free port; sets url_NAME.
start() {
  local name=$1 program=$2
  mkdir -p "$tmp/$name"
  env RUST_LOG=warn "$program" --data-dir "$tmp/$name" up --workers 1 --port 0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=("$!")
  local i url=""
  for ((i = 0; i < 600; i++)); do
    url=$(grep -o 'https\{0,1\}://127\.0\.0\.1:[0-9]*' "$tmp/$name.out" | head -n1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "error: $name did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
  printf -v "url_$name" '%s' "$url"
}
start baseline "$BASELINE_BIN"
start current "$bin"
echo "baseline: $url_baseline  current: $url_current"

load() { # NAME REQUESTS CSV  (the current build's client for both)
  local name=$1 url
  url="url_$name"
  "$bin" load --url "${!url}" --images "${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/images" --requests "$2" \
    --concurrency 1 --mode json --timeout-seconds 60 --csv "$3" >"$3.txt"
}
for name in baseline current; do load "$name" "$warmup" "$tmp/warm-$name.csv"; done
for ((r = 1; r <= rounds; r++)); do
  order=(baseline current)
  [ $((r % 2)) = 0 ] && order=(current baseline)
  for name in "${order[@]}"; do
    load "$name" "$requests" "$out/$name-r$r.csv"
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
