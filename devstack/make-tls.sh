#!/usr/bin/env bash
# Makes the front-end instance's two TLS key pairs, on the instance, at first boot (run by the
# runcmd devstack/bootstrap.sh renders; installed as /usr/local/lib/skyburst/make-tls.sh). The
# private keys never leave the machine and never travel in user-data, which any process on the
# instance can read back from the metadata service.
#
#   make-tls.sh [--dir DIR] [--group GROUP] [NAME...]
#
#   DIR/frontend.crt, .key    the front end's HTTPS certificate (skyburst serve), valid 825 days;
#                             clients trust it with `skyburst load --ca-cert frontend.crt`, or it
#                             is replaced by a real one (certbot; see devstack/README.md)
#   DIR/controller.crt, .key  the controller's /metrics and /v1/credentials certificate, valid
#                             10 years: the controller renders its SHA-256 into each Nova worker's
#                             config and the workers accept that certificate only
#
# Both are ECDSA P-256, self-signed, with the instance's hostname and addresses (hostname -I)
# and every NAME (the front end's public DNS name or floating IP) as subject alternative names.
# A pair that exists is kept, never overwritten: an operator's real certificate and a renewal
# survive a rerun. To make a pair again, delete both of its files and run this again. DIR
# (default /etc/skyburst/tls) is mode 0750, group GROUP (default skyburst); keys are 0640,
# certificates 0644, both in group GROUP.
set -euo pipefail
shopt -s inherit_errexit

dir=/etc/skyburst/tls
group=skyburst
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir | --group)
      if [ $# -lt 2 ] || [ -z "$2" ]; then echo "make-tls: $1 needs a value" >&2; exit 2; fi
      if [ "$1" = --dir ]; then dir=$2; else group=$2; fi
      shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    -*) echo "make-tls: unknown option '$1'" >&2; exit 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done

is_ip() { python3 -c 'import ipaddress, sys; ipaddress.ip_address(sys.argv[1])' "$1" 2>/dev/null; }
is_dns() { [[ ${#1} -le 253 && $1 =~ ^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]]; }

# The subject alternative names: this machine's names and addresses, then the given ones.
declare -A seen=()
sans=()
add_name() {
  local name=${1,,}
  [ -n "$name" ] && [ -z "${seen[$name]:-}" ] || return 0
  if is_ip "$name"; then
    sans+=("IP:$name")
  elif is_dns "$name"; then
    sans+=("DNS:$name")
  else
    echo "make-tls: warning: '$name' is neither an IP address nor a DNS name; left out" >&2
    return 0
  fi
  seen[$name]=1
}
add_name "$(hostname)"
add_name "$(timeout 10 hostname -f 2>/dev/null || true)"
read -r -a addresses <<<"$(hostname -I 2>/dev/null || true)"
for a in "${addresses[@]}" "${extra[@]}"; do add_name "$a"; done
[ ${#sans[@]} -gt 0 ] || { echo "make-tls: no name or address to put in the certificates" >&2; exit 1; }
san=$(IFS=,; echo "${sans[*]}")

install -d -m 0750 -g "$group" "$dir"

# make_pair PAIR DAYS: DIR/PAIR.crt and DIR/PAIR.key, unless they exist.
make_pair() {
  local crt=$dir/$1.crt key=$dir/$1.key tmp
  if [ -e "$crt" ] && [ -e "$key" ]; then
    echo "make-tls: keeping $crt and $key"
    return 0
  fi
  if [ -e "$crt" ] || [ -e "$key" ]; then
    echo "make-tls: only one of $crt and $key exists: delete it (or restore the other) and run again" >&2
    return 1
  fi
  # Every step is checked by hand: errexit does not apply inside a function called with ||.
  tmp=$(mktemp -d "$dir/.new-$1.XXXXXX") || return 1
  # CA:FALSE: a self-signed end-entity certificate, which clients trust as it is (--ca-cert);
  # OpenSSL's default for -x509 would mark it a CA, which rustls refuses as a server's.
  cat >"$tmp/req.cnf" <<EOF || { rm -rf "$tmp"; return 1; }
[req]
prompt = no
distinguished_name = dn
x509_extensions = ext
[dn]
CN = skyburst-$1
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = $san
EOF
  (
    umask 077
    openssl req -x509 -new -config "$tmp/req.cnf" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -sha256 -days "$2" -keyout "$tmp/key" -out "$tmp/crt" 2>"$tmp/err" ||
      { echo "make-tls: openssl failed for $1: $(cat "$tmp/err")" >&2; exit 1; }
  ) || { rm -rf "$tmp"; return 1; }
  # The key first: a crash in between leaves a key without a certificate, which a rerun reports.
  if ! { chgrp "$group" "$tmp/key" "$tmp/crt" && chmod 0640 "$tmp/key" && chmod 0644 "$tmp/crt" &&
    mv -T "$tmp/key" "$key" && mv -T "$tmp/crt" "$crt"; }; then
    rm -rf "$tmp"
    echo "make-tls: cannot install $crt and $key" >&2
    return 1
  fi
  rm -rf "$tmp"
  echo "make-tls: made $crt ($san; $(openssl x509 -noout -fingerprint -sha256 -in "$crt"))"
}

status=0
make_pair frontend 825 || status=1
make_pair controller 3650 || status=1
exit "$status"
