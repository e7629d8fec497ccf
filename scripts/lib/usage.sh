# shellcheck shell=bash
# The argument handling of the scripts whose settings come from the environment (the benchmarks,
# the soak). Sourced, not executed:
#
#   . "$root/scripts/lib/usage.sh"
#   env_script_args "${BASH_SOURCE[0]}" "$@"      # no arguments, or --help
#   whole_numbers "REQUESTS and ROUNDS" "$requests" "$rounds"

# env_script_args SCRIPT [ARGS]: nothing to do without arguments; --help prints SCRIPT's opening
# comment (up to `set -euo`) and exits 0; anything else is a usage error (exit 64).
env_script_args() {
  local script="$1"
  shift
  case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $script (settings come from the environment; --help lists them)" >&2; exit 64 ;;
  esac
}

# whole_numbers NAMES VALUE...: exits 64 naming NAMES unless every VALUE is a whole number.
whole_numbers() {
  local names="$1" n
  shift
  for n in "$@"; do
    case "$n" in '' | *[!0-9]*) echo "error: $names must be whole numbers" >&2; exit 64 ;; esac
  done
}
