#!/usr/bin/env bash
# Creates (or reuses) a venv with the pinned Schemathesis, which fuzzes the front end against its
# own OpenAPI document in tests/openapi_fuzz.rs.
#
#   scripts/install-schemathesis.sh    # then "$SCHEMATHESIS_VENV/bin/st"
#
#   SCHEMATHESIS_VENV   default ${XDG_CACHE_HOME:-~/.cache}/skyburst/schemathesis-venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec scripts/install-venv.sh "${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/schemathesis-venv}" schemathesis 4.32.5
