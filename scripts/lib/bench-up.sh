# shellcheck shell=bash disable=SC2034 # `bin`, `tmp` and `url_NAME` are read by the scripts that source this
# Shared by scripts/bench-tls.sh and scripts/bench-ab.sh, which compare two embedded deployments
# (`skyburst up --workers 1`) loaded one after the other at concurrency 1 in interleaved rounds:
# settings, the binary, starting and loading the deployments, and stopping them on exit.
# Sourced, not executed:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/bench-up.sh"    # from a script in scripts/
#   bench_settings "$@"; bench_binary; bench_cleanup_on_exit
#   bench_start NAME PROGRAM [VAR=VALUE...]; bench_load NAME REQUESTS CSV [LOAD ARGS...]

# bench_settings [ARGS]: --help prints the calling script's opening comment; sets root, requests,
# rounds and warmup from REQUESTS (64), ROUNDS (5) and WARMUP (8), checked.
bench_settings() {
  root="$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)"
  requests="${REQUESTS:-64}"
  rounds="${ROUNDS:-5}"
  warmup="${WARMUP:-8}"
  # shellcheck source=scripts/lib/usage.sh
  . "$root/scripts/lib/usage.sh"
  env_script_args "${BASH_SOURCE[1]}" "$@"
  whole_numbers "REQUESTS, ROUNDS and WARMUP" "$requests" "$rounds" "$warmup"
  if [ "$requests" -lt 1 ] || [ "$rounds" -lt 1 ]; then echo "error: REQUESTS and ROUNDS must be >= 1" >&2; exit 64; fi
}

# bench_binary: the model and images, then `bin`: BENCH_SKYBURST_BIN, or a release build.
bench_binary() {
  if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then BENCH_SKYBURST_BIN="$(realpath -m "$BENCH_SKYBURST_BIN")"; fi
  "$root/scripts/fetch-assets.sh"
  cd "$root" || exit
  if [ -n "${BENCH_SKYBURST_BIN:-}" ]; then
    bin="$BENCH_SKYBURST_BIN"
  else
    echo "building: cargo build --release --locked --bin skyburst"
    cargo build --release --locked --bin skyburst
    bin="$root/target/release/skyburst"
  fi
  [ -x "$bin" ] || { echo "error: no skyburst binary at $bin" >&2; exit 1; }
}

# bench_cleanup_on_exit: a scratch directory `tmp`; every deployment started is stopped and
# `tmp` removed when the script exits, however it exits.
bench_cleanup_on_exit() {
  tmp="$(mktemp -d)"
  bench_pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# shellcheck disable=SC2317 # run by the EXIT trap
bench_cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${bench_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${bench_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
  exit "$rc"
}

# bench_start NAME PROGRAM [VAR=VALUE...]: `PROGRAM up --workers 1` on a free port with the
# environment given; sets url_NAME.
bench_start() {
  local name=$1 program=$2
  shift 2
  mkdir -p "$tmp/$name"
  env "$@" RUST_LOG=warn "$program" --data-dir "$tmp/$name" up --workers 1 --port 0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
  bench_pids+=("$!")
  local i url=""
  for ((i = 0; i < 600; i++)); do
    url=$(grep -o 'https\{0,1\}://127\.0\.0\.1:[0-9]*' "$tmp/$name.out" | head -n1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "error: $name did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
  printf -v "url_$name" '%s' "$url"
}

# bench_load NAME REQUESTS CSV [LOAD ARGS...]: REQUESTS `json` requests at concurrency 1 to
# deployment NAME with this build's `skyburst load`, one row per request in CSV.
bench_load() {
  local name=$1 count=$2 csv=$3 url
  shift 3
  url="url_$name"
  "$bin" load --url "${!url}" --images "${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/images" --requests "$count" \
    --concurrency 1 --mode json --timeout-seconds 60 --csv "$csv" "$@" >"$csv.txt"
}
