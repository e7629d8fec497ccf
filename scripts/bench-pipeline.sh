#!/usr/bin/env bash
# Benchmarks the whole detection pipeline over HTTP: Skyburst (`skyburst up`, 2 workers x 1
# detector thread; front end + SQLite queue + filesystem store) against a reference service
# built the way the seed systems build theirs (Flask under gunicorn, 2 workers x 1 thread,
# OpenCV DNN on the same yolov3-tiny files, the same JSON API: scripts/bench/reference_service.py).
# Both run on this machine at the same time, but are loaded one after the other.
#
# What it measures, per service, concurrency level (default 1, 4, 16) and round (default 3), with
# `skyburst load --mode json` as the client for both:
#   - end-to-end images/s (200 answers / wall time of the run, the client's start-up of a few ms
#     included) and client latency p50 / p95; the report gives the median over rounds;
#   - at concurrency 1, the per-job overhead = latency - the detector time the answer reports
#     (preprocess + inference + postprocess), pooled over all rounds. For Skyburst that is
#     queue + store + HTTP + JSON and base64; the issue's bar is p50 <= 5 ms on loopback;
#   - CPU ms per answered image by role (utime + stime from /proc/PID/stat of every process of
#     the service under test, read around each timed run: Skyburst's `up`, `serve` and `worker`
#     processes, gunicorn's `master` and `worker`s; and the client's own, via /usr/bin/time
#     when it exists);
#   - the Skyburst / reference ratios of images/s and latency at each level, taken per round
#     (same round, same level) and then the median over rounds, and the acceptance bar at
#     concurrency 4 and 16: images/s ratio >= 1.3 and p95 ratio <= 1.0.
#
#   scripts/bench-pipeline.sh                               # ~2 min on a quiet 2-vCPU box, plus the build
#   REQUESTS=16 CONCURRENCY="1 4" ROUNDS=1 scripts/bench-pipeline.sh   # quick look
#   BENCH_SKYBURST_BIN=target/release/skyburst scripts/bench-pipeline.sh   # skip the cargo build
#
# Environment:
#   REQUESTS      timed requests per (service, concurrency, round) run; default 64
#   CONCURRENCY   space-separated levels; default "1 4 16" (the overhead figure needs 1)
#   ROUNDS        times the whole levels x services loop runs; default 3 (the acceptance bars are
#                 medians over interleaved rounds measured in one run: use 3 or more)
#   WARMUP        untimed requests at concurrency 2 before each run; default 8
#   BENCH_SKYBURST_BIN  a built skyburst binary; default: `cargo build --release --locked --bin
#                 skyburst` (release profile, default features, as scripts/run.sh builds it)
#   BENCH_CARGO_FLAGS  extra cargo build flags, e.g. "--features cloud"
#   BENCH_VENV, MODEL_DIR, IMAGE_DIR   as in scripts/bench-detector.sh
#
# Steps: pinned Python venv (scripts/bench/setup-python.sh), model files and images
# (scripts/fetch-assets.sh), the build, both services on free loopback ports, then per round and
# level both services in turn (who goes first alternates between consecutive levels and, at each
# level, between consecutive rounds), then the report (scripts/bench/bench_pipeline.py).
# Results: bench-out/pipeline.json and, in bench-out/pipeline/ (gitignored), runs.tsv (one row
# per timed run), the raw per-request CSVs and client summaries (SERVICE-cLEVEL-rROUND.{csv,txt}),
# cpu.tsv (CPU ms per role and run) and memory.tsv (peak RSS per process).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/skyburst"
export BENCH_VENV="${BENCH_VENV:-$cache/bench-venv}"
export MODEL_DIR="${MODEL_DIR:-$cache/models}"
export IMAGE_DIR="${IMAGE_DIR:-$cache/images}"
requests="${REQUESTS:-64}"
levels="${CONCURRENCY:-1 4 16}"
warmup="${WARMUP:-8}"
rounds="${ROUNDS:-3}"
py="$BENCH_VENV/bin/python"
out="$root/bench-out/pipeline"

# shellcheck source=scripts/lib/usage.sh
. "$root/scripts/lib/usage.sh"
env_script_args "${BASH_SOURCE[0]}" "$@"
# shellcheck disable=SC2086 # $levels is a list of levels
whole_numbers "REQUESTS, WARMUP, ROUNDS and CONCURRENCY" "$requests" "$warmup" "$rounds" $levels
for n in "$requests" "$rounds" $levels; do
  if [ "$n" -lt 1 ]; then echo "error: REQUESTS, ROUNDS and every CONCURRENCY level must be >= 1" >&2; exit 64; fi
done
if [ -z "${levels// /}" ]; then
  echo "error: CONCURRENCY lists no level" >&2
  exit 64
fi
rounds=$((10#$rounds)) # "08" is not octal in the loop below

# Relative to where the script was started, before the cd below.
if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then BENCH_SKYBURST_BIN="$(realpath -m "$BENCH_SKYBURST_BIN")"; fi

"$root/scripts/bench/setup-python.sh"
"$root/scripts/fetch-assets.sh"
cd "$root"

if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then
  bin="$BENCH_SKYBURST_BIN"
else
  echo "building: cargo build --release --locked --bin skyburst ${BENCH_CARGO_FLAGS:-}"
  # cargo reports where the binary went (CARGO_TARGET_DIR and build.target-dir included);
  # stdout carries its JSON messages, stderr the progress and rendered diagnostics.
  # shellcheck disable=SC2086 # BENCH_CARGO_FLAGS is a word list on purpose
  bin="$(cargo build --release --locked --bin skyburst ${BENCH_CARGO_FLAGS:-} --message-format=json-render-diagnostics | "$py" -c '
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

# shellcheck disable=SC2317 # run by the EXIT trap, which shellcheck does not follow
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

# One line per process in PID's tree: pid, role, VmRSS kB, VmHWM kB, utime + stime in clock ticks
# (/proc/PID/stat fields 14 and 15, all threads). The role is the subcommand in argv for
# Skyburst (`up`, `serve`, `worker`, `controller`); for gunicorn, PID itself is the `master` and
# the rest are `worker`s.
proc_tree() { # proc_tree PID
  "$py" - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
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
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks = int(stat[11]) + int(stat[12])  # fields 14 and 15; field 3 (state) is stat[0]
    except (OSError, ValueError, IndexError):
        continue
    kib = lambda key: int(status.get(key, "0 kB").split()[0])
    roles = [a for a in argv if a in ("up", "serve", "worker", "controller")]
    role = roles[-1] if roles else ("master" if pid == root else "worker")
    print(f"{pid}\t{role}\t{kib('VmRSS')}\t{kib('VmHWM')}\t{ticks}")
PY
}

# CPU ms per role between two proc_tree snapshots: role, processes, ms. A process that started
# during the run counts from zero; one that exited during it is lost (neither happens with a
# fixed fleet). Resolution: one clock tick (10 ms at 100 Hz) per process.
cpu_delta() { # cpu_delta BEFORE AFTER
  awk -F'\t' -v OFS='\t' -v hz="$clk_tck" '
    FILENAME == ARGV[1] { before[$1] = $5; next }
    { d = $5 - (($1 in before) ? before[$1] : 0); if (d < 0) d = 0; ms[$2] += d * 1000 / hz; n[$2]++ }
    END { for (r in ms) printf "%s\t%d\t%.0f\n", r, n[r], ms[r] }' "$1" "$2" | sort
}

clk_tck="$(getconf CLK_TCK)"
# The client's own CPU time; GNU time writes "Command exited with non-zero status N" before the
# format line when the load fails, so only the last line is read.
timer=() client_cpu="not recorded (no /usr/bin/time)"
if [ -x /usr/bin/time ]; then
  timer=(/usr/bin/time -f '%U %S' -o "$tmp/client-time") client_cpu="/usr/bin/time, in 10 ms steps"
else
  echo "note: no /usr/bin/time (apt-get install time); the client's CPU time is not recorded"
fi

manifest="$out/runs.tsv"
printf 'round\tservice\tconcurrency\trequests\twall_s\trc\tcsv\n' >"$manifest"
cpu_tsv="$out/cpu.tsv"
printf 'round\tservice\tconcurrency\trole\tprocesses\tcpu_ms\n' >"$cpu_tsv"
failed=0
for ((r = 1; r <= rounds; r++)); do
  i=0
  for c in $levels; do
    # Who goes first alternates between consecutive levels and, at each level, between
    # consecutive rounds, so neither always runs first or right after the other's load.
    if (((r + i) % 2)); then order="skyburst reference"; else order="reference skyburst"; fi
    i=$((i + 1))
    for svc in $order; do
      if [ "$svc" = skyburst ]; then url=$sky_url pid=$sky_pid; else url=$ref_url pid=$ref_pid; fi
      if [ "$warmup" -gt 0 ]; then
        "$bin" load --url "$url" --images "$IMAGE_DIR" --requests "$warmup" --concurrency 2 --mode json \
          --csv "$tmp/warmup.csv" >"$tmp/warmup.txt" 2>&1 || {
          echo "error: warm-up against $svc failed" >&2
          show_log "$tmp/warmup.txt"
          failed=1
        }
      fi
      name="$svc-c$c-r$r"
      csv="$out/$name.csv"
      echo "run: round $r/$rounds, $svc, concurrency $c, $requests requests"
      rm -f "$tmp/client-time"
      proc_tree "$pid" >"$tmp/cpu-before" || true
      rc=0
      t0=$(date +%s.%N)
      ${timer[@]+"${timer[@]}"} "$bin" load --url "$url" --images "$IMAGE_DIR" --requests "$requests" \
        --concurrency "$c" --mode json --csv "$csv" >"$out/$name.txt" 2>&1 || rc=$?
      t1=$(date +%s.%N)
      proc_tree "$pid" >"$tmp/cpu-after" || true
      wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
      if [ "$rc" -ne 0 ]; then
        echo "error: load against $svc at concurrency $c (round $r) exited with status $rc" >&2
        show_log "$out/$name.txt"
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$svc" "$c" "$requests" "$wall" "$rc" "$csv" >>"$manifest"
      cpu_delta "$tmp/cpu-before" "$tmp/cpu-after" | sed "s/^/$r\t$svc\t$c\t/" >>"$cpu_tsv"
      if [ -s "$tmp/client-time" ]; then
        tail -n 1 "$tmp/client-time" | awk -v OFS='\t' -v p="$r\t$svc\t$c" \
          'NF == 2 && $1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9.]+$/ { printf "%s\tclient\t1\t%.0f\n", p, ($1 + $2) * 1000 }' \
          >>"$cpu_tsv"
      fi
    done
  done
done

# Resident memory of each service's processes after the load (VmRSS now, VmHWM peak), in MiB:
# the fleet's cost per worker beside the detector's speed (~370 MB per gunicorn worker).
memory() { # memory NAME PID
  proc_tree "$2" | awk -F'\t' -v n="$1" '{ printf "%s\t%s\t%s\t%.0f\t%.0f\n", n, $1, $2, $3 / 1024, $4 / 1024 }'
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
"$py" "$root/scripts/bench/bench_pipeline.py" --manifest "$manifest" --cpu "$cpu_tsv" --out "$root/bench-out/pipeline.json" \
  --meta "commit=$commit" --meta "skyburst=$bin up --workers 2 (1 detector thread each), $sky_url" \
  --meta "reference=gunicorn --workers 2 --threads 1, Flask, OpenCV $("$py" -c 'import cv2; print(cv2.__version__)') DNN, $ref_url" \
  --meta "client=skyburst load --mode json, $requests requests per run, warm-up $warmup at concurrency 2 before each, $rounds rounds" \
  --meta "cpu=utime + stime of each service process from /proc/PID/stat at $clk_tck ticks/s; client: $client_cpu" \
  --meta "images=$IMAGE_DIR" --meta "skyburst_exit_after_sigterm=$sky_rc" \
  --meta "peak_rss_mib_skyburst_worker=$(rss_of skyburst worker)" \
  --meta "peak_rss_mib_skyburst_serve=$(rss_of skyburst serve)" \
  --meta "peak_rss_mib_reference_worker=$(rss_of reference worker)" || report_rc=$?
if [ "$failed" -ne 0 ] && [ "$report_rc" -eq 0 ]; then report_rc=1; fi
exit "$report_rc"
