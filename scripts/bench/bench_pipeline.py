#!/usr/bin/env python3
"""Summarises the pipeline benchmark: reads the per-run CSVs of `skyburst load` listed in a
manifest and prints images/s, latency p50/p95, the per-job overhead at concurrency 1
(latency - detector time) and the Skyburst / reference ratios; writes it all as JSON.
Normally started by scripts/bench-pipeline.sh:

    python scripts/bench/bench_pipeline.py --manifest RUNS.tsv [--out bench-out/pipeline.json] \
        [--meta key=value ...]

Manifest: tab-separated with a header `service concurrency requests wall_s rc csv`, one row per
timed load run; wall_s is the run's wall-clock time measured by the caller, rc the load
command's exit status. Each CSV has the header
`index,file,mode,status,latency_ms,detector_ms,objects,labels,correct,error`: status is the HTTP
status (0 = transport error), detector_ms = preprocess + inference + postprocess from the
answer's timings (empty when absent).

Exit status 1 when a run failed (rc != 0, CSV missing or unreadable, or no 200 answer);
missing the overhead bar is reported, not an error.
"""

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from collections import Counter

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVICES = ("skyburst", "reference")
LABEL = {"skyburst": "Skyburst", "reference": "reference (Flask+gunicorn+OpenCV)"}
OVERHEAD_BAR_MS = 5.0  # issue 3: per-job overhead p50 <= 5 ms on loopback at concurrency 1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, help="TSV: service, concurrency, requests, wall_s, rc, csv")
    p.add_argument("--out", default=os.path.join(REPO, "bench-out", "pipeline.json"))
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="extra fields for the JSON")
    return p.parse_args()


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def num(s):
    try:
        x = float(s)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def truthy(s):
    s = (s or "").strip().lower()
    return None if s == "" else s in ("1", "true", "yes", "ok")


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("status", "latency_ms", "detector_ms") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: columns {missing} missing (header {reader.fieldnames})")
        return list(reader)


def summarise(run):
    """One run's figures from its CSV rows."""
    rows = run.pop("rows")
    ok = [r for r in rows if r.get("status", "").strip() == "200"]
    lat = [x for x in (num(r["latency_ms"]) for r in ok) if x is not None]
    det = [x for x in (num(r["detector_ms"]) for r in ok) if x is not None]
    over = [l - d for l, d in ((num(r["latency_ms"]), num(r["detector_ms"])) for r in ok)
            if l is not None and d is not None]
    statuses = dict(Counter((r.get("status") or "").strip() or "?" for r in rows))
    correct = [c for c in (truthy(r.get("correct")) for r in ok) if c is not None]
    errors = sorted({(r.get("error") or "").strip() for r in rows if (r.get("error") or "").strip()})
    wall = run["wall_s"]
    run.update(
        rows=len(rows), ok=len(ok), statuses=statuses,
        correct=sum(correct) if correct else None, checked=len(correct),
        images_per_s=len(ok) / wall if wall and wall > 0 else None,
        latency_ms={"p50": percentile(lat, 50), "p95": percentile(lat, 95), "mean": sum(lat) / len(lat) if lat else None,
                    "min": min(lat) if lat else None, "max": max(lat) if lat else None},
        detector_ms={"p50": percentile(det, 50), "p95": percentile(det, 95), "n": len(det)},
        overhead_ms={"p50": percentile(over, 50), "p95": percentile(over, 95), "n": len(over)},
        error_samples=errors[:5],
    )
    return run


def load_manifest(path):
    runs, failures = [], []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t"):
            run = {"service": rec["service"], "concurrency": int(rec["concurrency"]),
                   "requests": int(rec["requests"]), "wall_s": num(rec["wall_s"]), "rc": int(rec["rc"]),
                   "csv": rec["csv"], "rows": []}
            problem = None
            if run["rc"] != 0:
                problem = f"load exited with status {run['rc']}"
            try:
                run["rows"] = read_csv(rec["csv"])
            except (OSError, ValueError, csv.Error) as e:
                problem = problem or str(e)
            run = summarise(run)
            if not problem and run["ok"] == 0:
                problem = "no request answered 200"
            if problem:
                run["problem"] = problem
                failures.append(f"{run['service']} c={run['concurrency']}: {problem}")
            runs.append(run)
    return runs, failures


def machine():
    model, cores = "unknown", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("processor"):
                    cores += 1
    except OSError:
        pass
    return {"cpu": model or platform.processor() or "unknown", "cpus": cores or os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version(), "load_avg": [round(v, 2) for v in os.getloadavg()]}


def fmt(v, nd=1):
    return "—" if v is None else f"{v:.{nd}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def table(header, rows, left=(0,)):
    """Plain-text table; columns in `left` (text) are left-aligned, the rest right-aligned."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for k, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main():
    a = parse_args()
    meta = dict(kv.split("=", 1) for kv in a.meta if "=" in kv)
    runs, failures = load_manifest(a.manifest)
    by = {(r["service"], r["concurrency"]): r for r in runs}
    levels = sorted({r["concurrency"] for r in runs})
    m = machine()

    print()
    print(f"pipeline benchmark: {m['cpu']}, {m['cpus']} CPUs ({m['usable_cpus']} usable), load avg {m['load_avg']}")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    print()
    rows = []
    for c in levels:
        for s in SERVICES:
            r = by.get((s, c))
            if not r:
                continue
            checked = f"{r['correct']}/{r['checked']}" if r["checked"] else "—"
            note = r.get("problem") or ", ".join(f"{n} x status {st}" for st, n in sorted(r["statuses"].items())
                                                  if st != "200")
            rows.append([LABEL[s], c, r["rows"], r["ok"], checked, fmt(r["wall_s"], 2), fmt(r["images_per_s"], 2),
                         fmt(r["latency_ms"]["p50"]), fmt(r["latency_ms"]["p95"]), fmt(r["detector_ms"]["p50"]),
                         note])
    print(table(["service", "concurrency", "requests", "ok", "correct", "wall s", "images/s", "p50 ms", "p95 ms",
                 "detector p50 ms", "problem / non-200"], rows, left=(0, 10)))

    print()
    print("Per-job overhead at concurrency 1 = client latency - detector time (preprocess + inference +")
    print("postprocess as the answer reports them): queue, store, HTTP, JSON and base64 for Skyburst;")
    print("HTTP, JSON and base64 for the reference.")
    print()
    acceptance = None
    rows = []
    for s in SERVICES:
        r = by.get((s, 1))
        if not r:
            continue
        o = r["overhead_ms"]
        verdict = ""
        if s == "skyburst":
            if o["p50"] is None:
                acceptance = {"bar_p50_ms": OVERHEAD_BAR_MS, "p50_ms": None, "pass": False,
                              "why": "no detector timings in the answers"}
                verdict = "FAIL (no detector_ms)"
            else:
                ok = o["p50"] <= OVERHEAD_BAR_MS
                acceptance = {"bar_p50_ms": OVERHEAD_BAR_MS, "p50_ms": o["p50"], "p95_ms": o["p95"], "pass": ok}
                verdict = f"{'PASS' if ok else 'FAIL'} (bar p50 <= {OVERHEAD_BAR_MS:g} ms)"
        rows.append([LABEL[s], o["n"], fmt(o["p50"], 2), fmt(o["p95"], 2), fmt(r["latency_ms"]["p50"]),
                     fmt(r["detector_ms"]["p50"]), verdict])
    if rows:
        print(table(["service", "jobs", "overhead p50 ms", "overhead p95 ms", "latency p50 ms",
                     "detector p50 ms", "acceptance"], rows, left=(0, 6)))
    else:
        print("(no concurrency-1 run)")

    print()
    print("Skyburst / reference: images/s above 1 and p50 below 1 favour Skyburst.")
    print()
    ratios = []
    for c in levels:
        sk, ref = by.get(("skyburst", c)), by.get(("reference", c))
        if not (sk and ref):
            continue
        ratios.append({"concurrency": c,
                       "images_per_s": ratio(sk["images_per_s"], ref["images_per_s"]),
                       "latency_p50": ratio(sk["latency_ms"]["p50"], ref["latency_ms"]["p50"]),
                       "latency_p95": ratio(sk["latency_ms"]["p95"], ref["latency_ms"]["p95"]),
                       "detector_p50": ratio(sk["detector_ms"]["p50"], ref["detector_ms"]["p50"])})
    print(table(["concurrency", "images/s ratio", "p50 ratio", "p95 ratio", "detector p50 ratio"],
                [[x["concurrency"], fmt(x["images_per_s"], 2), fmt(x["latency_p50"], 2), fmt(x["latency_p95"], 2),
                  fmt(x["detector_p50"], 2)] for x in ratios]))

    if failures:
        print()
        for f in failures:
            print(f"error: {f}", file=sys.stderr)

    m["load_avg_end"] = m.pop("load_avg")
    doc = {"benchmark": "pipeline", "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": m,
           "meta": meta, "runs": runs, "ratios_skyburst_over_reference": ratios, "acceptance_overhead": acceptance,
           "failures": failures}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = f"{a.out}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)
    print()
    print(f"results: {a.out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
