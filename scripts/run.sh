#!/usr/bin/env bash
# Sets up and runs Skyburst's main job on the embedded default — the README's first command:
#
#   scripts/run.sh [--port PORT] [--workers N]
#
# Installs what is missing, fetches and verifies the model and the two test images, builds,
# starts `skyburst up` (front end + controller scaling the local worker processes, SQLite
# queue, filesystem store, all under ./skyburst-data; --workers N fixes the fleet instead),
# sends the test images through `skyburst load` in all three API modes, prints the results, the
# fleet the controller scaled and the URL, and stays in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port=8080
workers=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --workers) workers=(--workers "$2"); shift 2 ;;
    *) echo "usage: scripts/run.sh [--port PORT] [--workers N]" >&2; exit 64 ;;
  esac
done

scripts/setup.sh
images="${IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/images}"
# The dev profile builds candle, the decoders and the request path at opt-level 3 (Cargo.toml),
# so the service runs at full speed without a second, release build of the whole tree.
cargo build --locked
bin=target/debug/skyburst
data=skyburst-data

log="$data/up.log"
mkdir -p "$data"
"$bin" --data-dir "$data" up --port "$port" "${workers[@]}" > >(tee "$log") &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null' EXIT INT TERM
url=""
for _ in $(seq 1 600); do
  url=$(grep -o 'http://[0-9.:]*' "$log" 2>/dev/null | head -1 || true)
  [[ -n "$url" ]] && curl -fs "$url/readyz" >/dev/null 2>&1 && break
  kill -0 $up 2>/dev/null || { echo "skyburst up exited; see the messages above" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "skyburst up did not start" >&2; exit 1; }

expect="$data/labels.csv"
printf 'file,labels\nbus.jpg,bus;person\nzidane.jpg,person;tie\n' > "$expect"
for mode in json multipart async; do
  echo
  echo "== skyburst load --mode $mode (4 requests, 2 at a time)"
  "$bin" load --url "$url" --images "$images" --requests 4 --concurrency 2 --mode "$mode" \
    --zone camera-1 --expect "$expect"
done
echo
echo "== per-zone totals (GET $url/api/zones)"
curl -fs "$url/api/zones"
echo
echo
echo "== one result (POST $url/api/detect with bus.jpg)"
python3 - "$images/bus.jpg" "$url" <<'PY'
import base64, json, sys, urllib.request
image, url = sys.argv[1], sys.argv[2]
body = json.dumps({"id": "readme-demo", "image": base64.b64encode(open(image, "rb").read()).decode()}).encode()
request = urllib.request.Request(url + "/api/detect", body, {"Content-Type": "application/json"})
result = json.load(urllib.request.urlopen(request))
for o in result["objects"]:
    r = o["rectangle"]
    print(f'  {o["label"]:<10} {o["accuracy"]:.2f}  at ({r["left"]}, {r["top"]}) {r["width"]}x{r["height"]}')
PY
echo
echo "== the fleet (GET $url/api/fleet): instances per pool and the controller's latest decisions"
python3 - "$url" <<'PY'
import json, sys, urllib.error, urllib.request
try:
    fleet = json.load(urllib.request.urlopen(sys.argv[1] + "/api/fleet"))
except urllib.error.HTTPError:
    print("  no controller (fixed fleet: --workers)")
    sys.exit(0)
for pool in fleet["observation"]["pools"]:
    states = [f'{i["id"]} {i["state"]}/{i["activity"]}' for i in pool["instances"]]
    print(f'  pool {pool["name"]} (quota {pool["quota"]}): {", ".join(states) or "no instances"}')
for d in fleet["decisions"][-4:]:
    actions = ", ".join(a["action"] + " " + (a.get("id") or f'{a["pool"]}x{a.get("count")}') for a in d["plan"]["actions"]) or "none"
    print(f'  backlog {d["backlog"]:>3} -> desired {d["decision"]["desired"]}: {actions}  ({d["decision"]["reason"]})')
PY
echo
echo "Skyburst is running at $url  (API: $url/api/openapi.json). Ctrl-C stops it."
wait $up
