#!/usr/bin/env python3
"""Converts a darknet .cfg + .weights (yolov3-tiny here) to ONNX for the onnxruntime runner,
then checks the result against OpenCV's saved heads.

    python scripts/bench/darknet2onnx.py --model-dir ~/.cache/skyburst/models \
        --out ~/.cache/skyburst/models/yolov3-tiny.onnx [--fixtures tests/fixtures/yolo] [--image bus.jpg]

The cfg is parsed generically (convolutional, maxpool, upsample, route, shortcut, yolo);
nothing about yolov3-tiny is hardcoded. Graph: input "input" [batch,3,H,W] (batch dynamic);
one output per [yolo] section, the raw pre-sigmoid tensor feeding it (for yolov3-tiny
"conv_15" 255x13x13 and "conv_22" 255x26x26, the same names OpenCV uses).

Check (optional, skipped with a note when the fixture folder is missing): ORT on
bus_letterbox_input_1x3x416x416.npy vs OpenCV's bus_letterbox_head{13,26}_*.npy must agree
within 1e-3 max |delta| (heads reach |24|; a faithful conversion gives ~1.5e-4; BN eps 1e-5
instead of 1e-6 alone gives ~1e-3, which is why the bound sits there). Exit 1 on failure.
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Darknet folds BN as gamma / sqrt(var + .000001) (batchnorm_layer.c); 1e-5 would be off by ~1e-3.
BN_EPS = 1e-6
# Opset 17 has LeakyRelu, Resize and MaxPool with pads in their current form and is
# supported by every onnxruntime since 1.13; IR 8 is the matching IR version.
OPSET = 17
IR_VERSION = 8
TOLERANCE = 1e-3

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_FIXTURES = os.path.join(REPO, "tests", "fixtures", "yolo")


def parse_cfg(path):
    """Returns [(section_type, {key: value_str})], [net] first. Comments ('#', ';') are dropped."""
    sections = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    sys.exit(f"{path}:{n}: bad section header {line!r}")
                sections.append((line[1:-1].strip(), {}))
            elif "=" in line and sections:
                k, v = line.split("=", 1)
                sections[-1][1][k.strip()] = v.strip()
            else:
                sys.exit(f"{path}:{n}: expected 'key=value' inside a section, got {line!r}")
    if not sections or sections[0][0] not in ("net", "network"):
        sys.exit(f"{path}: the first section must be [net]")
    return sections


class WeightReader:
    """Darknet .weights: int32 major, minor, revision; `seen` as uint64 when major*10+minor >= 2
    and major < 1000, else uint32; then little-endian float32 until the end of the file."""

    def __init__(self, path):
        raw = np.fromfile(path, dtype=np.uint8)
        major, minor, revision = np.frombuffer(raw[:12], dtype="<i4")
        seen_bytes = 8 if (major * 10 + minor >= 2 and major < 1000) else 4
        self.header = 12 + seen_bytes  # 20 for yolov3-tiny.weights (0.2.0)
        self.version = (int(major), int(minor), int(revision))
        body = raw[self.header:]
        if body.size % 4:
            sys.exit(f"{path}: {body.size} bytes after the header is not a whole number of float32")
        self.floats = body.view("<f4")
        self.pos = 0
        self.path = path

    def take(self, n):
        if self.pos + n > self.floats.size:
            sys.exit(f"{self.path}: needs {self.pos + n} floats but holds {self.floats.size}; cfg and weights disagree")
        out = self.floats[self.pos:self.pos + n]
        self.pos += n
        return out

    def finish(self):
        """The file must be consumed exactly: a leftover means the cfg does not describe it."""
        left = self.floats.size - self.pos
        if left:
            sys.exit(f"{self.path}: {left} floats left after the last layer; cfg and weights disagree")
        return self.pos


def integer(d, key, default):
    return int(d.get(key, default))


def convert(cfg_path, weights_path):
    sections = parse_cfg(cfg_path)
    net = sections[0][1]
    input_chw = (integer(net, "channels", 3), integer(net, "height", 416), integer(net, "width", 416))
    c, h, w = input_chw
    wr = WeightReader(weights_path)
    nodes, inits, outputs = [], [], []
    layers = []  # per layer index: (tensor name, channels, height, width)
    prev = ("input", c, h, w)
    gflop = 0.0

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    for i, (kind, d) in enumerate(sections[1:]):
        x, c, h, w = prev
        if kind == "convolutional":
            f, k = integer(d, "filters", 1), integer(d, "size", 1)
            s, groups = integer(d, "stride", 1), integer(d, "groups", 1)
            # darknet: pad=1 means "same" padding k/2 (so 0 for the 1x1 convs), else `padding`.
            p = k // 2 if integer(d, "pad", 0) else integer(d, "padding", 0)
            act = d.get("activation", "logistic")  # darknet's default activation
            n_w = f * (c // groups) * k * k
            if integer(d, "batch_normalize", 0):
                beta, gamma, mean, var = (wr.take(f).astype(np.float64) for _ in range(4))
                wt = wr.take(n_w).astype(np.float64).reshape(f, c // groups, k, k)
                scale = gamma / np.sqrt(var + BN_EPS)
                wt = wt * scale[:, None, None, None]
                bias = beta - mean * scale
            else:
                bias = wr.take(f).astype(np.float64)
                wt = wr.take(n_w).astype(np.float64).reshape(f, c // groups, k, k)
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            gflop += 2 * n_w * oh * ow / 1e9
            name = f"conv_{i}"
            conv_out = name if act == "linear" else f"{name}_pre"
            nodes.append(helper.make_node(
                "Conv", [x, init(f"{name}.weight", wt), init(f"{name}.bias", bias)], [conv_out],
                kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=groups, name=name))
            if act == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [conv_out], [name], alpha=0.1, name=f"leaky_{i}"))
            elif act == "relu":
                nodes.append(helper.make_node("Relu", [conv_out], [name], name=f"relu_{i}"))
            elif act == "logistic":
                nodes.append(helper.make_node("Sigmoid", [conv_out], [name], name=f"logistic_{i}"))
            elif act != "linear":
                sys.exit(f"layer {i}: activation {act!r} is not supported")
            prev = (name, f, oh, ow)
        elif kind == "maxpool":
            k = integer(d, "size", 1)
            s = integer(d, "stride", k)
            # darknet pads size-1 in total, the extra one at bottom/right (w_offset = -pad/2), and
            # pools over -FLT_MAX there; ONNX MaxPool ignores pads the same way. For size=2
            # stride=1 (yolov3-tiny layer 11) that keeps 13x13: (13 + 1 - 2)/1 + 1 = 13.
            p = integer(d, "padding", k - 1)
            lo, hi = p // 2, p - p // 2
            oh, ow = (h + p - k) // s + 1, (w + p - k) // s + 1
            name = f"pool_{i}"
            nodes.append(helper.make_node("MaxPool", [x], [name], kernel_shape=[k, k], strides=[s, s],
                                          pads=[lo, lo, hi, hi], name=name))
            prev = (name, c, oh, ow)
        elif kind == "upsample":
            s = integer(d, "stride", 2)
            if float(d.get("scale", 1)) != 1:
                sys.exit(f"layer {i}: upsample scale != 1 is not supported")
            name = f"upsample_{i}"
            # Nearest x s: 'asymmetric' + 'floor' makes output[y] = input[y // s] exactly.
            scales = init(f"{name}.scales", np.array([1, 1, s, s], dtype=np.float32))
            nodes.append(helper.make_node("Resize", [x, "", scales], [name], mode="nearest",
                                          coordinate_transformation_mode="asymmetric",
                                          nearest_mode="floor", name=name))
            prev = (name, c, h * s, w * s)
        elif kind == "route":
            if "groups" in d or "group_id" in d:
                sys.exit(f"layer {i}: route groups (yolov4-tiny) are not supported")
            idx = [int(v) for v in d["layers"].split(",")]
            idx = [i + v if v < 0 else v for v in idx]  # negative = relative to this layer
            srcs = [layers[j] for j in idx]
            if any((sh, sw) != (srcs[0][2], srcs[0][3]) for _, _, sh, sw in srcs):
                sys.exit(f"layer {i}: route inputs differ in size: {srcs}")
            if len(srcs) == 1:
                prev = srcs[0]  # a single route is a reference, no node
            else:
                name = f"concat_{i}"
                nodes.append(helper.make_node("Concat", [t for t, *_ in srcs], [name], axis=1, name=name))
                prev = (name, sum(sc for _, sc, _, _ in srcs), srcs[0][2], srcs[0][3])
        elif kind == "shortcut":
            j = int(d["from"])
            j = i + j if j < 0 else j
            if d.get("activation", "linear") != "linear" or layers[j][1:] != (c, h, w):
                sys.exit(f"layer {i}: only linear shortcuts between equal shapes are supported")
            name = f"shortcut_{i}"
            nodes.append(helper.make_node("Add", [x, layers[j][0]], [name], name=name))
            prev = (name, c, h, w)
        elif kind == "yolo":
            outputs.append(prev)  # the raw head feeding this yolo layer; decoding stays outside
        else:
            sys.exit(f"layer {i}: section [{kind}] is not supported")
        layers.append(prev)

    consumed = wr.finish()
    if not outputs:
        sys.exit(f"{cfg_path}: no [yolo] section, so no outputs")
    graph = helper.make_graph(
        nodes, "darknet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_chw])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, ["batch", oc, oh, ow]) for t, oc, oh, ow in outputs],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="skyburst-darknet2onnx")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    info = {"layers": len(layers), "floats": consumed, "header_bytes": wr.header, "version": wr.version,
            "gflop": gflop, "outputs": outputs}
    return model, info


def verify(onnx_path, fixtures, image):
    """Compares ORT's heads with OpenCV's saved heads; returns False when out of tolerance."""
    import onnxruntime as ort

    inp = os.path.join(fixtures, "bus_letterbox_input_1x3x416x416.npy")
    refs = {13: os.path.join(fixtures, "bus_letterbox_head13_conv15_1x255x13x13.npy"),
            26: os.path.join(fixtures, "bus_letterbox_head26_conv22_1x255x26x26.npy")}
    missing = [p for p in [inp, *refs.values()] if not os.path.isfile(p)]
    if missing:
        print(f"note: skipping the check against OpenCV's heads: {', '.join(missing)} not found "
              f"(pass --fixtures DIR holding the bus_letterbox_*.npy tensors)")
        return True
    x = np.load(inp)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    ok = True
    worst = 0.0
    for out in sess.run(None, {"input": x}):
        ref = np.load(refs[out.shape[-1]])
        d = float(np.abs(out - ref).max())
        worst = max(worst, d)
        print(f"check: head {out.shape[-1]}x{out.shape[-1]} {tuple(out.shape)}: max |delta| vs OpenCV = {d:.3e}"
              f" (|values| up to {float(np.abs(ref).max()):.1f})")
    ok = worst <= TOLERANCE
    print(f"check: max |delta| ORT vs OpenCV heads = {worst:.3e} ({'ok' if ok else 'FAIL'}, tolerance {TOLERANCE:g})")
    # Dynamic batch: two copies through one run must each give the batch-1 answer.
    one = sess.run(None, {"input": x})
    two = sess.run(None, {"input": np.concatenate([x, x])})
    db = max(float(np.abs(b[k:k + 1] - a).max()) for a, b in zip(one, two) for k in range(2))
    print(f"check: batch 2 vs batch 1 max |delta| = {db:.3e}")
    ok = ok and db <= TOLERANCE
    if image:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from common import letterbox

        if os.path.basename(image) == "bus.jpg":
            d = float(np.abs(letterbox(image)[None] - x).max())
            print(f"check: our letterbox of {image} vs the saved input: max |delta| = {d:.3e}")
            ok = ok and d <= 1e-6
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=os.path.expanduser("~/.cache/skyburst/models"))
    p.add_argument("--cfg", help="default: MODEL_DIR/yolov3-tiny.cfg")
    p.add_argument("--weights", help="default: MODEL_DIR/yolov3-tiny.weights")
    p.add_argument("--out", help="default: MODEL_DIR/yolov3-tiny.onnx")
    p.add_argument("--fixtures", default=DEFAULT_FIXTURES, help="folder with bus_letterbox_*.npy (optional check)")
    p.add_argument("--image", help="bus.jpg: also check common.letterbox against the saved input tensor")
    a = p.parse_args()
    cfg = a.cfg or os.path.join(a.model_dir, "yolov3-tiny.cfg")
    weights = a.weights or os.path.join(a.model_dir, "yolov3-tiny.weights")
    out = a.out or os.path.join(a.model_dir, "yolov3-tiny.onnx")

    model, info = convert(cfg, weights)
    tmp = f"{out}.tmp{os.getpid()}"
    onnx.save(model, tmp)
    os.replace(tmp, out)  # readers never see a half-written model
    heads = ", ".join(f"{t} {oc}x{oh}x{ow}" for t, oc, oh, ow in info["outputs"])
    print(f"darknet2onnx: {info['layers']} layers, weights v{'.'.join(map(str, info['version']))} "
          f"header {info['header_bytes']} B + {info['floats']:,} floats (file consumed exactly), "
          f"{info['gflop']:.3f} GFLOP/image; outputs {heads} -> {out}")
    if not verify(out, a.fixtures, a.image):
        sys.exit(1)


if __name__ == "__main__":
    main()
