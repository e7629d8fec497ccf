#!/usr/bin/env bash
# Sets up and runs Skyburst's main job on the embedded default — the README's first command:
#
#   scripts/run.sh [OUT_DIR]      # default OUT_DIR: ./skyburst-out
#
# Fetches and verifies the model and the two test images, builds the binary, and runs
# `skyburst detect --annotate` on bus.jpg and zidane.jpg: the objects found are printed and the
# images with their boxes drawn are written to OUT_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-skyburst-out}"

scripts/setup.sh
images="${IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/images}"
# The dev profile builds candle and the image decoders at opt-level 3 (Cargo.toml), so the
# detector runs at full speed without a second, release build of the whole tree.
cargo build --locked
target/debug/skyburst detect --annotate "$out" "$images/bus.jpg" "$images/zidane.jpg"
echo "annotated images: $out/bus.jpg $out/zidane.jpg"
