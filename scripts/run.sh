#!/usr/bin/env bash
# Sets up and runs Skyburst's main job on the embedded default — the README's first command:
#
#   scripts/run.sh [--port PORT] [--workers N] [--smoke]
#
# Installs what is missing, fetches and verifies the model and the two test images, builds the
# release binary, starts `skyburst up` with examples/configs/demo.toml (front end + controller
# scaling two pools of local worker processes, a small `private` one first and a `public` one it
# bursts to; SQLite queue, filesystem store, all under ./skyburst-data; --workers N fixes the
# fleet instead), sends the test images through `skyburst load` in all three API modes, prints
# the per-zone totals, one detection result and the fleet the controller scaled. Then it sends a
# burst (800 images in 10 s, open-loop with `skyburst load --trace`) and prints the fleet's
# timeline while scripts/fleet-timeline.py watches it: private fills, the controller bursts to
# public, and releases public first when the burst is over. It prints the URL and stays in the
# foreground until Ctrl-C. A step that fails stops the demo with its exit status.
#
# --smoke runs the same demo in a fresh ./skyburst-data/smoke (nothing left from an earlier run,
# nothing shared with a demo running from ./skyburst-data), then stops by itself. It exits 0 only
# if every step succeeded: each `skyburst load`, the zones call, the detect call finding at least
# one object, the fleet call, the burst (every image answered; public used only once private was
# full; public released before private and by the end), and `skyburst up` stopping cleanly with
# nothing it started left running. Otherwise it goes on with the other steps, names every failed
# one and exits 1. scripts/test.sh runs it.
#
# The console shows the demo's output and the service's warnings and errors; the full log of
# `skyburst up` and its parts goes to <data>/skyburst.log (printed at the end). However this
# script ends, it stops `skyburst up` and everything that started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
  echo "usage: scripts/run.sh [--port PORT] [--workers N] [--smoke]" >&2
  exit 64
}
port=8080
workers=()
smoke=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage; port="$2"; shift 2 ;;
    --workers) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage; workers=(--workers "$2"); shift 2 ;;
    --smoke) smoke=1; shift ;;
    *) usage ;;
  esac
done

scripts/setup.sh
images="${IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/images}"
# The dev profile leaves the skyburst crate itself unoptimised (quick test builds), so the demo
# runs the release build.
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-target}/release/skyburst"

data=skyburst-data
if ((smoke)); then
  data=skyburst-data/smoke
  rm -rf "$data"
fi
log="$data/skyburst.log"
out="$data/up.out" # up's stdout: its URL and a few lines for a terminal
mkdir -p "$data"
: >"$out"

# Whether PID runs: a child that has exited stays a zombie (kill -0 succeeds) until waited for.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*") "}" # the fields after "pid (comm) "; the first is the state
  [[ "${stat%% *}" != Z ]]
}

config=examples/configs/demo.toml
up=""           # pid of `skyburst up`, also the id of its process group (setsid below)
load_pid=""     # pid of the `skyburst load` sending the burst, while it runs
up_rc=""        # its exit status, once it has stopped
leftovers=0     # 1 if processes of its group were still running after it stopped
log_said=0
# Stops `skyburst up` (SIGTERM: it stops its parts, workers finish their batch; SIGKILL after
# 60 s), then kills whatever is still running in its process group. Idempotent.
stop_up() {
  local i
  [[ -n "$up" ]] || return 0
  if [[ -z "$up_rc" ]]; then
    if alive "$up"; then
      kill -TERM "$up" 2>/dev/null || true
      for ((i = 0; i < 600; i++)); do
        alive "$up" || break
        sleep 0.1
      done
      if alive "$up"; then
        echo "warning: skyburst up ignored SIGTERM for 60 s; killing it" >&2
        kill -KILL "$up" 2>/dev/null || true
      fi
    fi
    up_rc=0
    wait "$up" 2>/dev/null || up_rc=$?
  fi
  # Its parts stop before it does; a straggler of the group is reaped by init within moments.
  for ((i = 0; i < 20; i++)); do
    kill -0 -- "-$up" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$up" 2>/dev/null; then
    leftovers=1
    echo "warning: processes skyburst up started were still running after it stopped; killing them" >&2
    kill -KILL -- "-$up" 2>/dev/null || true
  fi
  up=""
}

# shellcheck disable=SC2317 # false positive: run by the EXIT trap, which ShellCheck 0.9 does not follow
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$load_pid" ]]; then kill "$load_pid" 2>/dev/null || true; fi
  stop_up
  if [[ $rc -ne 0 && $log_said = 0 && -s "$log" ]]; then echo "service log: $log" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# setsid gives `up` and everything it starts a process group of their own, whose id is up's pid
# (a background child of a script is never a group leader, so setsid execs without forking).
# A Ctrl-C then reaches only this script, whose trap stops them in order. Its stdout (the URL)
# goes to a file; its stderr (warnings and errors only) to the console.
echo "starting: skyburst --config $config --data-dir $data up --port $port${workers[*]:+ ${workers[*]}} --log-file $log"
setsid "$bin" --config "$config" --data-dir "$data" up --port "$port" "${workers[@]}" --log-file "$log" >"$out" </dev/null &
up=$!

url=""
ready=0
for ((i = 0; i < 1200; i++)); do
  if [[ -z "$url" ]]; then
    url="$(grep -o 'http://[0-9.]*:[0-9]*' "$out" | head -n 1 || true)"
  fi
  if [[ -n "$url" ]] && curl -fs --max-time 2 "$url/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  if ! alive "$up"; then
    stop_up
    echo "error: skyburst up exited with status $up_rc before it was ready (its errors are above)" >&2
    exit 1
  fi
  sleep 0.1
done
if ((!ready)); then
  if [[ -z "$url" ]]; then
    echo "error: skyburst up printed no http://127.0.0.1:PORT line within 120 s" >&2
  else
    echo "error: $url/readyz did not answer 200 within 120 s" >&2
  fi
  exit 1
fi

failed=()
# step_failed NAME STATUS, after a step of the demo failed: stops the demo with the step's exit
# status; with --smoke records it and lets the demo go on, to name every failed step at the end.
step_failed() {
  echo "error: step '$1' failed (exit status $2)" >&2
  if ((smoke)); then failed+=("$1"); else exit "$2"; fi
}

zones() {
  curl -fsS --max-time 30 "$url/api/zones" || return
  echo
}

detect() {
  python3 - "$images/bus.jpg" "$url" <<'PY'
import base64, json, sys, urllib.request
image, url = sys.argv[1], sys.argv[2]
body = json.dumps({"id": "readme-demo", "image": base64.b64encode(open(image, "rb").read()).decode()}).encode()
request = urllib.request.Request(url + "/api/detect", body, {"Content-Type": "application/json"})
try:
    objects = json.load(urllib.request.urlopen(request, timeout=60))["objects"]
except (OSError, ValueError, KeyError) as e:
    sys.exit(f"  POST /api/detect failed: {e!r}")
for o in objects:
    r = o["rectangle"]
    print(f'  {o["label"]:<10} {o["accuracy"]:.2f}  at ({r["left"]}, {r["top"]}) {r["width"]}x{r["height"]}')
if not objects:
    sys.exit("  no object found in bus.jpg (it shows a bus and four people)")
PY
}

fleet() {
  python3 - "$url" "${#workers[@]}" <<'PY'
import json, sys, urllib.error, urllib.request
url, fixed = sys.argv[1], sys.argv[2] != "0"
try:
    fleet = json.load(urllib.request.urlopen(url + "/api/fleet", timeout=30))
except urllib.error.HTTPError as e:
    if e.code == 404 and fixed:
        print("  no controller (fixed fleet: --workers)")
        sys.exit(0)
    sys.exit(f"  GET /api/fleet failed: {e}")
except (OSError, ValueError) as e:
    sys.exit(f"  GET /api/fleet failed: {e!r}")
try:
    for pool in fleet["observation"]["pools"]:
        states = [f'{i["id"]} {i["state"]}/{i["activity"]}' for i in pool["instances"]]
        print(f'  pool {pool["name"]} (quota {pool["quota"]}): {", ".join(states) or "no instances"}')
    for d in fleet["decisions"][-4:]:
        actions = ", ".join(a["action"] + " " + (a.get("id") or f'{a["pool"]}x{a.get("count")}') for a in d["plan"]["actions"]) or "none"
        print(f'  backlog {d["backlog"]:>3} -> desired {d["decision"]["desired"]}: {actions}  ({d["decision"]["reason"]})')
except (KeyError, TypeError) as e:
    sys.exit(f"  unexpected /api/fleet answer: {e!r}")
PY
}

# The burst: 800 images in 10 s (80 a second, more than the two private workers serve), sent
# open-loop as asynchronous jobs (POST /api/jobs, then polled: a synchronous request would hold one
# of the front end's 512 waiting slots each) while scripts/fleet-timeline.py prints the fleet at
# each change and checks its order. The load's own summary goes to a file, printed after the
# timeline.
burst() {
  local trace="$data/burst.csv" summary="$data/burst-load.out" failures="$data/burst-failures.txt"
  local load_rc=0 watch_rc=0 check since_ms
  printf 't_seconds,count\n0,800\n10,0\n' >"$trace"
  since_ms="$(date +%s%3N)"
  "$bin" load --url "$url" --images "$images" --trace "$trace" --mode async --max-in-flight 800 --expect "$expect" \
    >"$summary" 2>&1 &
  load_pid=$!
  scripts/fleet-timeline.py --url "$url" --while-pid "$load_pid" --since-ms "$since_ms" --failures "$failures" ||
    watch_rc=$?
  wait "$load_pid" || load_rc=$?
  load_pid=""
  echo "  skyburst load --trace $trace:"
  sed 's/^/    /' "$summary"
  if ((load_rc != 0)); then step_failed "the burst: skyburst load --trace" "$load_rc"; fi
  if ((watch_rc == 1)); then
    while IFS= read -r check; do step_failed "the burst: $check" 1; done <"$failures"
  elif ((watch_rc != 0)); then
    step_failed "the burst: watching GET /api/fleet" "$watch_rc"
  fi
}

expect="$data/labels.csv"
printf 'file,labels\nbus.jpg,bus;person\nzidane.jpg,person;tie\n' >"$expect"
for mode in json multipart async; do
  echo
  echo "== skyburst load --mode $mode (4 requests, 2 at a time)"
  "$bin" load --url "$url" --images "$images" --requests 4 --concurrency 2 --mode "$mode" \
    --zone camera-1 --expect "$expect" || step_failed "skyburst load --mode $mode" $?
done
echo
echo "== per-zone totals (GET $url/api/zones)"
zones || step_failed "GET /api/zones" $?
echo
echo "== one result (POST $url/api/detect with bus.jpg)"
detect || step_failed "POST /api/detect" $?
echo
echo "== the fleet (GET $url/api/fleet): instances per pool and the controller's latest decisions"
fleet || step_failed "GET /api/fleet" $?
echo
if [[ ${#workers[@]} -gt 0 ]]; then
  echo "== no burst: a fixed fleet (--workers) has no controller to scale it"
else
  echo "== a burst: 800 images in 10 s (skyburst load --trace, open-loop); the fleet at each change"
  burst
fi

if ((smoke)); then
  echo
  echo "== stopping skyburst up"
  stop_up
  if [[ $up_rc -ne 0 ]]; then
    echo "error: skyburst up exited with status $up_rc after SIGTERM" >&2
    failed+=("skyburst up stops cleanly (exit status $up_rc)")
  fi
  if ((leftovers)); then failed+=("skyburst up stops everything it started"); fi
  echo "service log: $log"
  log_said=1
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "smoke: FAILED (${#failed[@]}):" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    exit 1
  fi
  echo "smoke: every step succeeded"
  exit 0
fi

echo
echo "Skyburst is running at $url  (API: $url/api/openapi.json). Ctrl-C stops it."
echo "service log: $log"
log_said=1
rc=0
wait "$up" || rc=$?
up_rc=$rc
echo "skyburst up exited with status $rc" >&2
exit "$rc"
