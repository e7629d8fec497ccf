"""Reference detection service for scripts/bench-pipeline.sh, built the way the seed systems
(such as CloudDetect) build theirs: Flask under gunicorn, OpenCV DNN on the same yolov3-tiny
darknet files, one process per core with one OpenCV thread each.

    cd scripts/bench && MODEL_DIR=~/.cache/skyburst/models \
        "$BENCH_VENV/bin/gunicorn" --workers 2 --threads 1 --bind 127.0.0.1:8099 reference_service:app

API (the same JSON as Skyburst's POST /api/detect):
    POST /api/detect  {"id": "...", "image": "<base64>"}
      200 {"id": <same id>, "objects": [{"label", "accuracy", "rectangle": {"left", "top", "width",
           "height"}}, ...], "width": W, "height": H,
           "timings": {"preprocess_ms", "inference_ms", "postprocess_ms"}}
      400 {"error", "detail"} for bad JSON, bad base64 or an undecodable image
    GET /healthz       200 {"status": "ok"}

Processing matches the Rust detector: letterbox to 416x416 on a 0.5
canvas (INTER_LINEAR on RGB float, as common.letterbox), raw heads conv_15/conv_22 decoded in
numpy, score = obj * cls[argmax], keep >= 0.25, NMS per class at IoU 0.45
(cv2.dnn.NMSBoxesBatched), rectangles rounded and clipped to the image, highest accuracy first.
Timings: preprocess = image decode + letterbox, inference = setInput + forward, postprocess =
decode + NMS + the object list; JSON and base64 decoding are outside them, as in Skyburst.

The model loads when gunicorn imports this module in each worker (no --preload), so every
worker owns its network. Environment: MODEL_DIR (default ~/.cache/skyburst/models).
"""

import base64
import binascii
import math
import os
import time

import cv2
import numpy as np
from flask import Flask, jsonify, request

from common import CANVAS, NET_SIZE, model_file

CONF_THRESHOLD = 0.25
NMS_IOU = 0.45
MAX_BODY_BYTES = 10 << 20  # as Skyburst's frontend.max_body_bytes default; larger bodies get 413

# One OpenCV thread per process, like Skyburst's 1-thread workers: 2 workers = 2 cores.
cv2.setNumThreads(1)


def parse_cfg(path):
    """The cfg's sections after [net], in order: (name, {key: value}). Layer i is section i."""
    sections = []
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                sections.append((line.strip("[]").strip(), {}))
            elif "=" in line and sections:
                k, v = line.split("=", 1)
                sections[-1][1][k.strip()] = v.strip()
    return [s for s in sections if s[0] not in ("net", "network")]


def load_model(model_dir):
    cfg, weights = model_file(model_dir, "yolov3-tiny.cfg"), model_file(model_dir, "yolov3-tiny.weights")
    with open(model_file(model_dir, "coco.names")) as f:
        labels = [l.strip() for l in f.read().splitlines() if l.strip()]
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    sections = parse_cfg(cfg)
    # OpenCV names layers <type>_<cfg index>; each yolo_N reads the raw head conv_{N-1}.
    heads, yolo = [], []
    for name in net.getUnconnectedOutLayersNames():
        n = int(name.split("_")[1])
        kind, opts = sections[n]
        if kind != "yolo":
            raise SystemExit(f"error: output layer {name} is not a [yolo] section of {cfg}")
        anchors = [float(v) for v in opts["anchors"].split(",")]
        pairs = [(anchors[2 * m], anchors[2 * m + 1]) for m in (int(v) for v in opts["mask"].split(","))]
        heads.append(f"conv_{n - 1}")
        yolo.append((np.array(pairs, dtype=np.float32), int(opts["classes"])))
    if any(c != len(labels) for _, c in yolo):
        raise SystemExit(f"error: {len(labels)} labels in coco.names, the cfg has {[c for _, c in yolo]} classes")
    return net, heads, yolo, labels


def letterbox_bgr(bgr, size=NET_SIZE):
    """common.letterbox on a decoded BGR image: (1, 3, size, size) float32 and the placement
    (pad_x, pad_y, scale_x, scale_y), input pixels per image pixel."""
    h, w = bgr.shape[:2]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    if w > h:
        new_w, new_h = size, h * size // w
    else:
        new_w, new_h = w * size // h, size
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), CANVAS, dtype=np.float32)
    x0, y0 = (size - new_w) // 2, (size - new_h) // 2
    canvas[y0:y0 + new_h, x0:x0 + new_w] = resized
    blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
    return blob, (x0, y0, new_w / w, new_h / h)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def decode(outs, yolo, size=NET_SIZE):
    """Raw heads -> (boxes x1,y1,x2,y2 in input pixels, scores, class ids) with score >= threshold."""
    boxes, scores, classes = [], [], []
    for out, (anchors, ncls) in zip(outs, yolo):
        _, _, rows, cols = out.shape
        t = out.reshape(len(anchors), 5 + ncls, rows, cols)
        obj = sigmoid(t[:, 4])
        cls_scores = obj[:, None] * sigmoid(t[:, 5:])  # (A, C, H, W)
        cls = cls_scores.argmax(axis=1)
        score = np.take_along_axis(cls_scores, cls[:, None], axis=1)[:, 0]
        a, r, c = np.nonzero(score >= CONF_THRESHOLD)
        if not len(a):
            continue
        cx = (c + sigmoid(t[a, 0, r, c])) / cols * size
        cy = (r + sigmoid(t[a, 1, r, c])) / rows * size
        bw = np.exp(t[a, 2, r, c]) * anchors[a, 0]
        bh = np.exp(t[a, 3, r, c]) * anchors[a, 1]
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
        scores.append(score[a, r, c])
        classes.append(cls[a, r, c])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)


def to_objects(boxes, scores, classes, placement, width, height, labels):
    keep = []
    if len(scores):
        ltwh = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in boxes]
        keep = np.array(cv2.dnn.NMSBoxesBatched(ltwh, scores.astype(float).tolist(),
                                                classes.astype(int).tolist(), CONF_THRESHOLD, NMS_IOU)).reshape(-1)
    pad_x, pad_y, sx, sy = placement

    def clip(v, hi):  # round half away from zero (Rust's f32::round), then clamp
        return int(min(max(math.floor(v + 0.5) if v >= 0 else math.ceil(v - 0.5), 0), hi))

    objects = []
    for i in sorted(keep, key=lambda i: -scores[i]):
        x1, y1, x2, y2 = boxes[i]
        left, right = clip((x1 - pad_x) / sx, width), clip((x2 - pad_x) / sx, width)
        top, bottom = clip((y1 - pad_y) / sy, height), clip((y2 - pad_y) / sy, height)
        objects.append({"label": labels[int(classes[i])], "accuracy": float(scores[i]),
                        "rectangle": {"left": left, "top": top, "width": right - left, "height": bottom - top}})
    return objects


MODEL_DIR = os.environ.get("MODEL_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "skyburst", "models")
NET, HEADS, YOLO, LABELS = load_model(MODEL_DIR)
# OpenCV allocates on the first forward: do it now, not inside the first timed request.
NET.setInput(np.full((1, 3, NET_SIZE, NET_SIZE), CANVAS, np.float32))
NET.forward(HEADS)


def detect(data):
    t0 = time.perf_counter()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if bgr is None:
        return None
    height, width = bgr.shape[:2]
    blob, placement = letterbox_bgr(bgr)
    t1 = time.perf_counter()
    NET.setInput(blob)
    outs = NET.forward(HEADS)
    t2 = time.perf_counter()
    objects = to_objects(*decode(outs, YOLO), placement, width, height, LABELS)
    t3 = time.perf_counter()
    timings = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3, "postprocess_ms": (t3 - t2) * 1e3}
    return {"objects": objects, "width": width, "height": height, "timings": timings}


app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES


def error(status, code, detail):
    return jsonify({"error": code, "detail": detail}), status


@app.errorhandler(413)
def too_large(_e):
    return error(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@app.post("/api/detect")
def api_detect():
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return error(400, "bad_json", 'expected a JSON object {"id": "...", "image": "<base64>"}')
    job_id, image = body.get("id"), body.get("image")
    if job_id is not None and not isinstance(job_id, str):
        return error(400, "bad_json", '"id" must be a string')
    if not isinstance(image, str) or not image:
        return error(400, "bad_json", '"image" must be a non-empty base64 string')
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError) as e:
        return error(400, "bad_base64", f'"image" is not valid base64: {e}')
    result = detect(data)
    if result is None:
        return error(400, "bad_image", "the image could not be decoded")
    answer = {"id": job_id} if job_id is not None else {}
    answer.update(result)
    return jsonify(answer)
