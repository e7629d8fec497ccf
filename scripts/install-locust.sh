#!/usr/bin/env bash
# Creates (or reuses) a venv with the pinned Locust for examples/locustfile.py and its test
# (tests/locust.rs).
#
#   scripts/install-locust.sh          # then "$LOCUST_VENV/bin/locust"
#
#   LOCUST_VENV   default ${XDG_CACHE_HOME:-~/.cache}/skyburst/locust-venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec scripts/install-venv.sh "${LOCUST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/locust-venv}" locust 2.47.0
