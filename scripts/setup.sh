#!/usr/bin/env bash
# Installs what Skyburst needs on a fresh Debian 12 machine with Rust and Python 3:
#
#   scripts/setup.sh                    # toolchain check + model files and test images
#   scripts/setup.sh --check-toolchain  # only check cargo, rustfmt, clippy and pip
#
# Model files and images go to ~/.cache/skyburst (scripts/fetch-assets.sh), never into git.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is not installed. $2" >&2; exit 1; }; }
need cargo "Install Rust 1.95+ with rustup: https://rustup.rs"
need python3 "Install it with: apt-get install -y python3 python3-pip"
python3 -m pip --version >/dev/null 2>&1 || { echo "error: pip is missing: apt-get install -y python3-pip" >&2; exit 1; }
# curl: scripts/run.sh probes the service with it. cc: bundled SQLite (rusqlite) compiles C.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck source=SCRIPTDIR/lib/apt.sh
    . scripts/lib/apt.sh # the working directory is the repository root (cd above)
    apt_get update -qq && apt_get install -y -qq "${missing[@]}"
  else
    echo "error: install ${missing[*]} (apt-get install -y ${missing[*]})" >&2; exit 1
  fi
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

if [ "${1:-}" != "--check-toolchain" ]; then
  scripts/fetch-assets.sh
fi
