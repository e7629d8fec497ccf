#!/usr/bin/env bash
# Creates (or reuses) a venv with the pinned moto server, the local AWS emulator the AWS tests
# run against (SQS, S3 and EC2 on one port). It lives outside git, next to the model files.
#
#   scripts/install-moto.sh          # then "$MOTO_VENV/bin/moto_server -H 127.0.0.1 -p PORT"
#
#   MOTO_VENV   default ${XDG_CACHE_HOME:-~/.cache}/skyburst/moto-venv
set -euo pipefail

version="5.2.5"
venv="${MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/moto-venv}"

installed() { "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null; }
if [ -x "$venv/bin/moto_server" ] && [ "$(installed)" = "$version" ]; then
  echo "moto: $version ok ($venv)"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" || { echo "error: 'python3 -m venv' failed; install python3-venv" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$version"
echo "moto: $(installed) ($venv)"
