#!/bin/bash
# Kills or starts one service of the local plane, for the fault tests:
#
#   scripts/openstack-local/service.sh kill nova-api    # SIGKILL its process group (Unavailable)
#   scripts/openstack-local/service.sh start nova-api   # start it again and wait until it answers
#
# Only nova-api is supported: it is the one the hybrid test takes down.
# shellcheck source=SCRIPTDIR/../lib/openstack.sh
. "$(dirname "$0")/../lib/openstack.sh"
action=${1:-}; service=${2:-}
[ "$service" = nova-api ] || { echo "usage: $0 kill|start nova-api" >&2; exit 2; }
pidfile="$R/nova-api-uwsgi.pid"
case "$action" in
  kill)
    [ -f "$pidfile" ] || { echo "nova-api is not running (no $pidfile)" >&2; exit 1; }
    # start_bg runs each service under setsid: its pid is its process group (uwsgi master + workers).
    kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    log "nova-api killed" ;;
  start)
    if [ -f "$pidfile" ] && kill -0 -- "-$(cat "$pidfile")" 2>/dev/null; then
      log "nova-api already running"; exit 0
    fi
    start_bg nova-api-uwsgi uwsgi --ini "$E/nova-api-uwsgi.ini"
    wait_http "http://127.0.0.1:$NOVA_PORT/" 120
    log "nova-api answering" ;;
  *) echo "usage: $0 kill|start nova-api" >&2; exit 2 ;;
esac
