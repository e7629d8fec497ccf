#!/usr/bin/env bash
# Benchmarks the yolov3-tiny detector: candle (benches/detector.rs) against OpenCV DNN and
# onnxruntime on the same letterboxed input, then candle's best layout on a 2-core worker.
#
#   scripts/bench-detector.sh                       # 3 rounds x 30 runs: ~7 min on a quiet 2-vCPU box, plus the build
#   scripts/bench-detector.sh --rounds 1 --runs 5   # quick look; --dry-run shows the plan; --help for every flag
#   CANDLE_RUNNER=target/release/deps/detector-... scripts/bench-detector.sh   # skip the cargo build
#
# Steps: pinned Python venv (scripts/bench/setup-python.sh, outside git), model files and
# images (scripts/fetch-assets.sh), darknet -> ONNX with a check against OpenCV's heads
# (scripts/bench/darknet2onnx.py), then the runs (scripts/bench/bench_detector.py). Results:
# bench-out/detector-<UTC timestamp>.{json,md} (gitignored).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/skyburst"
export BENCH_VENV="${BENCH_VENV:-$cache/bench-venv}"
# Same defaults as fetch-assets.sh, exported so every step agrees on where the files are.
export MODEL_DIR="${MODEL_DIR:-$cache/models}"
export IMAGE_DIR="${IMAGE_DIR:-$cache/images}"
py="$BENCH_VENV/bin/python"

case " $* " in
  *" --help "* | *" -h "*) "$root/scripts/bench/setup-python.sh" >/dev/null
                           exec "$py" "$root/scripts/bench/bench_detector.py" --help ;;
esac

"$root/scripts/bench/setup-python.sh"
"$root/scripts/fetch-assets.sh"
# ~1 s: regenerated every time so the ONNX file can never drift from the weights it checks.
"$py" "$root/scripts/bench/darknet2onnx.py" --model-dir "$MODEL_DIR" --out "$MODEL_DIR/yolov3-tiny.onnx" \
  --image "$IMAGE_DIR/bus.jpg"
cd "$root"
exec "$py" "$root/scripts/bench/bench_detector.py" --model-dir "$MODEL_DIR" --image "$IMAGE_DIR/bus.jpg" \
  --onnx "$MODEL_DIR/yolov3-tiny.onnx" "$@"
