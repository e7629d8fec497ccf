# shellcheck shell=bash
# Sourced by the install scripts: `apt_get ARGS...` runs apt-get and, while another apt holds
# its locks (a sibling installer that scripts/test.sh starts beside this one, unattended-upgrades
# on a fresh machine, a hand-run install), waits and tries again instead of failing: up to 10 min.
# Any other failure returns at once. Sourced, not executed:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"    # from a script in scripts/
#   apt_get update -qq && apt_get install -y -qq PACKAGE...
apt_get() {
  local attempt err rc
  err="$(mktemp)"
  for attempt in $(seq 60); do
    rc=0
    apt-get -o DPkg::Lock::Timeout=600 "$@" 2>"$err" || rc=$?
    cat "$err" >&2
    if [ "$rc" = 0 ] || ! grep -q -e 'Could not get lock' -e 'Unable to lock' "$err"; then break; fi
    echo "apt: another apt-get holds its lock; trying again in 10 s ($attempt/60)" >&2
    sleep 10
  done
  rm -f "$err"
  return "$rc"
}
