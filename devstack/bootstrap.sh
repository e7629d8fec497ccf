#!/usr/bin/env bash
# Prepares a fresh DevStack (devstack/local.conf, after stack.sh) for Skyburst: the worker image
# in Glance, the worker flavor, a private network routed to the external one, the front end's
# security group, the operator's key pair, and the front end itself (skyburst serve + skyburst
# controller on one Nova instance, with a floating IP, set up through cloud-init). Both serve
# HTTPS with key pairs the instance makes at first boot (devstack/make-tls.sh).
#
#   source ~/devstack/openrc admin admin      # or: export OS_CLOUD=...
#   devstack/bootstrap.sh --image-file skyburst-worker.qcow2 --admin-cidr 192.0.2.0/24 \
#       --public-key ~/.ssh/id_ed25519.pub --config skyburst.toml
#
# Idempotent: every step looks for what it would make (by name, in the current project) and makes
# only what is missing, so a second run changes nothing. Each thing is reported on one line,
# "created|found <kind> <name> <id>". `--help` lists every option.
set -euo pipefail
# Command substitutions stop at their first failure too (bash clears -e in them otherwise).
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
all_steps=(image flavor network secgroup keypair frontend)

usage() {
  cat <<EOF
Usage: devstack/bootstrap.sh [OPTIONS]

Bootstraps Skyburst on an OpenStack cloud (a DevStack made with devstack/local.conf) with the
openstack CLI, using your OS_CLOUD or OS_* credentials (flavors need an admin). Steps, run in
this order; each one finds what exists (by name) and creates only what is missing:

  image     upload the worker image (qcow2) to Glance as <prefix>-worker
  flavor    create the worker flavor <prefix>-worker
  network   network <prefix>-private, subnet <prefix>-private-subnet, router <prefix>-router
            to the external network
  secgroup  security group <prefix>-frontend: ingress tcp/22 from --admin-cidr, tcp/<port>
            from --client-cidr, and tcp/<controller-port> from --subnet-cidr (the Nova
            workers fetch their AWS credentials from the controller), nothing else
  keypair   key pair <prefix>-admin from --public-key
  frontend  a floating IP on the external network (described <prefix>-frontend), then server
            <prefix>-frontend (skyburst serve + skyburst controller, through cloud-init
            user-data) on <prefix>-private, with that floating IP. Both serve HTTPS with
            self-signed ECDSA key pairs the instance makes at first boot in /etc/skyburst/tls
            (devstack/make-tls.sh); the front end's names the floating IP or --frontend-name

Options:
  --only STEPS            comma list of steps to run (default: all of them)
  --prefix NAME           prefix of every name (default: skyburst; letters, digits, '-')
  --image-file PATH       the worker image, qcow2 (images/build-qcow2.sh)       [image]
  --flavor-vcpus N        worker flavor vCPUs (default: 2)                      [flavor]
  --flavor-ram-mib N      worker flavor RAM in MiB (default: 4096)              [flavor]
  --flavor-disk-gb N      worker flavor root disk in GB (default: 20)           [flavor]
  --external-network NAME the network floating IPs come from (default: public,
                          DevStack's)                                           [network, frontend]
  --subnet-cidr CIDR      the private subnet (default: 10.42.0.0/24)            [network]
  --dns-nameserver IP     DNS server for the private subnet (default: none,
                          Neutron's DHCP forwards to the host's resolver)       [network]
  --admin-cidr CIDR       who may SSH in (required; 0.0.0.0/0 is refused)       [secgroup]
  --client-cidr CIDR      who may reach the front end's port (default: the
                          admin CIDR)                                           [secgroup]
  --frontend-port PORT    the front end's port (default: 8080)                  [secgroup, frontend]
  --controller-port PORT  the controller's /metrics and /v1/credentials port
                          (HTTPS), controller.metrics_port (default: 9464)      [secgroup]
  --public-key PATH       the admin's SSH public key                            [keypair]
  --config PATH           the Skyburst config the front end and the controller
                          run with (e.g. examples/configs/hybrid.toml); its
                          credentials.url must be https:// (the controller's
                          private address)                                      [frontend]
  --frontend-name NAME    the DNS name or IP address clients reach the front end
                          by, put in its certificate (default: the floating IP;
                          with --print-user-data: none, only the instance's own
                          hostname and addresses)                               [frontend]
  --frontend-flavor NAME  flavor of the front end (default: the worker flavor)  [frontend]
  --os-cloud NAME         the clouds.yaml entry the controller uses on the
                          instance (default: skyburst)                          [frontend]
  --print-user-data       print the front end's user-data and exit (no cloud calls)
  -h, --help              this text

Secrets never travel in user-data (any process on the instance can read it back from the
metadata service): the TLS private keys are made on the instance, and after the frontend step
you copy the bearer tokens, clouds.yaml and AWS credentials over SSH, as the step prints (it
also says how to trust the front end's certificate, or to put a real one in its place).
EOF
}

die() {
  echo "bootstrap: error: $*" >&2
  exit 1
}
warn() { echo "bootstrap: warning: $*" >&2; }
note() { echo "bootstrap: $*" >&2; }
# The machine-readable record of each thing: "created|found <kind> <name> <id>" on stdout.
report() { echo "$1 $2 $3 $4"; }

# ---------------------------------------------------------------- options
only=""
prefix=skyburst
image_file=""
flavor_vcpus=2
# 4 GiB: a worker instance runs workers_per_instance processes of ~300 MiB each plus the OS.
flavor_ram_mib=4096
# 20 GB: Debian's cloud image grows to ~2 GB with the binary and the model (34 MB of weights).
flavor_disk_gb=20
external_network=public
# A /24 holds 253 instances (Neutron keeps .1 for the router and .2 for DHCP): the hybrid
# example's 8 private workers plus the front end with room to spare.
subnet_cidr=10.42.0.0/24
dns_nameserver=""
admin_cidr=""
client_cidr=""
frontend_port=8080
controller_port=9464
public_key=""
config=""
frontend_flavor=""
frontend_name=""
os_cloud=skyburst
print_user_data=0

need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --print-user-data) print_user_data=1; shift; continue ;;
    --only | --prefix | --image-file | --flavor-vcpus | --flavor-ram-mib | --flavor-disk-gb | \
      --external-network | --subnet-cidr | --dns-nameserver | --admin-cidr | --client-cidr | \
      --frontend-port | --controller-port | --public-key | --config | --frontend-flavor | --os-cloud | \
      --frontend-name)
      need_value "$@" ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  case "$1" in
    --only) only=$2 ;;
    --prefix) prefix=$2 ;;
    --image-file) image_file=$2 ;;
    --flavor-vcpus) flavor_vcpus=$2 ;;
    --flavor-ram-mib) flavor_ram_mib=$2 ;;
    --flavor-disk-gb) flavor_disk_gb=$2 ;;
    --external-network) external_network=$2 ;;
    --subnet-cidr) subnet_cidr=$2 ;;
    --dns-nameserver) dns_nameserver=$2 ;;
    --admin-cidr) admin_cidr=$2 ;;
    --client-cidr) client_cidr=$2 ;;
    --frontend-port) frontend_port=$2 ;;
    --controller-port) controller_port=$2 ;;
    --public-key) public_key=$2 ;;
    --config) config=$2 ;;
    --frontend-flavor) frontend_flavor=$2 ;;
    --os-cloud) os_cloud=$2 ;;
    --frontend-name) frontend_name=$2 ;;
  esac
  shift 2
done

# The steps to run, always in the canonical order (a network before the server that uses it).
declare -A selected=()
if [ -z "$only" ]; then
  for s in "${all_steps[@]}"; do selected[$s]=1; done
else
  IFS=, read -r -a wanted <<<"$only"
  for s in "${wanted[@]}"; do
    case " ${all_steps[*]} " in
      *" $s "*) selected[$s]=1 ;;
      *) die "unknown step '$s' in --only; the steps are: ${all_steps[*]}" ;;
    esac
  done
fi
runs() { [ -n "${selected[$1]:-}" ]; }

# ---------------------------------------------------------------- validation (no cloud calls)
# Everything the selected steps need is checked before the first call, so a typo fails in a
# second with nothing half-made.
[[ $prefix =~ ^[a-z0-9][a-z0-9-]{0,39}$ ]] ||
  die "--prefix '$prefix': use 1-40 lowercase letters, digits and '-' (it starts every name)"

positive() { [[ $2 =~ ^[1-9][0-9]{0,6}$ ]] || die "$1 '$2' is not a positive whole number"; }

# cidr OPTION VALUE: a network address (no host bits), printed back; IPv4 or IPv6.
cidr() {
  python3 - "$1" "$2" <<'PY' || exit 1
import ipaddress, sys
option, value = sys.argv[1], sys.argv[2]
try:
    net = ipaddress.ip_network(value, strict=False)
except ValueError as e:
    sys.exit(f"bootstrap: error: {option} '{value}' is not a CIDR ({e})")
if str(net) != value:
    sys.exit(f"bootstrap: error: {option} '{value}' has host bits set: did you mean {net}?")
print(f"IPv{net.version}")
PY
}

if runs frontend || [ "$print_user_data" = 1 ]; then
  [ -n "$config" ] || die "the frontend step needs --config FILE: the Skyburst config the front end runs with"
  [ -f "$config" ] || die "--config $config: no such file"
  # User-data is readable by every process on the instance (the metadata service serves it), so
  # the config must not hold the bearer tokens: they go in /etc/skyburst/secrets/tokens.
  if grep -Eq '^[[:space:]]*(frontend\.)?tokens[[:space:]]*=' "$config"; then
    die "$config sets frontend.tokens: user-data is readable by anyone on the instance. Remove them; copy them to /etc/skyburst/secrets/tokens over SSH after this step (one token per line)"
  fi
  # The workers fetch AWS credentials from the controller at credentials.url: never in cleartext
  # off the machine (skyburst refuses it too).
  python3 - "$config" <<'PY' || exit 1
import ipaddress, re, sys, urllib.parse
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
try:
    import tomllib
except ImportError:  # Python < 3.11: the url line of the [credentials] table
    url, table = None, ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            table = line.strip("[] ")
            continue
        m = re.match(r'(credentials\.)?url\s*=\s*["\']([^"\']*)', line)
        if m and (m.group(1) or table == "credentials"):
            url = m.group(2)
else:
    try:
        url = (tomllib.loads(text).get("credentials") or {}).get("url")
    except tomllib.TOMLDecodeError as e:
        sys.exit(f"bootstrap: error: --config {path} is not valid TOML: {e}")
if isinstance(url, str) and url.lower().startswith("http://"):
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.exit(
            f"bootstrap: error: {path} sets credentials.url = \"{url}\": plain HTTP would carry the Nova "
            "workers' AWS credentials across the network in cleartext, and skyburst refuses it. Use "
            "https:// (e.g. https://CONTROLLER-PRIVATE-IP:9464/v1/credentials): the controller serves "
            "HTTPS with a certificate the instance makes at first boot, which the workers pin"
        )
PY
  [[ $os_cloud =~ ^[A-Za-z0-9_.-]+$ ]] || die "--os-cloud '$os_cloud': use letters, digits, '_', '.' and '-'"
  if [ -n "$frontend_name" ]; then
    # A name goes in the certificate as a DNS name or an IP address, and into user-data as is.
    python3 -c 'import ipaddress, sys; ipaddress.ip_address(sys.argv[1])' "$frontend_name" 2>/dev/null ||
      { [ ${#frontend_name} -le 253 ] &&
        [[ $frontend_name =~ ^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]]; } ||
      die "--frontend-name '$frontend_name' is neither a DNS name (e.g. skyburst.example.org) nor an IP address"
  fi
fi
if runs secgroup || runs frontend || [ "$print_user_data" = 1 ]; then
  if ! [[ $frontend_port =~ ^[1-9][0-9]{0,4}$ ]] || [ "$frontend_port" -gt 65535 ]; then
    die "--frontend-port '$frontend_port' is not a TCP port (1-65535)"
  fi
  [ "$frontend_port" != 22 ] || die "--frontend-port 22 is SSH's port; pick another (default 8080)"
fi

if [ "$print_user_data" = 0 ]; then
  if runs image; then
    [ -n "$image_file" ] || die "the image step needs --image-file PATH (the qcow2 images/build-qcow2.sh builds)"
    [ -f "$image_file" ] || die "--image-file $image_file: no such file (build it with images/build-qcow2.sh)"
    # A qcow2 file starts with "QFI\xfb"; a raw or truncated file would boot nothing.
    magic=$(od -An -tx1 -N4 "$image_file" | tr -d ' \n')
    [ "$magic" = 514649fb ] || die "--image-file $image_file is not a qcow2 image (its first bytes are '$magic', not 514649fb)"
  fi
  if runs flavor; then
    positive --flavor-vcpus "$flavor_vcpus"
    positive --flavor-ram-mib "$flavor_ram_mib"
    positive --flavor-disk-gb "$flavor_disk_gb"
  fi
  if runs network; then
    subnet_version=$(cidr --subnet-cidr "$subnet_cidr")
    [ -z "$dns_nameserver" ] || python3 -c 'import ipaddress, sys; ipaddress.ip_address(sys.argv[1])' "$dns_nameserver" 2>/dev/null ||
      die "--dns-nameserver '$dns_nameserver' is not an IP address"
  fi
  if runs secgroup; then
    [ -n "$admin_cidr" ] || die "the secgroup step needs --admin-cidr CIDR: the network SSH is allowed from (e.g. your office's 192.0.2.0/24); there is no default"
    admin_ethertype=$(cidr --admin-cidr "$admin_cidr")
    case "$admin_cidr" in
      0.0.0.0/0 | ::/0) die "--admin-cidr $admin_cidr opens SSH to the whole Internet: give your admin network's CIDR" ;;
    esac
    client_cidr=${client_cidr:-$admin_cidr}
    client_ethertype=$(cidr --client-cidr "$client_cidr")
    subnet_ethertype=$(cidr --subnet-cidr "$subnet_cidr")
    if ! [[ $controller_port =~ ^[1-9][0-9]{0,4}$ ]] || [ "$controller_port" -gt 65535 ] ||
      [ "$controller_port" = "$frontend_port" ] || [ "$controller_port" = 22 ]; then
      die "--controller-port '$controller_port' must be a TCP port other than 22 and the front end's (default 9464)"
    fi
  fi
  if runs keypair; then
    [ -n "$public_key" ] || die "the keypair step needs --public-key PATH (e.g. ~/.ssh/id_ed25519.pub)"
    [ -f "$public_key" ] || die "--public-key $public_key: no such file"
    # A private key here would be uploaded to Nova: refuse anything but one public key line.
    read -r key_type key_body _ <"$public_key" || true
    if ! [[ ${key_type:-} =~ ^(ssh-|ecdsa-|sk-) ]] || [ -z "${key_body:-}" ] || [ "$(grep -c . "$public_key")" != 1 ]; then
      die "--public-key $public_key is not an OpenSSH public key (one line: 'ssh-ed25519 AAAA... comment')"
    fi
  fi
fi

# ---------------------------------------------------------------- user-data
# indent N: every non-empty line of stdin, indented by N spaces (a YAML block scalar's body).
indent() { sed "s/^\(.\)/$(printf '%*s' "$1" '')\1/"; }

# The front end's cloud-config: the operator's config, the two units, the environment they read,
# the script that makes their TLS key pairs, and a secrets directory the operator fills over
# SSH. The binary comes with the image (images/build-qcow2.sh puts it at
# /usr/local/bin/skyburst); nothing here is secret. frontend_name, when set, is validated above
# (a DNS name or an IP address: nothing to quote in YAML).
render_user_data() {
  local make_tls="[/usr/local/lib/skyburst/make-tls.sh]"
  [ -z "$frontend_name" ] || make_tls="[/usr/local/lib/skyburst/make-tls.sh, \"$frontend_name\"]"
  cat <<EOF
#cloud-config
# The Skyburst front end (skyburst serve + skyburst controller), rendered by devstack/bootstrap.sh.
# Nothing here is secret: the TLS keys are made on the instance at first boot, tokens and cloud
# credentials are copied over SSH after boot.
users:
  - default
  - name: skyburst
    system: true
    no_create_home: true
    shell: /usr/sbin/nologin
write_files:
  # The operator's config ($(basename "$config")), for both commands.
  - path: /etc/skyburst/skyburst.toml
    permissions: "0644"
    content: |
$(indent 6 <"$config")
  # Read by both units: where the front end listens (the security group's port), its and the
  # controller's certificates, and where the credentials copied after boot are. These lines
  # override the config's keys.
  - path: /etc/skyburst/environment
    permissions: "0644"
    content: |
      SKYBURST_FRONTEND__BIND=0.0.0.0
      SKYBURST_FRONTEND__PORT=$frontend_port
      SKYBURST_FRONTEND__TOKENS_FILE=/etc/skyburst/secrets/tokens
      # Made at first boot by make-tls.sh. A real certificate for the front end: point these two
      # at /etc/letsencrypt/live/NAME/fullchain.pem and privkey.pem, then restart the unit once
      # (renewals are picked up without a restart). The controller's is pinned by the workers.
      SKYBURST_FRONTEND__TLS__CERT=/etc/skyburst/tls/frontend.crt
      SKYBURST_FRONTEND__TLS__KEY=/etc/skyburst/tls/frontend.key
      SKYBURST_CONTROLLER__TLS__CERT=/etc/skyburst/tls/controller.crt
      SKYBURST_CONTROLLER__TLS__KEY=/etc/skyburst/tls/controller.key
      OS_CLOUD=$os_cloud
      AWS_SHARED_CREDENTIALS_FILE=/etc/skyburst/secrets/aws-credentials
  # Makes /etc/skyburst/tls/{frontend,controller}.{crt,key} unless they exist (runcmd below).
  - path: /usr/local/lib/skyburst/make-tls.sh
    permissions: "0755"
    content: |
$(indent 6 <"$here/make-tls.sh")
  - path: /etc/systemd/system/skyburst-frontend.service
    permissions: "0644"
    content: |
$(indent 6 <"$here/skyburst-frontend.service")
  - path: /etc/systemd/system/skyburst-controller.service
    permissions: "0644"
    content: |
$(indent 6 <"$here/skyburst-controller.service")
runcmd:
  - [install, -d, -m, "0750", -g, skyburst, /etc/skyburst/secrets, /etc/openstack]
  - [sh, -c, 'test -x /usr/local/bin/skyburst || { echo "skyburst: no /usr/local/bin/skyburst: boot the front end from the image images/build-qcow2.sh builds" >&2; exit 1; }']
  # The key pairs, made here rather than in an ExecStartPre: once, as root, before the units
  # first start, with the network up (hostname -I has the private address); the units stay
  # unprivileged and never rewrite a certificate. Extra name: the front end's public one.
  - $make_tls
  # The front end runs no detector: if the image enables a worker, it stays off here.
  - [sh, -c, 'systemctl disable --now skyburst-worker.service 2>/dev/null || true']
  - [systemctl, daemon-reload]
  # --no-block: runcmd runs inside cloud-final.service; waiting for the start jobs there would
  # hold cloud-final open while the units wait for their secrets.
  - [systemctl, enable, --now, --no-block, skyburst-frontend.service, skyburst-controller.service]
EOF
}

if [ "$print_user_data" = 1 ]; then
  render_user_data
  exit 0
fi

# ---------------------------------------------------------------- the cloud
command -v openstack >/dev/null ||
  die "no openstack CLI: install it (Debian/Ubuntu: apt-get install python3-openstackclient; DevStack has it)"
command -v python3 >/dev/null || die "no python3 (the openstack CLI needs it too)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# osc ARGS...: runs `openstack ARGS`, prints its stdout; on failure dies with its stderr.
osc() {
  if ! openstack "$@" 2>"$work/err"; then
    die "openstack $* failed: $(tr -s '\n' ' ' <"$work/err")"
  fi
}

# json_field FIELD: one field of the JSON object on stdin, or of its "properties" (where Glance's
# client puts the hashes); "" for null, true/false in lowercase.
json_field() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
v = d.get(sys.argv[1], (d.get("properties") or {}).get(sys.argv[1]))
print("" if v is None else str(v).lower() if isinstance(v, bool) else v)' "$1"
}

# one KIND NAME IDS: the only id in IDS (newline-separated), "" for none; several is an error.
one() {
  local count
  count=$(grep -c . <<<"$3" || true)
  [ "$count" -le 1 ] || die "$count ${1}s are named '$2' in this project: delete the extra ones (openstack $1 delete ID) and run again"
  printf '%s' "$3"
}

if ! token=$(openstack token issue -f json 2>"$work/err"); then
  die "cannot authenticate to OpenStack: source an openrc (DevStack: source ~/devstack/openrc admin admin) or set OS_CLOUD; the openstack CLI said: $(tr -s '\n' ' ' <"$work/err")"
fi
project=$(json_field project_id <<<"$token")
note "project $project on ${OS_AUTH_URL:-cloud ${OS_CLOUD:-?}}; steps: $(for s in "${all_steps[@]}"; do runs "$s" && printf '%s ' "$s"; done)"

image_name=$prefix-worker
flavor_name=$prefix-worker
network_name=$prefix-private
subnet_name=$prefix-private-subnet
router_name=$prefix-router
secgroup_name=$prefix-frontend
keypair_name=$prefix-admin
server_name=$prefix-frontend

# Lookups by name. Each listing goes into a variable first: a failed call inside an argument's
# $(...) would not stop the script.
find_image() {
  local ids
  ids=$(osc image list --project "$project" --name "$image_name" -f value -c ID)
  one image "$image_name" "$ids"
}
find_flavor() {
  local rows
  rows=$(osc flavor list --all -f value -c ID -c Name)
  one flavor "$1" "$(awk -v n="$1" '$2 == n { print $1 }' <<<"$rows")"
}
find_network() {
  local ids
  ids=$(osc network list --project "$project" --name "$network_name" -f value -c ID)
  one network "$network_name" "$ids"
}
find_external() {
  local ids
  ids=$(osc network list --name "$external_network" --external -f value -c ID)
  one network "$external_network" "$ids"
}
find_secgroup() {
  local rows
  rows=$(osc security group list --project "$project" -f value -c ID -c Name)
  one "security group" "$secgroup_name" "$(awk -v n="$secgroup_name" '$2 == n { print $1 }' <<<"$rows")"
}
have_keypair() {
  local names
  names=$(osc keypair list -f value -c Name)
  grep -Fxq -- "$keypair_name" <<<"$names"
}
# first_port ARGS...: the first port `openstack port list ARGS` finds ("" for none).
first_port() {
  local ids
  ids=$(osc port list "$@" -f value -c ID)
  printf '%s' "${ids%%$'\n'*}"
}

# ---------------------------------------------------------------- steps
step_image() {
  local id status algo value sum
  id=$(find_image)
  if [ -z "$id" ]; then
    note "uploading $image_file ($(du -h "$image_file" | cut -f1)) as $image_name"
    id=$(osc image create --disk-format qcow2 --container-format bare --file "$image_file" \
      --property os_distro=debian --tag skyburst "$image_name" -f value -c id)
    status=$(osc image show "$id" -f value -c status)
    [ "$status" = active ] || die "image $image_name ($id) is $status after its upload, not active: see Glance's log"
    report created image "$image_name" "$id"
    return
  fi
  osc image show "$id" -f json >"$work/image.json"
  status=$(json_field status <"$work/image.json")
  [ "$status" = active ] ||
    die "image $image_name ($id) is $status, not active (an upload cut short?): delete it (openstack image delete $id) and run again"
  # Glance keeps a hash of the bytes (sha512 by default): a rebuilt image is not silently ignored.
  algo=$(json_field os_hash_algo <"$work/image.json")
  value=$(json_field os_hash_value <"$work/image.json")
  if [ -n "$algo" ] && command -v "${algo}sum" >/dev/null; then
    sum=$("${algo}sum" "$image_file" | cut -d' ' -f1)
    [ "$sum" = "$value" ] ||
      die "image $image_name ($id) holds other bytes than $image_file: to replace it, delete it (openstack image delete $id; servers booted from it keep running) and run again"
  else
    warn "cannot compare $image_file with image $image_name ($algo hash); using the image as it is"
  fi
  report found image "$image_name" "$id"
}

step_flavor() {
  local id got want
  id=$(find_flavor "$flavor_name")
  want="$flavor_vcpus $flavor_ram_mib $flavor_disk_gb"
  if [ -z "$id" ]; then
    id=$(osc flavor create --vcpus "$flavor_vcpus" --ram "$flavor_ram_mib" --disk "$flavor_disk_gb" \
      "$flavor_name" -f value -c id)
    report created flavor "$flavor_name" "$id"
    return
  fi
  osc flavor show "$id" -f json >"$work/flavor.json"
  got="$(json_field vcpus <"$work/flavor.json") $(json_field ram <"$work/flavor.json") $(json_field disk <"$work/flavor.json")"
  # Flavors cannot change: a different size needs a new flavor.
  [ "$got" = "$want" ] ||
    die "flavor $flavor_name ($id) has vcpus/ram MiB/disk GB $got, not $want: delete it (openstack flavor delete $id; running servers keep their size) or keep its size"
  report found flavor "$flavor_name" "$id"
}

step_network() {
  local external net subnet router port ids names
  external=$(find_external)
  if [ -z "$external" ]; then
    names=$(osc network list --external -f value -c Name)
    names=${names//$'\n'/ }
    die "no external network '$external_network' (DevStack makes 'public'): pass --external-network NAME; this cloud's external networks: ${names:-none}"
  fi

  net=$(find_network)
  if [ -z "$net" ]; then
    net=$(osc network create "$network_name" -f value -c id)
    report created network "$network_name" "$net"
  else
    report found network "$network_name" "$net"
  fi

  ids=$(osc subnet list --network "$net" --name "$subnet_name" -f value -c ID)
  subnet=$(one subnet "$subnet_name" "$ids")
  if [ -z "$subnet" ]; then
    local dns=()
    [ -z "$dns_nameserver" ] || dns=(--dns-nameserver "$dns_nameserver")
    subnet=$(osc subnet create --network "$net" --subnet-range "$subnet_cidr" --ip-version "${subnet_version#IPv}" \
      "${dns[@]}" "$subnet_name" -f value -c id)
    report created subnet "$subnet_name" "$subnet"
  else
    [ "$(osc subnet show "$subnet" -f value -c cidr)" = "$subnet_cidr" ] ||
      warn "subnet $subnet_name ($subnet) is not $subnet_cidr; keeping it"
    report found subnet "$subnet_name" "$subnet"
  fi

  ids=$(osc router list --project "$project" --name "$router_name" -f value -c ID)
  router=$(one router "$router_name" "$ids")
  if [ -z "$router" ]; then
    router=$(osc router create --external-gateway "$external" "$router_name" -f value -c id)
    report created router "$router_name" "$router"
  else
    report found router "$router_name" "$router"
  fi
  port=$(first_port --router "$router" --network "$net")
  if [ -z "$port" ]; then
    osc router add subnet "$router" "$subnet"
    port=$(first_port --router "$router" --network "$net")
    report created router-interface "$router_name:$subnet_name" "$port"
  else
    report found router-interface "$router_name:$subnet_name" "$port"
  fi
  note "set pools.network = \"$net\" in the config's nova pool"
}

step_secgroup() {
  local sg rules line
  sg=$(find_secgroup)
  if [ -z "$sg" ]; then
    sg=$(osc security group create --description "Skyburst front end: SSH from the admins, the API from its clients" \
      "$secgroup_name" -f value -c id)
    report created "security-group" "$secgroup_name" "$sg"
  else
    report found "security-group" "$secgroup_name" "$sg"
  fi
  # Neutron's egress rules stay (the front end reaches SQS, S3, Keystone and Nova); ingress is
  # exactly these three rules.
  osc security group rule list "$sg" --ingress -f json >"$work/rules.json"
  rules=$(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1])):
    print(r["ID"], r["Ethertype"], r["IP Protocol"] or "any", r["Port Range"] or "any", r["IP Range"] or "any")' "$work/rules.json")
  local wanted=("$admin_ethertype tcp 22:22 $admin_cidr" "$client_ethertype tcp $frontend_port:$frontend_port $client_cidr"
    "$subnet_ethertype tcp $controller_port:$controller_port $subnet_cidr")
  local want id
  for want in "${wanted[@]}"; do
    id=$(awk -v w="$want" '$2" "$3" "$4" "$5 == w { print $1; exit }' <<<"$rules")
    read -r ethertype protocol range remote <<<"$want"
    if [ -z "$id" ]; then
      id=$(osc security group rule create --ingress --ethertype "$ethertype" --protocol "$protocol" \
        --dst-port "$range" --remote-ip "$remote" "$sg" -f value -c id)
      report created security-group-rule "$secgroup_name:$protocol/${range%%:*}<-$remote" "$id"
    else
      report found security-group-rule "$secgroup_name:$protocol/${range%%:*}<-$remote" "$id"
    fi
  done
  # A rule from an earlier run (another admin CIDR, say) stays open until someone removes it.
  while read -r line; do
    [ -n "$line" ] || continue
    local extra=${line#* } matched=0
    for want in "${wanted[@]}"; do [ "$extra" = "$want" ] && matched=1; done
    [ "$matched" = 1 ] ||
      warn "security group $secgroup_name also lets in $extra: if it is not meant to, remove it (openstack security group rule delete ${line%% *})"
  done <<<"$rules"
}

step_keypair() {
  local stored stored_type stored_body fingerprint
  if have_keypair; then
    stored=$(osc keypair show --public-key "$keypair_name")
    read -r stored_type stored_body _ <<<"$stored"
    [ "$stored_type $stored_body" = "$key_type $key_body" ] ||
      die "key pair $keypair_name holds another key than $public_key: delete it (openstack keypair delete $keypair_name; running servers keep their keys) and run again"
    fingerprint=$(osc keypair show "$keypair_name" -f value -c fingerprint)
    report found keypair "$keypair_name" "$fingerprint"
  else
    fingerprint=$(osc keypair create --public-key "$public_key" "$keypair_name" -f value -c fingerprint)
    report created keypair "$keypair_name" "$fingerprint"
  fi
}

# wait_active SERVER: until Nova says ACTIVE. 600 s: the first boot from a new image copies it
# (~2 GB) into the compute host's image cache before the guest starts; later boots take ~30 s.
wait_active() {
  local status waited=0
  note "waiting for server $1 to be ACTIVE"
  while :; do
    status=$(osc server show "$1" -f value -c status)
    case "$status" in
      ACTIVE) return 0 ;;
      ERROR) die "server $server_name ($1) went to ERROR: see its fault (openstack server show $1 -c fault); delete it (openstack server delete $1) and run again" ;;
    esac
    [ "$waited" -lt 600 ] || die "server $server_name ($1) is still $status after 600 s: see openstack server show $1, then run again"
    sleep 5
    waited=$((waited + 5))
  done
}

# floating_ips ARGS...: "ID ADDRESS PORT" for each floating IP `openstack floating ip list ARGS`
# finds whose description is the server's name (PORT "-" when unbound); `--port P` lists the one
# on the server's port, whatever its description.
floating_ips() {
  osc floating ip list --project "$project" --long "$@" -f json >"$work/fips.json"
  python3 -c '
import json, sys
by_port = "--port" in sys.argv[3:]
for f in json.load(open(sys.argv[1])):
    if by_port or f.get("Description") == sys.argv[2]:
        print(f["ID"], f["Floating IP Address"], f.get("Port") or "-")' "$work/fips.json" "$server_name" "$@"
}

step_frontend() {
  local image flavor net sg server port external ids fip fip_id address fip_port count
  image=$(find_image)
  [ -n "$image" ] || die "no image $image_name: run the image step first (--only image --image-file PATH)"
  frontend_flavor=${frontend_flavor:-$flavor_name}
  flavor=$(find_flavor "$frontend_flavor")
  [ -n "$flavor" ] || die "no flavor $frontend_flavor: run the flavor step first, or pass --frontend-flavor NAME"
  net=$(find_network)
  [ -n "$net" ] || die "no network $network_name: run the network step first"
  sg=$(find_secgroup)
  [ -n "$sg" ] || die "no security group $secgroup_name: run the secgroup step first"
  have_keypair || die "no key pair $keypair_name: run the keypair step first (--public-key PATH)"
  external=$(find_external)
  [ -n "$external" ] || die "no external network '$external_network': pass --external-network NAME"

  ids=$(osc server list --name "^${server_name}\$" -f value -c ID)
  server=$(one server "$server_name" "$ids")
  fip=""
  if [ -n "$server" ]; then
    report found server "$server_name" "$server"
    wait_active "$server"
    port=$(first_port --server "$server" --network "$net")
    [ -n "$port" ] || die "server $server_name ($server) has no port on $network_name: delete it and run again"
    ids=$(floating_ips --port "$port")
    fip=${ids%%$'\n'*}
    [ -z "$frontend_name" ] ||
      note "server $server_name exists: its certificate has the names of its first boot (--frontend-name applies to a new server; see devstack/README.md to make it again)"
  fi
  # The floating IP comes before the server: its address is a name in the front end's
  # certificate, which the instance makes at first boot from its user-data. Made unbound (and
  # described with the server's name, so a run cut short finds it again), bound once the server is.
  if [ -z "$fip" ]; then
    ids=$(floating_ips --network "$external")
    count=$(grep -c . <<<"$ids" || true)
    [ "$count" -le 1 ] ||
      die "$count floating IPs are described '$server_name' in this project: delete the extra ones (openstack floating ip delete ADDRESS) and run again"
    fip=$ids
  fi
  if [ -z "$fip" ]; then
    osc floating ip create --description "$server_name" "$external" -f json >"$work/fip.json"
    fip=$(python3 -c '
import json, sys
f = json.load(open(sys.argv[1]))
print(f["id"], f["floating_ip_address"], "-")' "$work/fip.json")
    read -r fip_id address fip_port <<<"$fip"
    report created floating-ip "$server_name" "$address"
  else
    read -r fip_id address fip_port <<<"$fip"
    report found floating-ip "$server_name" "$address"
  fi
  frontend_name=${frontend_name:-$address}
  local host=$frontend_name
  [[ $host != *:* ]] || host="[$host]"

  if [ -z "$server" ]; then
    render_user_data >"$work/user-data"
    # Nova refuses user-data over 65535 bytes once base64-encoded.
    local size
    size=$(base64 -w0 <"$work/user-data" | wc -c)
    [ "$size" -le 65535 ] || die "the front end's user-data is $size bytes in base64, over Nova's 65535: shorten $config"
    # No --wait: it writes its progress into the id on stdout. No deployment tag either: the
    # controller counts the servers tagged skyburst:deployment as its workers.
    server=$(osc server create --image "$image" --flavor "$flavor" --network "$net" --security-group "$sg" \
      --key-name "$keypair_name" --user-data "$work/user-data" --property skyburst:role=frontend \
      "$server_name" -f value -c id)
    report created server "$server_name" "$server"
    wait_active "$server"
    port=$(first_port --server "$server" --network "$net")
    [ -n "$port" ] || die "server $server_name ($server) has no port on $network_name: delete it and run again"
  fi
  if [ "$fip_port" != "$port" ]; then
    osc floating ip set --port "$port" "$fip_id"
    note "bound floating IP $address to server $server_name"
  fi
  cat >&2 <<EOF
bootstrap: the front end is at https://$host:$frontend_port once it has its tokens. Its secrets
  go over SSH (the login user is the image's default one, "debian" on Debian's cloud images):
    scp tokens clouds.yaml aws-credentials debian@$address:
    ssh debian@$address 'sudo install -m 0640 -g skyburst tokens aws-credentials /etc/skyburst/secrets/ &&
      sudo install -m 0640 -g skyburst clouds.yaml /etc/openstack/ && rm tokens clouds.yaml aws-credentials'
  tokens: one bearer token per line (16 characters or more); clouds.yaml: an entry "$os_cloud"
  with an application credential (openstack application credential create skyburst-controller);
  aws-credentials: for SQS, S3 and EC2 (see images/iam/). The units retry every 10 s until these
  are in place:
    ssh debian@$address sudo journalctl -u skyburst-frontend -u skyburst-controller -f
  Its certificate is self-signed, made on the instance at first boot for $frontend_name (and the
  instance's hostname and private addresses); its key never leaves the instance. Trust it:
    ssh debian@$address sudo cat /etc/skyburst/tls/frontend.crt > skyburst-frontend.crt
    skyburst load --url https://$host:$frontend_port --ca-cert skyburst-frontend.crt ...
  (curl: --cacert skyburst-frontend.crt). A real certificate instead, for a DNS name NAME that
  points at $address: get one with certbot on the instance, then
    sudo sh -c 'cd /etc/letsencrypt && chgrp skyburst live archive archive/NAME/privkey*.pem &&
      chmod 0750 live archive && chmod 0640 archive/NAME/privkey*.pem'
    sudo sed -i 's|^SKYBURST_FRONTEND__TLS__CERT=.*|SKYBURST_FRONTEND__TLS__CERT=/etc/letsencrypt/live/NAME/fullchain.pem|' /etc/skyburst/environment
    sudo sed -i 's|^SKYBURST_FRONTEND__TLS__KEY=.*|SKYBURST_FRONTEND__TLS__KEY=/etc/letsencrypt/live/NAME/privkey.pem|' /etc/skyburst/environment
    sudo systemctl restart skyburst-frontend
  Renewals (certbot keeps the key's group and mode) are picked up without a restart, or at once
  with sudo systemctl reload skyburst-frontend.
  The controller's certificate (/etc/skyburst/tls/controller.crt) stays: the workers pin it.
EOF
}

for s in "${all_steps[@]}"; do
  if runs "$s"; then "step_$s"; fi
done
