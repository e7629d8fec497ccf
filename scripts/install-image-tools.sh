#!/usr/bin/env bash
# Installs what tests/images.rs runs, from Debian's packages, when it is missing:
#   - cloud-init: `cloud-init schema` checks the rendered worker user-data (bookworm: 22.4);
#   - ShellCheck: lints images/**/*.sh;
#   - systemd: `systemd-analyze verify` checks images/systemd/skyburst-worker.service
# (bash is always there). A no-op when all three are present; run as root otherwise.
#
#   scripts/install-image-tools.sh
#
# Installing cloud-init starts nothing: a policy-rc.d answering 101 keeps package scripts from
# starting services, and cloud-init's postinst only enables its units for the next boot. So
# that this machine is not reconfigured by cloud-init at that boot, the script writes
# /etc/cloud/cloud-init.disabled (cloud-init's own switch) when it installs the package; the
# schema command ignores that file.
set -euo pipefail

missing=()
command -v cloud-init >/dev/null 2>&1 || missing+=(cloud-init)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)

report() {
  echo "image tools: cloud-init $(cloud-init --version 2>&1 | awk '{print $NF}')," \
    "shellcheck $(shellcheck --version | sed -n 's/^version: //p'), $(systemd-analyze --version | head -1)"
}

if [ ${#missing[@]} -eq 0 ]; then
  report
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: tests/images.rs needs ${missing[*]}: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
made_policy=0
cleanup() { if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
new_cloud_init=0
if [[ " ${missing[*]} " == *" cloud-init "* ]]; then
  new_cloud_init=1
  mkdir -p /etc/cloud
  touch /etc/cloud/cloud-init.disabled
fi

# scripts/test.sh runs other apt installs beside this one: apt_get waits out their locks.
# shellcheck source=SCRIPTDIR/lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
  for attempt in 1 2 3; do
    apt_get update -qq && break
    [ "$attempt" -lt 3 ] || exit 1
    sleep 10
  done
fi
install() { apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
# Stale package lists (a package moved on the mirror): refresh them once and try again.
install || { apt_get update -qq && install; }
if [ "$new_cloud_init" = 1 ]; then
  echo "image tools: installed ${missing[*]}; cloud-init stays off at boot (/etc/cloud/cloud-init.disabled)"
fi
report
