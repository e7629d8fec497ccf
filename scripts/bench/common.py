"""Shared pieces of the benchmark runners (run_opencv.py, run_ort.py): the CLI, the letterbox
preprocessing and the timing loop that emits the one-line JSON protocol.

Not run directly; the runners import it (Python puts the script's folder on sys.path).

Protocol, identical for every runtime (the candle bench binary prints the same line):
    {"runtime": "...", "threads": T, "batch": B, "wall_ms": [...], "cpu_ms": [...]}
one entry per timed run, each the time of ONE forward of the whole batch; nothing else on stdout.
"""

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

# yolov3-tiny's [net] is 416x416; darknet letterboxes onto a 0.5 gray canvas.
NET_SIZE = 416
CANVAS = 0.5


def parse_args(runtime, with_onnx=False):
    p = argparse.ArgumentParser(description=f"Time yolov3-tiny forward passes on {runtime}; prints one JSON line.")
    p.add_argument("--threads", type=int, required=True, help="intra-op threads")
    p.add_argument("--batch", type=int, required=True, help="images per forward (the same image repeated)")
    p.add_argument("--runs", type=int, default=30, help="timed forwards")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards first (allocations, caches, thread pools)")
    p.add_argument("--model-dir", required=True, help="folder with yolov3-tiny.cfg and yolov3-tiny.weights")
    p.add_argument("--image", required=True, help="image to letterbox to 416x416")
    if with_onnx:
        p.add_argument("--onnx", help="ONNX model from darknet2onnx.py (default: MODEL_DIR/yolov3-tiny.onnx)")
    a = p.parse_args()
    if a.threads < 1 or a.batch < 1 or a.runs < 1 or a.warmup < 0:
        p.error("--threads, --batch and --runs must be >= 1, --warmup >= 0")
    return a


def letterbox(path, size=NET_SIZE):
    """Darknet's letterbox_image with OpenCV's resize: RGB float /255, INTER_LINEAR, centred on 0.5.

    Returns a (3, size, size) float32 array. For bus.jpg (810x1080) this is 312x416 at pad_x=52
    and matches tests/fixtures/yolo/bus_letterbox_input_1x3x416x416.npy exactly.
    """
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"error: cannot read image {path}")
    h, w = bgr.shape[:2]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    # Integer arithmetic as in darknet: the longer side becomes `size`.
    if w > h:  # darknet: 416/w < 416/h
        new_w, new_h = size, h * size // w
    else:
        new_w, new_h = w * size // h, size
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), CANVAS, dtype=np.float32)
    x0, y0 = (size - new_w) // 2, (size - new_h) // 2
    canvas[y0:y0 + new_h, x0:x0 + new_w] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1))


def batch_input(image, batch):
    """The letterboxed image repeated `batch` times as contiguous NCHW float32."""
    x = letterbox(image)
    return np.ascontiguousarray(np.repeat(x[None], batch, axis=0))


def time_forwards(forward, runs, warmup):
    """Calls forward() warmup+runs times; returns (wall_ms, cpu_ms) of the timed runs.

    cpu_ms is the whole process's CPU time (all threads, CLOCK_PROCESS_CPUTIME_ID), so on a
    shared machine it stays near the true cost while wall time absorbs the contention.
    """
    for _ in range(warmup):
        forward()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        forward()
        t1, c1 = time.perf_counter_ns(), time.process_time_ns()
        wall.append((t1 - t0) / 1e6)
        cpu.append((c1 - c0) / 1e6)
    return wall, cpu


def emit(runtime, threads, batch, wall, cpu):
    """Prints the protocol's single JSON line (3 decimals: microsecond resolution is plenty)."""
    line = {
        "runtime": runtime,
        "threads": threads,
        "batch": batch,
        "wall_ms": [round(v, 3) for v in wall],
        "cpu_ms": [round(v, 3) for v in cpu],
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def check_heads(outs, batch):
    """Fails loudly unless the outputs are the two raw heads for `batch` images, finite."""
    shapes = sorted(tuple(o.shape) for o in outs)
    want = sorted([(batch, 255, 13, 13), (batch, 255, 26, 26)])
    if shapes != want:
        sys.exit(f"error: head shapes {shapes}, expected {want}")
    for o in outs:
        if not np.isfinite(o).all():
            sys.exit("error: non-finite values in a head")


def model_file(model_dir, name):
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        sys.exit(f"error: {path} is missing; run scripts/fetch-assets.sh")
    return path
