#!/usr/bin/env bash
# Creates (or reuses) the Python venv for the benchmarks: OpenCV DNN, onnxruntime, onnx and
# numpy (detector), flask and gunicorn (pipeline reference service) at the versions pinned in
# scripts/bench/requirements.txt. It lives outside git so the repo stays Rust-only.
#
#   scripts/bench/setup-python.sh          # then use "$BENCH_VENV/bin/python"
#
#   BENCH_VENV   default ~/.cache/skyburst/bench-venv
#
# Idempotent: a stamp holding the requirements file's sha256 is written after a successful
# install; when it matches and the imports work, this exits in well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
venv="${BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/bench-venv}"
stamp="$venv/.skyburst-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

imports_ok() {
  "$venv/bin/python" -c 'import cv2, numpy, onnx, onnxruntime, flask, gunicorn; cv2.dnn.readNetFromDarknet' 2>/dev/null
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && imports_ok; then
  echo "bench venv: ok ($venv)"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "bench venv: creating $venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv"; then
    echo "error: 'python3 -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
    exit 1
  fi
fi

echo "bench venv: installing pinned packages from $req"
# The wheels are ~90 MB together (onnxruntime and OpenCV dominate); one install takes
# about a minute on a 2-vCPU machine with a warm pip cache.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv -r "$req"
if ! imports_ok; then
  echo "error: the venv at $venv does not import cv2/numpy/onnx/onnxruntime/flask/gunicorn after install" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "bench venv: ready ($venv)"
