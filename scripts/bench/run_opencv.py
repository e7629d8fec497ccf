#!/usr/bin/env python3
"""Times yolov3-tiny forward passes in OpenCV DNN (CPU backend) and prints ONE JSON line:
{"runtime": "opencv", "threads": T, "batch": B, "wall_ms": [...], "cpu_ms": [...]}.

    python scripts/bench/run_opencv.py --threads 1 --batch 1 --runs 30 --warmup 5 \
        --model-dir ~/.cache/skyburst/models --image ~/.cache/skyburst/images/bus.jpg

Loads the darknet files directly (cv2.dnn.readNetFromDarknet; needs opencv < 5). The timed
region is setInput + forward up to the two raw head convs (conv_15, conv_22), the same work
the ONNX and candle runners do; the yolo decode layers after them are not run.
"""

import cv2

from common import batch_input, check_heads, emit, model_file, parse_args, time_forwards


def main():
    a = parse_args("opencv")
    cv2.setNumThreads(a.threads)
    net = cv2.dnn.readNetFromDarknet(model_file(a.model_dir, "yolov3-tiny.cfg"),
                                     model_file(a.model_dir, "yolov3-tiny.weights"))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    # The importer names layers <type>_<cfg index>: each yolo_N reads the head conv_{N-1}.
    names = set(net.getLayerNames())
    heads = [f"conv_{int(n.split('_')[1]) - 1}" for n in net.getUnconnectedOutLayersNames()]
    missing = [h for h in heads if h not in names]
    if missing:
        raise SystemExit(f"error: head layers {missing} not in the network")
    blob = batch_input(a.image, a.batch)

    def forward():
        net.setInput(blob)
        return net.forward(heads)

    check_heads(forward(), a.batch)  # also the first warm-up: OpenCV allocates on first forward
    wall, cpu = time_forwards(forward, a.runs, a.warmup)
    emit("opencv", a.threads, a.batch, wall, cpu)


if __name__ == "__main__":
    main()
