#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the dashboard's browser test
# (tests/dashboard.rs), when they are missing: about 100 MB, a minute or two on a fresh machine.
#
#   scripts/install-browser.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "browser: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the browser test needs chromium and chromium-driver: apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=SCRIPTDIR/lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_get update -qq
apt_get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "browser: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
