#!/bin/sh
# Installs the pinned Skyburst release described by /etc/skyburst/release.env and
# /etc/skyburst/release.sha256: downloads the binary and the model files from the release
# bucket, checks every sha256 and only then moves them into place. Run by cloud-init at first
# boot (images/cloud-init/worker.yaml); running it again is harmless. On an instance of the
# worker image (images/build-qcow2.sh) that already holds the pinned release, it downloads nothing.
set -eu

# shellcheck source=/dev/null
. /etc/skyburst/release.env
: "${RELEASE_BUCKET:?}" "${RELEASE_VERSION:?}" "${MODEL_DIR:?}"

# The worker image records the release it holds in the format of release.sha256, with the sum
# of the binary as published (the image's copy is stripped, so installed.sha256 lists the
# installed files' own sums). Same version, same sums, same model directory, files intact:
# nothing to download.
preinstalled=/usr/local/lib/skyburst/preinstalled
sums() { grep -v '^[[:space:]]*$' "$1" | sort; }
if [ -f "$preinstalled/release.sha256" ] &&
  [ "$(cat "$preinstalled/version")" = "$RELEASE_VERSION" ] &&
  [ "$(cat "$preinstalled/model-dir")" = "$MODEL_DIR" ] &&
  [ "$(sums "$preinstalled/release.sha256")" = "$(sums /etc/skyburst/release.sha256)" ] &&
  sha256sum --check --strict --quiet "$preinstalled/installed.sha256"; then
  echo "skyburst: release $RELEASE_VERSION is preinstalled in this image; nothing to download"
  exit 0
fi

# The AWS CLI is not in the worker image (it would add about 100 MB of Python).
if ! command -v aws >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
    awscli ca-certificates >/dev/null
fi

staging=$(mktemp -d /var/tmp/skyburst-release.XXXXXX)
trap 'rm -rf "$staging"' EXIT

set --
if [ -n "${RELEASE_ENDPOINT:-}" ]; then set -- --endpoint-url "$RELEASE_ENDPOINT"; fi
if [ -n "${RELEASE_REGION:-}" ]; then set -- "$@" --region "$RELEASE_REGION"; fi

# Each line of release.sha256 is "<sha256>  <path inside the release>".
while read -r sum path; do
  [ -n "$path" ] || continue
  mkdir -p "$staging/$(dirname "$path")"
  attempt=1
  until aws "$@" s3 cp --only-show-errors "s3://$RELEASE_BUCKET/releases/$RELEASE_VERSION/$path" "$staging/$path"; do
    [ "$attempt" -lt 5 ] || { echo "skyburst: cannot download $path" >&2; exit 1; }
    attempt=$((attempt + 1))
    sleep $((attempt * 2))
  done
  echo "$sum  $path" >> "$staging/sums"
done < /etc/skyburst/release.sha256

(cd "$staging" && sha256sum --check --strict --quiet sums) || {
  echo "skyburst: release $RELEASE_VERSION does not match its pinned sha256; refusing to install" >&2
  exit 1
}

install -d -m 0755 "$MODEL_DIR"
for file in "$staging"/models/*; do
  install -m 0644 "$file" "$MODEL_DIR/$(basename "$file")"
done
install -m 0755 "$staging/skyburst" /usr/local/bin/skyburst
echo "skyburst: release $RELEASE_VERSION installed"
