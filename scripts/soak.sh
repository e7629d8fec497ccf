#!/usr/bin/env bash
# A soak of the embedded deployment: `skyburst up --workers 2` (release build) with a short
# retention, driven open-loop at a fixed rate (by default 70 % of the capacity measured first)
# for a fixed time, to show that it runs unattended: the data directory levels off once the
# retention starts deleting, serve's and the workers' memory stay flat, and the p95 of the last
# minute is that of the first.
#
#   scripts/soak.sh                                   # 10 min at 70 % of capacity, retention 3 min
#   SECONDS_TOTAL=120 RETENTION_MINUTES=1 scripts/soak.sh   # a quick look
#   RATE=20 scripts/soak.sh                           # a fixed rate instead of 70 % of capacity
#
# Environment: SECONDS_TOTAL (default 600), RATE (jobs/s; default: LOAD_SHARE of the capacity
# that a closed-loop run of 16 clients measures first), LOAD_SHARE (default 0.7),
# RETENTION_MINUTES (store.retention_days as minutes, default 3), SAMPLE_SECONDS (default 10),
# BENCH_SKYBURST_BIN (default: cargo build --release --locked). The client is Python's standard
# library (threads, keep-alive connections), sending `POST /api/detect` with the images of
# ~/.cache/skyburst/images in turn; it runs on the same 2 cores and takes its share of them.
# Results: bench-out/soak.json, and bench-out/soak/ (requests.csv: one row per request;
# samples.tsv: data directory bytes and RSS per role every SAMPLE_SECONDS).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
total="${SECONDS_TOTAL:-600}"
share="${LOAD_SHARE:-0.7}"
retention="${RETENTION_MINUTES:-3}"
sample="${SAMPLE_SECONDS:-10}"
# shellcheck source=scripts/lib/usage.sh
. "$root/scripts/lib/usage.sh"
env_script_args "${BASH_SOURCE[0]}" "$@"
whole_numbers "SECONDS_TOTAL, RETENTION_MINUTES and SAMPLE_SECONDS" "$total" "$retention" "$sample"
[ "$retention" -ge 1 ] || { echo "error: RETENTION_MINUTES must be at least 1" >&2; exit 64; }

"$root/scripts/fetch-assets.sh"
cd "$root"
if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then
  bin="$(realpath -m "$BENCH_SKYBURST_BIN")"
else
  echo "building: cargo build --release --locked --bin skyburst"
  cargo build --release --locked --bin skyburst
  bin="$root/target/release/skyburst"
fi
[ -x "$bin" ] || { echo "error: no skyburst binary at $bin" >&2; exit 1; }
images="${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/images"

out="$root/bench-out/soak"
rm -rf "$out" && mkdir -p "$out"
tmp="$(mktemp -d)"
up_pid=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$up_pid" ]; then
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

days=$(python3 -c "print($retention / 1440)")
SKYBURST_STORE__RETENTION_DAYS="$days" RUST_LOG=warn "$bin" --data-dir "$tmp/data" up --workers 2 --port 0 \
  >"$tmp/up.out" 2>"$tmp/up.err" &
up_pid=$!
url=""
for ((i = 0; i < 600; i++)); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/up.out" | head -n1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "error: skyburst up did not start:" >&2; cat "$tmp/up.err" >&2; exit 1; }
echo "skyburst up: $url, data in $tmp/data, retention $retention min"

rate="${RATE:-}"
if [ -z "$rate" ]; then
  "$bin" load --url "$url" --images "$images" --requests 400 --concurrency 16 --mode json >"$tmp/capacity.txt"
  capacity=$(grep -o 'throughput *[0-9.]*' "$tmp/capacity.txt" | grep -o '[0-9.]*$')
  rate=$(python3 -c "print(round($capacity * $share, 1))")
  echo "capacity: $capacity images/s (closed loop, 16 clients); soak rate: $rate jobs/s"
fi

python3 - "$url" "$images" "$rate" "$total" "$sample" "$tmp/data" "$up_pid" "$out" "$retention" <<'PY'
import base64, csv, http.client, json, os, pathlib, platform, queue, statistics, sys, threading, time

url, images, rate, total, sample, data, up_pid, out, retention = sys.argv[1:]
rate, total, sample, up_pid, out = float(rate), int(total), int(sample), int(up_pid), pathlib.Path(out)
host, port = url.removeprefix("http://").split(":")
bodies = []
for i, path in enumerate(sorted(pathlib.Path(images).iterdir())):
    image = base64.b64encode(path.read_bytes()).decode()
    bodies.append((path.name, json.dumps({"id": f"soak-{i}", "image": image}).encode()))

due = queue.Queue()
rows, lock = [], threading.Lock()
start = time.monotonic()

def client():
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        item = due.get()
        if item is None:
            return
        at, (name, body) = item
        t0 = time.monotonic()
        try:
            conn.request("POST", "/api/detect", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            status = response.status
        except Exception:
            status = 0
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
        done = time.monotonic()
        with lock:
            # latency from when the request was due: an open loop counts the wait for a client too
            rows.append((at, done - start, (done - (start + at)) * 1000, (done - t0) * 1000, status, name))

def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def parts():
    found = {"serve": [], "worker": []}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if data.encode() not in b" ".join(args):
            continue
        for role in found:
            if role.encode() in args:
                found[role].append(int(entry))
    return found

def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total

samples, stop = [], threading.Event()
def sampler():
    while not stop.is_set():
        found = parts()
        samples.append({
            "t": round(time.monotonic() - start, 1),
            "data_bytes": du(data),
            "serve_rss_kib": sum(rss_kib(p) for p in found["serve"]),
            "worker_rss_kib": sorted(rss_kib(p) for p in found["worker"]),
        })
        stop.wait(sample)

threads = [threading.Thread(target=client, daemon=True) for _ in range(32)]
for t in threads:
    t.start()
watcher = threading.Thread(target=sampler, daemon=True)
watcher.start()
n, interval = 0, 1.0 / rate
while True:
    at = n * interval
    if at >= total:
        break
    delay = start + at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    due.put((at, bodies[n % len(bodies)]))
    n += 1
for _ in threads:
    due.put(None)
for t in threads:
    t.join(timeout=90)
stop.set()
watcher.join()

with open(out / "requests.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["due_s", "done_s", "latency_ms", "service_ms", "status", "file"])
    w.writerows(sorted(rows))
with open(out / "samples.tsv", "w") as f:
    f.write("t_s\tdata_bytes\tserve_rss_kib\tworker_rss_kib\n")
    for s in samples:
        f.write(f"{s['t']}\t{s['data_bytes']}\t{s['serve_rss_kib']}\t{','.join(map(str, s['worker_rss_kib']))}\n")

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
failed = sum(1 for r in rows if r[4] != 200)
minutes = []
for m in range(int(total // 60)):
    lat = sorted(r[2] for r in rows if m * 60 <= r[0] < (m + 1) * 60 and r[4] == 200)
    if lat:
        minutes.append({"minute": m + 1, "answers": len(lat), "p50_ms": lat[len(lat) // 2], "p95_ms": lat[int(len(lat) * 0.95)]})
print(f"CPU: {cpu}; {n} requests at {rate} jobs/s for {total} s; {failed} not 200; retention {retention} min")
print("minute  answers  p50 ms  p95 ms")
for m in minutes:
    print(f"{m['minute']:6}  {m['answers']:7}  {m['p50_ms']:6.0f}  {m['p95_ms']:6.0f}")
print("t s    data MB  serve RSS MiB  worker RSS MiB")
for s in samples[:: max(1, 60 // sample)]:
    workers = "/".join(f"{k / 1024:.0f}" for k in s["worker_rss_kib"])
    print(f"{s['t']:5.0f}  {s['data_bytes'] / 1e6:7.1f}  {s['serve_rss_kib'] / 1024:13.1f}  {workers:>14}")
first, last = minutes[0]["p95_ms"], minutes[-1]["p95_ms"]
half = [s for s in samples if s["t"] >= total / 2]
summary = {
    "cpu": cpu, "rate": rate, "seconds": total, "retention_minutes": int(retention), "requests": n,
    "failed": failed, "minutes": minutes, "samples": samples,
    "p95_first_ms": first, "p95_last_ms": last, "p95_last_over_first": last / first,
    "data_mb_max_second_half": max(s["data_bytes"] for s in half) / 1e6,
    "data_mb_last": samples[-1]["data_bytes"] / 1e6,
}
print(f"p95 first minute {first:.0f} ms, last minute {last:.0f} ms (ratio {last / first:.2f}); "
      f"data directory at the end {summary['data_mb_last']:.1f} MB, at most {summary['data_mb_max_second_half']:.1f} MB in the second half")
(out.parent / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
PY
