#!/usr/bin/env python3
"""Times yolov3-tiny forward passes in onnxruntime (CPU EP) and prints ONE JSON line:
{"runtime": "onnxruntime", "threads": T, "batch": B, "wall_ms": [...], "cpu_ms": [...]}.

    python scripts/bench/run_ort.py --threads 1 --batch 1 --runs 30 --warmup 5 \
        --model-dir ~/.cache/skyburst/models --image ~/.cache/skyburst/images/bus.jpg \
        [--onnx ~/.cache/skyburst/models/yolov3-tiny.onnx]

The ONNX file comes from scripts/bench/darknet2onnx.py (BN folded, raw heads out). The timed
region is session.run for both heads. Settings: intra_op_num_threads=T, inter_op=1,
ORT_ENABLE_ALL, sequential execution. ORT's default thread spinning is left on, as a user
would get it; it inflates cpu_ms only for T>1 (the 1-thread CPU column is unaffected).
"""

import os

import onnxruntime as ort

from common import batch_input, check_heads, emit, parse_args, time_forwards


def main():
    a = parse_args("onnxruntime", with_onnx=True)
    path = a.onnx or os.path.join(a.model_dir, "yolov3-tiny.onnx")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} is missing; run scripts/bench/darknet2onnx.py")
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: batch_input(a.image, a.batch)}

    def forward():
        return sess.run(None, feed)

    check_heads(forward(), a.batch)
    wall, cpu = time_forwards(forward, a.runs, a.warmup)
    emit("onnxruntime", a.threads, a.batch, wall, cpu)


if __name__ == "__main__":
    main()
