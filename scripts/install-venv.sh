#!/usr/bin/env bash
# Creates (or reuses) a venv holding one pinned Python package, for the tools the tests run
# (Locust, the moto server). Venvs live outside git, next to the model files.
#
#   scripts/install-venv.sh VENV_DIR PACKAGE VERSION [EXTRAS]
#   e.g. scripts/install-venv.sh ~/.cache/skyburst/moto-venv moto 5.2.5 server
set -euo pipefail

venv=${1:?usage: install-venv.sh VENV_DIR PACKAGE VERSION [EXTRAS]}
package=${2:?} version=${3:?} extras=${4:-}

installed() { "$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$package'))" 2>/dev/null; }
if [ -x "$venv/bin/python" ] && [ "$(installed)" = "$version" ]; then
  echo "$package: $version ok ($venv)"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" || { echo "error: 'python3 -m venv' failed; install python3-venv" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$package${extras:+[$extras]}==$version"
echo "$package: $(installed) ($venv)"
