# shellcheck shell=bash disable=SC2034 # the variables are read by the scripts that source this
# Shared settings and helpers for scripts/openstack-local/{setup,start,stop,service,smoke}.sh: a
# real OpenStack compute control plane (Keystone, Placement, Glance, Neutron server, Nova with the
# fake virt driver, on PostgreSQL and RabbitMQ from Debian's packages) for the Nova tests.
# Everything listens on 127.0.0.1 only. Sourced, not executed:
#
#   . "$(dirname "$0")/../lib/openstack.sh"
set -euo pipefail

# scripts/openstack-local/: the entry points and the Python helpers they run.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../openstack-local" && pwd)"
OSL_DIR="${OSL_DIR:-/tmp/oslocal}"          # base dir (packages' extra files, golden snapshot)
OSL_STATE="${OSL_STATE:-$OSL_DIR/state}"     # live state: configs, DB files, logs, pids
OSL_GOLDEN="$OSL_DIR/golden.tar.gz"          # initialised state made by setup.sh

# Ports (5000/8774/... are avoided on purpose: other tools on the box, e.g. moto, use 5000)
KEYSTONE_PORT="${KEYSTONE_PORT:-15000}"
NOVA_PORT="${NOVA_PORT:-18774}"
PLACEMENT_PORT="${PLACEMENT_PORT:-18778}"
GLANCE_PORT="${GLANCE_PORT:-19292}"
NEUTRON_PORT="${NEUTRON_PORT:-19696}"
PG_PORT="${PG_PORT:-15432}"
RABBIT_PORT="${RABBIT_PORT:-5672}"
RABBIT_DIST_PORT="${RABBIT_DIST_PORT:-25672}"
EPMD_PORT="${EPMD_PORT:-4369}"

PGBIN=/usr/lib/postgresql/15/bin
PY=/usr/bin/python3                          # Debian's python (NOT pyenv): the OpenStack libs live there
DB="postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT"
KS_URL="http://127.0.0.1:$KEYSTONE_PORT/v3"
export KS_URL NOVA_PORT PLACEMENT_PORT GLANCE_PORT NEUTRON_PORT

# Fixed ids so tests can hard-code them
IMAGE_ID=11111111-2222-3333-4444-555555555555
FLAVOR_ID=1

E="$OSL_STATE/etc"; L="$OSL_STATE/logs"; R="$OSL_STATE/run"; D="$OSL_STATE/data"; B="$OSL_STATE/bin"

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc | xargs printf '%.1f'; }
log() { echo "[oslocal $(date +%T)] $*"; }

rabbit_env() {
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBIT_PORT
  export RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT=$EPMD_PORT
  export RABBITMQ_MNESIA_BASE=$OSL_STATE/rabbitmq/mnesia
  export RABBITMQ_LOG_BASE=$OSL_STATE/rabbitmq/log
  export RABBITMQ_PID_FILE=$OSL_STATE/rabbitmq/run/rabbitmq.pid
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# wait_http URL TIMEOUT_S : wait until URL answers 2xx/3xx
wait_http() {
  local url=$1 t=${2:-120} i=0
  while [ $i -lt $((t * 4)) ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
    case "$code" in 2*|3*) return 0 ;; esac
    sleep 0.25; i=$((i + 1))
  done
  echo "timeout waiting for $url (last code $code)" >&2; return 1
}

# start_bg NAME CMD... : start detached, pid in $R/NAME.pid, output in $L/NAME.out
start_bg() {
  local name=$1; shift
  setsid "$@" > "$L/$name.out" 2>&1 < /dev/null &
  echo $! > "$R/$name.pid"
}

write_launchers() {
  mkdir -p "$B"
  local m
  for m in nova.cmd.manage nova.cmd.conductor nova.cmd.scheduler nova.cmd.compute \
           glance.cmd.api glance.cmd.manage \
           neutron.cmd.eventlet.server neutron.db.migration.cli; do
    local n
    case $m in
      nova.cmd.*) n=nova-${m##*.} ;;
      glance.cmd.*) n=glance-${m##*.} ;;
      neutron.cmd.eventlet.server) n=neutron-server ;;
      neutron.db.migration.cli) n=neutron-db-manage ;;
    esac
    printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$PY" "$m" > "$B/$n"
    chmod +x "$B/$n"
  done
  printf 'from nova.api.openstack.compute.wsgi import init_application\napplication = init_application()\n' > "$B/nova-api-wsgi.py"
}

# Service credentials: every service uses the bootstrap admin (test-only setup).
auth_block() {
cat <<EOF
auth_url = $KS_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = admin
username = admin
password = admin
region_name = RegionOne
EOF
}

uwsgi_ini() { # name port wsgi-file env
cat <<EOF
[uwsgi]
plugins = python3
http-socket = 127.0.0.1:$2
wsgi-file = $3
processes = 1
threads = ${UWSGI_THREADS:-4}
master = true
lazy-apps = true
die-on-term = true
buffer-size = 65535
; uwsgi's plain http-socket closes the connection after each response: say so,
; otherwise keep-alive clients (python-requests, reqwest) get "connection reset".
add-header = Connection: close
env = $4
pidfile = $R/$1.pid
EOF
}

write_configs() {
  mkdir -p "$E"/{nova,placement,glance,neutron} "$L" "$R" "$D"/{nova/lock,glance/images,glance/staging,glance/tasks,glance/lock,neutron/lock,fernet-keys,credential-keys}
  local share="$OSL_DIR/share"
  cp "$share/nova-api-paste.ini" "$E/nova/api-paste.ini"
  cp "$share/glance-api-paste.ini" "$E/glance/glance-api-paste.ini"
  cp "$share/neutron-api-paste.ini" "$E/neutron/api-paste.ini"

  # ---------------- keystone
  cat > "$E/keystone.conf" <<EOF
[DEFAULT]
log_file = $L/keystone.log
[database]
connection = $DB/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $D/fernet-keys
[fernet_receipts]
key_repository = $D/fernet-keys
[credential]
key_repository = $D/credential-keys
EOF
  uwsgi_ini keystone "$KEYSTONE_PORT" /usr/bin/keystone-wsgi-public "OS_KEYSTONE_CONFIG_FILES=$E/keystone.conf" > "$E/keystone-uwsgi.ini"

  # ---------------- placement
  cat > "$E/placement/placement.conf" <<EOF
[DEFAULT]
log_file = $L/placement.log
[api]
auth_strategy = keystone
[placement_database]
connection = $DB/placement
[keystone_authtoken]
www_authenticate_uri = $KS_URL
$(auth_block)
EOF
  uwsgi_ini placement "$PLACEMENT_PORT" /usr/bin/placement-api "OS_PLACEMENT_CONFIG_DIR=$E/placement" > "$E/placement-uwsgi.ini"

  # ---------------- nova (api/conductor/scheduler): nova.conf ; compute: nova-cpu.conf (no DB access)
  local common
  common="transport_url = rabbit://guest:guest@127.0.0.1:$RABBIT_PORT/
host = oslocal
my_ip = 127.0.0.1
state_path = $D/nova
log_dir = $L
instance_name_template = instance-%08x"
  local svc_sections
  svc_sections="[placement]
$(auth_block)
[glance]
$(auth_block)
[neutron]
$(auth_block)
[keystone_authtoken]
www_authenticate_uri = $KS_URL
$(auth_block)
[service_user]
send_service_user_token = false
[oslo_concurrency]
lock_path = $D/nova/lock
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false"
  cat > "$E/nova/nova.conf" <<EOF
[DEFAULT]
$common
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = $NOVA_PORT
osapi_compute_workers = 1
metadata_listen = 127.0.0.1
metadata_listen_port = $((NOVA_PORT + 1))
[api]
auth_strategy = keystone
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 2
[filter_scheduler]
enabled_filters = ComputeFilter
[wsgi]
api_paste_config = $E/nova/api-paste.ini
$svc_sections
EOF
  cat > "$E/nova/nova-cpu.conf" <<EOF
[DEFAULT]
$common
compute_driver = fake.FakeDriver
heal_instance_info_cache_interval = -1
$svc_sections
EOF
  uwsgi_ini nova-api "$NOVA_PORT" "$B/nova-api-wsgi.py" "OS_NOVA_CONFIG_DIR=$E/nova" > "$E/nova-api-uwsgi.ini"
  sed -i 's/^threads = .*/threads = 1/' "$E/nova-api-uwsgi.ini"   # nova-api is eventlet-patched: 1 thread/process

  # ---------------- glance (file store)
  cat > "$E/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GLANCE_PORT
workers = 1
log_file = $L/glance-api.log
enabled_backends = file:file
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $D/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $D/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $D/glance/tasks
[database]
connection = $DB/glance
[keystone_authtoken]
www_authenticate_uri = $KS_URL
$(auth_block)
[paste_deploy]
flavor = keystone
config_file = $E/glance/glance-api-paste.ini
[oslo_concurrency]
lock_path = $D/glance/lock
EOF

  # ---------------- neutron (ML2, no agents, no mechanism drivers: only the API/DB side)
  cat > "$E/neutron/neutron.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $NEUTRON_PORT
core_plugin = ml2
service_plugins =
auth_strategy = keystone
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
transport_url = rabbit://guest:guest@127.0.0.1:$RABBIT_PORT/
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
api_paste_config = $E/neutron/api-paste.ini
state_path = $D/neutron
log_file = $L/neutron-server.log
[database]
connection = $DB/neutron
[keystone_authtoken]
www_authenticate_uri = $KS_URL
$(auth_block)
[nova]
$(auth_block)
[oslo_concurrency]
lock_path = $D/neutron/lock
EOF
  cat > "$E/neutron/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat,vlan
tenant_network_types =
mechanism_drivers =
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
EOF
}

start_pg() {
  mkdir -p "$OSL_STATE/pg/sock"; chown -R postgres:postgres "$OSL_STATE/pg"
  su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $OSL_STATE/pg/data -l $OSL_STATE/pg/postgres.log -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -k $OSL_STATE/pg/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300\" start" > /dev/null
}

start_rabbit() {
  rm -rf "$OSL_STATE/rabbitmq"; mkdir -p "$OSL_STATE/rabbitmq/run"; chown -R rabbitmq:rabbitmq "$OSL_STATE/rabbitmq"
  ( rabbit_env; start_bg rabbitmq rabbitmq-server )
}

wait_rabbit() { ( rabbit_env; rabbitmqctl wait "$RABBITMQ_PID_FILE" --timeout 90 > "$L/rabbitmq-wait.out" 2>&1 ); }

start_base_services() {   # need only postgres
  start_bg keystone-uwsgi uwsgi --ini "$E/keystone-uwsgi.ini"
  start_bg placement-uwsgi uwsgi --ini "$E/placement-uwsgi.ini"
  start_bg glance-api "$B/glance-api" --config-file "$E/glance/glance-api.conf"
}

# nova-scheduler/-conductor/-compute look up placement in the Keystone catalog
# when they start and exit if they can't: start them once keystone+placement answer.
start_nova_neutron() {    # need rabbitmq + keystone (+ catalog) + placement
  wait_http "$KS_URL" 180
  wait_http "http://127.0.0.1:$PLACEMENT_PORT/" 180
  start_bg neutron-server "$B/neutron-server" --config-file "$E/neutron/neutron.conf" --config-file "$E/neutron/ml2_conf.ini"
  start_bg nova-conductor "$B/nova-conductor" --config-file "$E/nova/nova.conf"
  start_bg nova-scheduler "$B/nova-scheduler" --config-file "$E/nova/nova.conf"
  start_bg nova-compute "$B/nova-compute" --config-file "$E/nova/nova-cpu.conf"
  start_bg nova-api-uwsgi uwsgi --ini "$E/nova-api-uwsgi.ini"
}

wait_openstack_services() {
  wait_http "$KS_URL" 180
  wait_http "http://127.0.0.1:$PLACEMENT_PORT/" 180
  wait_http "http://127.0.0.1:$GLANCE_PORT/versions" 180
  wait_http "http://127.0.0.1:$NEUTRON_PORT/" 180
  wait_http "http://127.0.0.1:$NOVA_PORT/" 180
  # compute service up + hypervisor registered + resource provider with inventory in placement
  "$PY" "$HERE/wait_compute.py"
}
