#!/usr/bin/env bash
# Sets up and runs every test on a fresh machine — the README's test command, and what CI runs:
#
#   scripts/test.sh
#
# Phases (each under its own `timeout`, so an overrun says where it happened), with a timing
# table at the end: model files and test images are fetched in the background while the first
# compile runs; then rustfmt, clippy (warnings are errors) and `cargo test` (unit tests plus the
# integration harness in tests/, which runs the real binary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

phases=()
started=$SECONDS
phase() { # name, minutes, command...
  local name=$1 minutes=$2; shift 2
  local start=$SECONDS
  echo "==> $name"
  if ! timeout "${minutes}m" "$@"; then
    fail "$name" "$start" "failed or ran past ${minutes} min"
  fi
  phases+=("$name|$((SECONDS - start))|ok")
}
fail() { # name, start, why
  echo "error: phase '$1' $3" >&2
  phases+=("$1|$((SECONDS - $2))|FAILED")
  print_table
  exit 1
}
print_table() {
  echo
  echo "| phase | seconds | status |"
  echo "|---|---:|---|"
  for row in "${phases[@]}"; do echo "| ${row//|/ | } |"; done
  echo "| total | $((SECONDS - started)) | |"
}

scripts/setup.sh --check-toolchain

# ~20 s of downloads (66 MB sdist, 1.4 MB wheel) and, for the dashboard's browser test,
# Chromium and chromedriver from Debian (~100 MB): overlap them with the first compile.
fetch_log=$(mktemp)
fetch_start=$SECONDS
timeout 10m scripts/fetch-assets.sh >"$fetch_log" 2>&1 &
fetch_pid=$!
browser_log=$(mktemp)
timeout 10m scripts/install-browser.sh >"$browser_log" 2>&1 &
browser_pid=$!

phase "format (cargo fmt --check)" 5 cargo fmt --all -- --check
phase "lint (cargo clippy)" 30 cargo clippy --locked --workspace --all-targets -- -D warnings
phase "build tests" 30 cargo test --locked --workspace --no-run
echo "==> fetch model and images (started in the background)"
if wait "$fetch_pid"; then
  cat "$fetch_log"
  phases+=("fetch model and images (background)|$((SECONDS - fetch_start))|ok")
else
  cat "$fetch_log" >&2
  fail "fetch model and images" "$fetch_start" "failed (log above); run scripts/fetch-assets.sh to retry"
fi
echo "==> install the browser (started in the background)"
if wait "$browser_pid"; then
  cat "$browser_log"
  phases+=("install the browser (background)|$((SECONDS - fetch_start))|ok")
else
  cat "$browser_log" >&2
  fail "install the browser" "$fetch_start" "failed (log above); run scripts/install-browser.sh to retry"
fi
phase "test (cargo test)" 30 cargo test --locked --workspace
print_table
