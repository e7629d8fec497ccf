#!/usr/bin/env bash
# Sets up and runs every test on a fresh machine — the README's test command, and what CI runs:
#
#   scripts/test.sh
#
# Phases (each under its own `timeout`, so an overrun says where it happened), with a timing
# table at the end: model files, test images, Chromium, Locust, moto and the local OpenStack
# plane are installed in the background while the first compiles run; then rustfmt, clippy
# (warnings are errors) with every cloud feature and again with the default features, the test
# build, a smoke run of the README's first command (`scripts/run.sh --smoke`: release build, the
# demo, a clean stop), and `cargo test` (unit tests plus the integration harness in tests/, which
# runs the real binary) with every cloud feature, against one moto server (the AWS emulator) and
# one OpenStack plane started for the run.
#
# When it ends, however it ends, nothing it started is left running (see on_exit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Every process this run starts inherits this variable, whatever becomes of its parent: when
# chromedriver ends, the headless Chromium it started is re-parented to init and leaves this run's
# process tree and process groups (each `timeout` below makes a group of its own), but it keeps
# its environment. So at exit, the processes that still carry this exact value are what this run
# left behind, and nothing else on the machine is (a name match such as `pkill chromium` would
# also hit a browser or a test run that is none of ours).
SB_TEST_RUN="$$.$(date +%s%N)"
export SB_TEST_RUN

phases=()
started=$SECONDS
current="" # the command running in the background while this shell waits for it (run_waiting)
openstack_started=0
declare -A pids logs awaited

# Runs a command in the background and waits for it: bash runs a signal's trap only once the
# foreground command has ended, whereas `wait` returns at once, so Ctrl-C or CI's timeout stop
# the run now instead of after a 30-minute phase.
run_waiting() {
  local rc=0
  "$@" &
  current=$!
  wait "$current" || rc=$?
  current=""
  return "$rc"
}

phase() { # name, minutes, command...
  local name=$1 minutes=$2; shift 2
  local start=$SECONDS
  echo "==> $name"
  if ! run_waiting timeout "${minutes}m" "$@"; then
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

# Kills the processes that still carry this run's SB_TEST_RUN (see above): SIGTERM, then
# SIGKILL 2 s later for those still there. Read from /proc/PID/environ, so procps need not be
# installed; another user's processes cannot be read, and are none of ours.
kill_leftovers() {
  local signal environ pid found names
  for signal in TERM KILL; do
    found=() names=""
    for environ in /proc/[0-9]*/environ; do
      pid=${environ#/proc/}
      pid=${pid%/environ}
      [ "$pid" != "$$" ] || continue
      if grep -qszxF -- "SB_TEST_RUN=$SB_TEST_RUN" "$environ"; then
        found+=("$pid")
        names+=" $(cat "/proc/$pid/comm" 2>/dev/null || true)"
      fi
    done
    [ ${#found[@]} -gt 0 ] || return 0
    echo "cleanup: SIG$signal to ${#found[@]} processes this run left running:$names" >&2
    kill "-$signal" "${found[@]}" 2>/dev/null || true
    if [ "$signal" = TERM ]; then sleep 2; fi
  done
}

# At exit: stops the running phase, waits for the background installs still running (a phase
# failed before they were awaited; an apt-get or dpkg cut short would leave the package database
# half-configured for the next run, and each is bounded by its own timeout), stops moto and the
# OpenStack plane, then kills whatever else the run left (kill_leftovers): scripts/run.sh stops
# what it started itself, but the browser tests leave headless Chromium behind.
# shellcheck disable=SC2317 # false positive: run by the EXIT trap, which ShellCheck 0.9 does not follow
on_exit() {
  local rc=$? name
  trap - EXIT INT TERM
  if [ -n "$current" ]; then
    kill -TERM "$current" 2>/dev/null || true # timeout passes it on to its command
    wait "$current" 2>/dev/null || true
  fi
  for name in "${!pids[@]}"; do
    [ -z "${awaited[$name]:-}" ] || continue
    # A job that has ended stays a zombie until waited for: only a live one is worth a word.
    if [ "$(sed 's/.*) //; s/ .*//' "/proc/${pids[$name]}/stat" 2>/dev/null || echo gone)" != Z ] &&
      kill -0 "${pids[$name]}" 2>/dev/null; then
      echo "cleanup: waiting for '$name' to finish (log: ${logs[$name]})" >&2
    fi
    wait "${pids[$name]}" 2>/dev/null || true
  done
  if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; fi
  if [ "$openstack_started" = 1 ]; then scripts/openstack-local/stop.sh >/dev/null 2>&1 || true; fi
  kill_leftovers
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/setup.sh --check-toolchain

# Downloads overlap the first compiles: the model and images (~20 s: a 66 MB sdist and a 1.4 MB
# wheel), Chromium and chromedriver from Debian for the dashboard's browser test (~100 MB), the
# pinned Locust in a venv for examples/locustfile.py (~20 s), the pinned Schemathesis in a venv
# for the OpenAPI fuzz test (~30 s), and the pinned moto server in a
# venv for the AWS tests (~80 s).
background_start=$SECONDS
background() { # name, minutes, command...
  local name=$1 minutes=$2; shift 2
  logs[$name]=$(mktemp)
  timeout "${minutes}m" "$@" >"${logs[$name]}" 2>&1 &
  pids[$name]=$!
}
await() { # name, script to retry
  echo "==> $1 (started in the background)"
  awaited[$1]=1
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
background "install schemathesis" 10 scripts/install-schemathesis.sh
background "install moto" 10 scripts/install-moto.sh
# Debian's OpenStack packages and the plane's initialised state (~4 min of apt + ~1.5-2.5 min
# of database set-up on a fresh machine; a no-op once done).
background "install OpenStack" 20 scripts/openstack-local/setup.sh

# The feature set the test phases build: all clouds, plus the fleet agent the end-to-end tests
# use in place of a hypervisor. Clippy also checks the default features, which users build.
features=(--features "cloud,dev-tools")

phase "format (cargo fmt --check)" 5 cargo fmt --all -- --check
phase "lint, cloud + dev-tools (cargo clippy)" 30 cargo clippy --locked --workspace --all-targets "${features[@]}" -- -D warnings
phase "lint, default features (cargo clippy)" 30 cargo clippy --locked --workspace --all-targets -- -D warnings
phase "build tests" 30 cargo test --locked --workspace --no-run "${features[@]}"
await "fetch model and images" scripts/fetch-assets.sh
# The README's first command, end to end on a free port: a release build (the longest part),
# the demo, and a clean stop; it exits non-zero if any step failed, naming it. run.sh stops
# `skyburst up` and everything it started itself (on_exit sweeps up after it anyway).
smoke_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
phase "smoke (scripts/run.sh --smoke)" 15 scripts/run.sh --smoke --port "$smoke_port"
await "install the browser" scripts/install-browser.sh
await "install locust" scripts/install-locust.sh
await "install schemathesis" scripts/install-schemathesis.sh
await "install moto" scripts/install-moto.sh
await "install OpenStack" scripts/openstack-local/setup.sh
# cloud-init (its schema check), shellcheck and systemd-analyze for the image, devstack and
# scripts tests (~12 s); after the OpenStack install, as both use apt and its policy-rc.d guard.
phase "install image tools" 5 scripts/install-image-tools.sh

# One moto server for the run, on a free port; the tests give every queue, bucket and
# deployment a unique name. Its fake credentials keep every AWS call on the emulator.
moto_start=$SECONDS
moto_out=$(mktemp)
run_waiting scripts/moto-server.sh >"$moto_out" || fail "start moto" "$moto_start" "failed (scripts/moto-server.sh)"
eval "$(cat "$moto_out")"
phases+=("start moto|$((SECONDS - moto_start))|ok")

# One OpenStack plane for the run (~30 s from its snapshot), after stopping any an earlier run
# left behind; its OS_* variables (admin) point the Nova tests at it.
openstack_start=$SECONDS
openstack_started=1
scripts/openstack-local/stop.sh >/dev/null 2>&1 || true
openstack_out=$(mktemp)
run_waiting timeout 5m scripts/openstack-local/start.sh >"$openstack_out" ||
  fail "start OpenStack" "$openstack_start" "failed (logs in /tmp/oslocal/state/logs)"
eval "$(grep '^export ' "$openstack_out")"
phases+=("start OpenStack|$((SECONDS - openstack_start))|ok")

phase "test (cargo test)" 30 cargo test --locked --workspace "${features[@]}"
print_table
