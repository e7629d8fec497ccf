#!/usr/bin/env bash
# Creates (or reuses) a venv with the pinned Locust for examples/locustfile.py and its test
# (tests/locust.rs). It lives outside git, next to the model files.
#
#   scripts/install-locust.sh          # then "$LOCUST_VENV/bin/locust"
#
#   LOCUST_VENV   default ${XDG_CACHE_HOME:-~/.cache}/skyburst/locust-venv
set -euo pipefail

version="2.47.0"
venv="${LOCUST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/locust-venv}"

if [ -x "$venv/bin/locust" ] && [ "$("$venv/bin/locust" --version 2>/dev/null | awk '{print $2}')" = "$version" ]; then
  echo "locust: $version ok ($venv)"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" || { echo "error: 'python3 -m venv' failed; install python3-venv" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "locust==$version"
echo "locust: $("$venv/bin/locust" --version) ($venv)"
