#!/usr/bin/env bash
# Sets up and runs every test on a fresh machine — the README's test command, and what CI runs:
#
#   scripts/test.sh
#
# Phases (each under its own `timeout`, so an overrun says where it happened), with a timing
# table at the end: model files, test images, Chromium, Locust and moto are installed in the
# background while the first compile runs; then rustfmt, clippy (warnings are errors) and
# `cargo test` (unit tests plus the integration harness in tests/, which runs the real binary)
# with every cloud feature, against one moto server (the AWS emulator) started for the run.
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

# Downloads overlap the first compile: the model and images (~20 s: a 66 MB sdist and a 1.4 MB
# wheel), Chromium and chromedriver from Debian for the dashboard's browser test (~100 MB), the
# pinned Locust in a venv for examples/locustfile.py (~20 s), and the pinned moto server in a
# venv for the AWS tests (~80 s).
declare -A pids logs
background_start=$SECONDS
background() { # name, minutes, command...
  local name=$1 minutes=$2; shift 2
  logs[$name]=$(mktemp)
  timeout "${minutes}m" "$@" >"${logs[$name]}" 2>&1 &
  pids[$name]=$!
}
await() { # name, script to retry
  echo "==> $1 (started in the background)"
  if wait "${pids[$1]}"; then
    cat "${logs[$1]}"
    phases+=("$1 (background)|$((SECONDS - background_start))|ok")
  else
    cat "${logs[$1]}" >&2
    fail "$1" "$background_start" "failed (log above); run $2 to retry"
  fi
}
background "fetch model and images" 10 scripts/fetch-assets.sh
background "install the browser" 10 scripts/install-browser.sh
background "install locust" 10 scripts/install-locust.sh
background "install moto" 10 scripts/install-moto.sh
# Debian's OpenStack packages and the plane's initialised state (~4 min of apt + ~1.5-2.5 min
# of database set-up on a fresh machine; a no-op once done).
background "install OpenStack" 20 scripts/openstack-local/setup.sh

# The one feature set every phase builds (../shared/DESIGN.md): all clouds, plus the fleet agent
# the end-to-end tests use in place of a hypervisor.
features=(--features "cloud,dev-tools")

phase "format (cargo fmt --check)" 5 cargo fmt --all -- --check
phase "lint (cargo clippy)" 30 cargo clippy --locked --workspace --all-targets "${features[@]}" -- -D warnings
phase "build tests" 30 cargo test --locked --workspace --no-run "${features[@]}"
await "fetch model and images" scripts/fetch-assets.sh
await "install the browser" scripts/install-browser.sh
await "install locust" scripts/install-locust.sh
await "install moto" scripts/install-moto.sh
await "install OpenStack" scripts/openstack-local/setup.sh
# cloud-init (its schema check), shellcheck and systemd-analyze for the image and devstack tests
# (~12 s); after the OpenStack install, as both use apt and its policy-rc.d guard.
phase "install image tools" 5 scripts/install-image-tools.sh

# One moto server for the run, on a free port; the tests give every queue, bucket and
# deployment a unique name. Its fake credentials keep every AWS call on the emulator.
moto_start=$SECONDS
moto_env=$(scripts/moto-server.sh) || fail "start moto" "$moto_start" "failed (scripts/moto-server.sh)"
eval "$moto_env"
trap 'kill "$MOTO_PID" 2>/dev/null || true; scripts/openstack-local/stop.sh >/dev/null 2>&1 || true' EXIT
phases+=("start moto|$((SECONDS - moto_start))|ok")

# One OpenStack plane for the run (~30 s from its snapshot), after stopping any an earlier run
# left behind; its OS_* variables (admin) point the Nova tests at it.
openstack_start=$SECONDS
scripts/openstack-local/stop.sh >/dev/null 2>&1 || true
openstack_env=$(timeout 5m scripts/openstack-local/start.sh) ||
  fail "start OpenStack" "$openstack_start" "failed (logs in /tmp/oslocal/state/logs)"
eval "$(grep '^export ' <<<"$openstack_env")"
phases+=("start OpenStack|$((SECONDS - openstack_start))|ok")

phase "test (cargo test)" 30 cargo test --locked --workspace "${features[@]}"
print_table
