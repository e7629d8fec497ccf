#!/usr/bin/env bash
# Creates (or reuses) a venv with the pinned moto server, the local AWS emulator the AWS tests
# run against (SQS, S3 and EC2 on one port).
#
#   scripts/install-moto.sh          # then "$MOTO_VENV/bin/moto_server -H 127.0.0.1 -p PORT"
#
#   MOTO_VENV   default ${XDG_CACHE_HOME:-~/.cache}/skyburst/moto-venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec scripts/install-venv.sh "${MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/moto-venv}" moto 5.2.5 server
