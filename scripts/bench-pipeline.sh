#!/usr/bin/env bash
# Benchmarks the whole detection pipeline over HTTP: Skyburst (`skyburst up`, 2 workers x 1
# detector thread; front end + SQLite queue + filesystem store) against a reference service
# built the way the seed systems build theirs (Flask under gunicorn, 2 workers x 1 thread,
# OpenCV DNN on the same yolov3-tiny files, the same JSON API: scripts/bench/reference_service.py).
# Both run on this machine at the same time, but are loaded one after the other.
#
# What it measures, per service and per concurrency level (default 1, 4, 16), with
# `skyburst load --mode json` as the client for both:
#   - end-to-end images/s (200 answers / wall time of the run, the client's start-up of a few ms
#     included) and client latency p50 / p95;
#   - at concurrency 1, the per-job overhead = latency - the detector time the answer reports
#     (preprocess + inference + postprocess). For Skyburst that is queue + store + HTTP + JSON
#     and base64; the issue's bar is p50 <= 5 ms on loopback;
#   - the Skyburst / reference ratios of images/s and latency at each level.
#
#   scripts/bench-pipeline.sh                               # ~1 min on a quiet 2-vCPU box, plus the build
#   REQUESTS=16 CONCURRENCY="1 4" scripts/bench-pipeline.sh   # quick look
#   BENCH_SKYBURST_BIN=target/debug/skyburst scripts/bench-pipeline.sh   # skip the cargo build
#
# Environment:
#   REQUESTS      timed requests per (service, concurrency) run; default 64
#   CONCURRENCY   space-separated levels; default "1 4 16" (the overhead figure needs 1)
#   WARMUP        untimed requests at concurrency 2 before each run; default 8
#   BENCH_SKYBURST_BIN  a built skyburst binary; default: `cargo build --locked --bin skyburst` (dev
#                 profile, default features, as scripts/run.sh builds it)
#   BENCH_CARGO_FLAGS  extra cargo build flags, e.g. "--features cloud" to reuse the test build
#   BENCH_VENV, MODEL_DIR, IMAGE_DIR   as in scripts/bench-detector.sh
#
# Steps: pinned Python venv (scripts/bench/setup-python.sh), model files and images
# (scripts/fetch-assets.sh), the build, both services on free loopback ports, then per level
# both services in turn (the order alternates between levels), then the report
# (scripts/bench/bench_pipeline.py). Results: bench-out/pipeline.json and the raw per-request
# CSVs, client summaries and memory.tsv (peak RSS per process) in bench-out/pipeline/ (gitignored).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/skyburst"
export BENCH_VENV="${BENCH_VENV:-$cache/bench-venv}"
export MODEL_DIR="${MODEL_DIR:-$cache/models}"
export IMAGE_DIR="${IMAGE_DIR:-$cache/images}"
requests="${REQUESTS:-64}"
levels="${CONCURRENCY:-1 4 16}"
warmup="${WARMUP:-8}"
py="$BENCH_VENV/bin/python"
out="$root/bench-out/pipeline"

case "${1:-}" in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 (settings come from the environment; --help lists them)" >&2; exit 64 ;;
esac
for n in "$requests" "$warmup" $levels; do
  case "$n" in '' | *[!0-9]*) echo "error: REQUESTS, WARMUP and CONCURRENCY must be whole numbers" >&2; exit 64 ;; esac
done
for n in "$requests" $levels; do
  if [ "$n" -lt 1 ]; then echo "error: REQUESTS and every CONCURRENCY level must be >= 1" >&2; exit 64; fi
done
if [ -z "${levels// /}" ]; then
  echo "error: CONCURRENCY lists no level" >&2
  exit 64
fi

# Relative to where the script was started, before the cd below.
if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then BENCH_SKYBURST_BIN="$(realpath -m "$BENCH_SKYBURST_BIN")"; fi

"$root/scripts/bench/setup-python.sh"
"$root/scripts/fetch-assets.sh"
cd "$root"

if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then
  bin="$BENCH_SKYBURST_BIN"
else
  echo "building: cargo build --locked --bin skyburst ${BENCH_CARGO_FLAGS:-}"
  # cargo reports where the binary went (CARGO_TARGET_DIR and build.target-dir included);
  # stdout carries its JSON messages, stderr the progress and rendered diagnostics.
  # shellcheck disable=SC2086 # BENCH_CARGO_FLAGS is a word list on purpose
  bin="$(cargo build --locked --bin skyburst ${BENCH_CARGO_FLAGS:-} --message-format=json-render-diagnostics | "$py" -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "skyburst":
        exe = msg["executable"]
print(exe)')"
fi
if [ ! -x "$bin" ]; then
  echo "error: no skyburst binary (got '${bin}')" >&2
  exit 1
fi

tmp="$(mktemp -d)"
sky_pid="" ref_pid=""

# Sends SIGTERM, waits up to 30 s, then SIGKILL; leaves the exit status in $stopped_rc. Not in
# a $(...) subshell: only this shell can `wait` for its children.
stopped_rc=0
stop() { # pid
  local pid=$1 i
  stopped_rc=0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      # A child that has exited stays a zombie (kill -0 succeeds) until it is waited for.
      if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then break; fi
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
      echo "warning: pid $pid ignored SIGTERM for 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || stopped_rc=$?
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$sky_pid" ]; then stop "$sky_pid"; fi
  if [ -n "$ref_pid" ]; then stop "$ref_pid"; fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls URL until it answers 200; fails early when PID dies. Args: url pid seconds log.
wait_http() {
  "$py" - "$@" <<'PY'
import os, sys, time, urllib.request
url, pid, limit, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        if urllib.request.urlopen(url, timeout=2).status == 200:
            sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        if open(f"/proc/{pid}/stat").read().split(") ", 1)[1].startswith("Z"):
            raise ProcessLookupError
    except (ProcessLookupError, FileNotFoundError):
        sys.exit(f"error: the service behind {url} exited; see {log}")
    time.sleep(0.2)
sys.exit(f"error: {url} did not answer 200 within {limit:g} s; see {log}")
PY
}

show_log() { # file
  echo "--- last lines of $1:" >&2
  tail -n 30 "$1" >&2 || true
}

rm -rf "$out"
mkdir -p "$out"

# Skyburst: a fixed fleet of 2 workers, 1 detector thread each (the controller is off).
echo "starting: skyburst up --workers 2 --port 0"
RUST_LOG=warn SKYBURST_DETECTOR__MODEL_DIR="$MODEL_DIR" SKYBURST_DETECTOR__THREADS=1 \
  "$bin" up --workers 2 --port 0 --data-dir "$tmp/data" >"$out/skyburst.stdout" 2>"$out/skyburst.stderr" &
sky_pid=$!
sky_url=""
for ((i = 0; i < 600; i++)); do
  sky_url="$(grep -o -m1 'http://127\.0\.0\.1:[0-9]\+' "$out/skyburst.stdout" || true)"
  [ -n "$sky_url" ] && break
  if ! kill -0 "$sky_pid" 2>/dev/null; then
    echo "error: skyburst up exited before printing its URL" >&2
    show_log "$out/skyburst.stderr"
    exit 1
  fi
  sleep 0.1
done
if [ -z "$sky_url" ]; then
  echo "error: skyburst up printed no http://127.0.0.1:PORT line within 60 s" >&2
  show_log "$out/skyburst.stderr"
  exit 1
fi
wait_http "$sky_url/readyz" "$sky_pid" 120 "$out/skyburst.stderr" || { show_log "$out/skyburst.stderr"; exit 1; }
echo "skyburst: ready at $sky_url"

# Reference: gunicorn, 2 sync workers x 1 thread, each loading its own OpenCV network.
ref_port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ref_url="http://127.0.0.1:$ref_port"
echo "starting: gunicorn --workers 2 --threads 1 reference_service:app"
OMP_NUM_THREADS=1 "$BENCH_VENV/bin/gunicorn" --chdir "$root/scripts/bench" --workers 2 --threads 1 \
  --bind "127.0.0.1:$ref_port" --timeout 120 --log-level warning reference_service:app \
  >"$out/reference.log" 2>&1 &
ref_pid=$!
wait_http "$ref_url/healthz" "$ref_pid" 120 "$out/reference.log" || { show_log "$out/reference.log"; exit 1; }
echo "reference: ready at $ref_url"

manifest="$out/runs.tsv"
printf 'service\tconcurrency\trequests\twall_s\trc\tcsv\n' >"$manifest"
failed=0
order="skyburst reference"
for c in $levels; do
  for svc in $order; do
    if [ "$svc" = skyburst ]; then url=$sky_url; else url=$ref_url; fi
    if [ "$warmup" -gt 0 ]; then
      "$bin" load --url "$url" --images "$IMAGE_DIR" --requests "$warmup" --concurrency 2 --mode json \
        --csv "$tmp/warmup.csv" >"$tmp/warmup.txt" 2>&1 || {
        echo "error: warm-up against $svc failed" >&2
        show_log "$tmp/warmup.txt"
        failed=1
      }
    fi
    csv="$out/$svc-c$c.csv"
    echo "run: $svc, concurrency $c, $requests requests"
    rc=0
    t0=$(date +%s.%N)
    "$bin" load --url "$url" --images "$IMAGE_DIR" --requests "$requests" --concurrency "$c" --mode json \
      --csv "$csv" >"$out/$svc-c$c.txt" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    if [ "$rc" -ne 0 ]; then
      echo "error: load against $svc at concurrency $c exited with status $rc" >&2
      show_log "$out/$svc-c$c.txt"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$svc" "$c" "$requests" "$wall" "$rc" "$csv" >>"$manifest"
  done
  # Alternate who goes first, so neither always runs right after the other's load.
  if [ "$order" = "skyburst reference" ]; then order="reference skyburst"; else order="skyburst reference"; fi
done

# Resident memory of each service's processes after the load (VmRSS now, VmHWM peak), in MiB:
# the fleet's cost per worker beside the detector's speed (~370 MB per gunicorn worker).
memory() { # memory NAME PID
  "$py" - "$1" "$2" <<'PY'
import os, sys
name, root = sys.argv[1], int(sys.argv[2])
children = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        continue
    children.setdefault(ppid, []).append(int(pid))
todo = [root]
while todo:
    pid = todo.pop()
    todo.extend(children.get(pid, []))
    try:
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
        argv = open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        continue
    mib = lambda key: int(status.get(key, "0 kB").split()[0]) / 1024
    roles = [a for a in argv if a in ("up", "serve", "worker", "controller")]
    role = roles[-1] if roles else ("master" if pid == root else "worker")
    print(f"{name}\t{pid}\t{role}\t{mib('VmRSS'):.0f}\t{mib('VmHWM'):.0f}")
PY
}
printf 'service\tpid\trole\trss_mib\tpeak_mib\n' >"$out/memory.tsv"
memory skyburst "$sky_pid" >>"$out/memory.tsv" || true
memory reference "$ref_pid" >>"$out/memory.tsv" || true
echo "memory after the runs (MiB):"
column -t -s $'\t' "$out/memory.tsv" 2>/dev/null || cat "$out/memory.tsv"
rss_of() { # rss_of SERVICE ROLE: the largest peak RSS among those processes
  awk -F'\t' -v s="$1" -v r="$2" '$1 == s && $3 == r && $5 > m { m = $5 } END { print m + 0 }' "$out/memory.tsv"
}

# Both services stop here (the trap is the fallback): SIGTERM, then wait for a clean exit.
stop "$sky_pid"; sky_rc=$stopped_rc; sky_pid=""
stop "$ref_pid"; ref_rc=$stopped_rc; ref_pid=""
[ "$sky_rc" = 0 ] || echo "warning: skyburst up exited with status $sky_rc after SIGTERM" >&2
[ "$ref_rc" = 0 ] || echo "warning: gunicorn exited with status $ref_rc after SIGTERM" >&2

commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
report_rc=0
"$py" "$root/scripts/bench/bench_pipeline.py" --manifest "$manifest" --out "$root/bench-out/pipeline.json" \
  --meta "commit=$commit" --meta "skyburst=$bin up --workers 2 (1 detector thread each), $sky_url" \
  --meta "reference=gunicorn --workers 2 --threads 1, Flask, OpenCV $("$py" -c 'import cv2; print(cv2.__version__)') DNN, $ref_url" \
  --meta "client=skyburst load --mode json, $requests requests per run, warm-up $warmup at concurrency 2" \
  --meta "images=$IMAGE_DIR" --meta "skyburst_exit_after_sigterm=$sky_rc" \
  --meta "peak_rss_mib_skyburst_worker=$(rss_of skyburst worker)" \
  --meta "peak_rss_mib_skyburst_serve=$(rss_of skyburst serve)" \
  --meta "peak_rss_mib_reference_worker=$(rss_of reference worker)" || report_rc=$?
if [ "$failed" -ne 0 ] && [ "$report_rc" -eq 0 ]; then report_rc=1; fi
exit "$report_rc"
