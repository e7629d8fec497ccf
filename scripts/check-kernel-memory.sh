#!/usr/bin/env bash
# Runs the detector kernel's unit tests (detector/src/kernel/: micro-kernels, packing, Winograd,
# the fused op against stock candle) under valgrind's memcheck: every raw-pointer read and write
# of the `unsafe` blocks is checked against live heap blocks. Stands in for `cargo miri` (which
# needs a nightly toolchain and cannot run the AVX2 kernels) and the sanitizers (nightly too).
#
#   scripts/check-kernel-memory.sh     # ~8 min on 2 vCPUs; outside the test command
#
# Installs valgrind from Debian's packages when it is missing (as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck source=SCRIPTDIR/lib/apt.sh
    . scripts/lib/apt.sh # the working directory is the repository root (cd above)
    apt_get update -qq && apt_get install -y -qq valgrind
  else
    echo "error: valgrind is missing: apt-get install -y valgrind" >&2
    exit 1
  fi
fi
binary="$(cargo test --locked -p skyburst-detector --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')"
if [ -z "$binary" ]; then
  echo "error: cargo built no unit-test binary; run 'cargo test -p skyburst-detector --lib --no-run' to see why" >&2
  exit 1
fi
echo "valgrind memcheck: $binary kernel::"
# --error-exitcode turns any invalid read/write or use of uninitialised memory into a failure.
exec valgrind --quiet --error-exitcode=99 --track-origins=yes "$binary" kernel:: --test-threads=2
