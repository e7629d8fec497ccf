#!/bin/bash
# One-time (per machine) setup of a local OpenStack compute control plane
# from Debian bookworm's own packages (OpenStack Zed: keystone 22, nova 26,
# placement 8, glance 25, neutron 21), then builds a "golden" initialised
# state ($OSL_DIR/golden.tar.gz) that start.sh restores in a few seconds.
# Must run as root. Unattended. Idempotent.
#
#   scripts/openstack-local/setup.sh           # ~4 min of apt + ~2 min of set-up the first time
#   scripts/openstack-local/setup.sh --force   # rebuild the golden state
# shellcheck source=SCRIPTDIR/../lib/openstack.sh
. "$(dirname "$0")/../lib/openstack.sh"
# shellcheck source=SCRIPTDIR/../lib/apt.sh
. "$(dirname "$0")/../lib/apt.sh"
T0=$(now)

# ---------------------------------------------------------------- 1. packages
# Only the python3-* library packages are installed, NOT the daemon packages
# (keystone, nova-api, nova-compute...): those pull debconf/dbconfig-common,
# apache/libvirt/qemu and init scripts. Services are launched by our own
# 3-line launchers (the same entry points the packaged /usr/bin scripts call).
PKGS="python3-nova python3-keystone python3-placement python3-glance python3-neutron
python3-psycopg2 python3-keystoneauth1 rabbitmq-server postgresql uwsgi-core uwsgi-plugin-python3 curl bc python3-openstackclient"
missing=()
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  compgen -G '/var/lib/apt/lists/*_Packages' > /dev/null || apt_get update
  made_policy=0
  # keep package postinsts from starting system-wide rabbitmq/postgres (we run our own, loopback only)
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt_get install -y --no-install-recommends "${missing[@]}"
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "packages installed in $(elapsed "$T0")s"
fi

# paste-deploy ini files live in the *-common packages, whose postinst wants debconf:
# fetch the .debs with apt and only extract the files.
mkdir -p "$OSL_DIR/share"
if [ ! -f "$OSL_DIR/share/neutron-api-paste.ini" ]; then
  tmp=$(mktemp -d); ( cd "$tmp" && apt-get download nova-common glance-common neutron-common 2>/dev/null && for f in *.deb; do dpkg-deb -x "$f" x; done )
  cp "$tmp/x/usr/share/nova-common/api-paste.ini" "$OSL_DIR/share/nova-api-paste.ini"
  cp "$tmp/x/usr/share/glance-common/glance-api-paste.ini" "$OSL_DIR/share/glance-api-paste.ini"
  cp "$tmp/x/usr/share/neutron-common/api-paste.ini" "$OSL_DIR/share/neutron-api-paste.ini"
  rm -rf "$tmp"
fi

# ---------------------------------------------------------------- 2. golden state
if [ -f "$OSL_GOLDEN" ] && [ "${1:-}" != "--force" ]; then log "golden state exists ($OSL_GOLDEN); use --force to rebuild"; exit 0; fi
"$HERE/stop.sh" > /dev/null 2>&1 || true
T1=$(now)
rm -rf "$OSL_STATE"; mkdir -p "$OSL_STATE"
write_launchers; write_configs

mkdir -p "$OSL_STATE/pg"; chown postgres:postgres "$OSL_STATE/pg"
su postgres -s /bin/sh -c "$PGBIN/initdb -D $OSL_STATE/pg/data -A trust -U postgres --no-sync" > "$L/initdb.log"
start_pg
for db in keystone placement nova_api nova nova_cell0 glance neutron; do
  "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database $db"
done
start_rabbit

# DB schemas, in parallel
(
  K="keystone-manage --config-file $E/keystone.conf"
  $K db_sync && $K fernet_setup --keystone-user root --keystone-group root &&
  $K credential_setup --keystone-user root --keystone-group root &&
  $K bootstrap --bootstrap-password admin --bootstrap-project-name admin --bootstrap-username admin \
     --bootstrap-admin-url "$KS_URL/" --bootstrap-public-url "$KS_URL/" --bootstrap-internal-url "$KS_URL/" \
     --bootstrap-region-id RegionOne
) > "$L/keystone-init.out" 2>&1 & p1=$!
( OS_PLACEMENT_CONFIG_DIR="$E/placement" placement-manage --config-dir "$E/placement" db sync ) > "$L/placement-init.out" 2>&1 & p2=$!
(
  N="$B/nova-manage --config-file $E/nova/nova.conf"
  $N api_db sync && $N cell_v2 map_cell0 --database_connection "$DB/nova_cell0" &&
  $N cell_v2 create_cell --name cell1 && $N db sync
) > "$L/nova-init.out" 2>&1 & p3=$!
( "$B/glance-manage" --config-file "$E/glance/glance-api.conf" db_sync ) > "$L/glance-init.out" 2>&1 & p4=$!
( "$B/neutron-db-manage" --config-file "$E/neutron/neutron.conf" --config-file "$E/neutron/ml2_conf.ini" upgrade heads ) > "$L/neutron-init.out" 2>&1 & p5=$!
rc=0
for p in "$p1" "$p2" "$p3" "$p4" "$p5"; do wait "$p" || rc=1; done
[ $rc = 0 ] || { tail -n 20 "$L"/*-init.out; echo "DB init failed" >&2; exit 1; }
log "schemas created in $(elapsed "$T1")s"

start_base_services
wait_http "$KS_URL" 180
"$PY" "$HERE/register_keystone.py"
wait_rabbit
start_nova_neutron
wait_openstack_services

# flavor + a tiny (1 KiB) image with fixed ids
TOKEN=$(curl -s -i -H 'Content-Type: application/json' \
  -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"admin"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' \
  "$KS_URL/auth/tokens" | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r')
curl -sf -o /dev/null -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"flavor\":{\"name\":\"m1.tiny\",\"ram\":512,\"vcpus\":1,\"disk\":1,\"id\":\"$FLAVOR_ID\"}}" \
  "http://127.0.0.1:$NOVA_PORT/v2.1/flavors"
curl -sf -o /dev/null -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"name\":\"fake-image\",\"id\":\"$IMAGE_ID\",\"disk_format\":\"raw\",\"container_format\":\"bare\",\"visibility\":\"public\"}" \
  "http://127.0.0.1:$GLANCE_PORT/v2/images"
head -c 1024 /dev/zero | curl -sf -o /dev/null -X PUT -H "X-Auth-Token: $TOKEN" \
  -H 'Content-Type: application/octet-stream' --data-binary @- \
  "http://127.0.0.1:$GLANCE_PORT/v2/images/$IMAGE_ID/file"
log "flavor $FLAVOR_ID and image $IMAGE_ID created"

"$HERE/stop.sh"
tar -C "$OSL_STATE" -czf "$OSL_GOLDEN" etc bin data pg
log "golden state written to $OSL_GOLDEN ($(du -h "$OSL_GOLDEN" | cut -f1)); init took $(elapsed "$T1")s; setup total $(elapsed "$T0")s"
