#!/usr/bin/env bash
# Starts one moto server (the local AWS emulator: SQS, S3 and EC2 on one port) on a free
# loopback port, waits until it answers, and prints the shell lines that point the AWS tests
# at it:
#
#   eval "$(scripts/moto-server.sh)"      # sets MOTO_ENDPOINT, MOTO_PID and fake AWS_* keys
#   cargo test --features cloud,dev-tools
#   kill "$MOTO_PID"
#
# The fake keys replace any real ones in that shell, so no test call can reach AWS itself.
#
# scripts/test.sh does this itself. Installs moto first if needed (scripts/install-moto.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/moto-venv}"
[ -x "$venv/bin/moto_server" ] || scripts/install-moto.sh >&2
log="${MOTO_LOG:-$(mktemp -t moto.XXXXXX.log)}"

# A free port, never 5000: Keystone's default port, which other tools probe.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 < /dev/null &
pid=$!
for _ in $(seq 1 300); do
  if curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/data.json"; then
    # The first EC2 call loads moto's EC2 backend (1.4-1.9 s idle, 12 s under load): do it now.
    curl -sf -o /dev/null "http://127.0.0.1:$port/?Action=DescribeRegions&Version=2016-11-15" \
      -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0" || true
    echo "export MOTO_ENDPOINT=http://127.0.0.1:$port MOTO_PID=$pid"
    echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1"
    echo "unset AWS_PROFILE AWS_SESSION_TOKEN"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "error: moto_server exited" >&2; exit 1; }
  sleep 0.1
done
echo "error: moto_server did not answer on port $port within 30 s (log: $log)" >&2
kill "$pid" 2>/dev/null || true
exit 1
