#!/usr/bin/env python3
"""Summarises the pipeline benchmark: reads the per-run CSVs of `skyburst load` listed in a
manifest and prints, per service and concurrency, the medians over rounds of images/s, latency
p50/p95 and CPU ms per image by role, the per-job overhead at concurrency 1 (latency - detector
time, all rounds pooled), the Skyburst / reference ratios (per round, then the median over
rounds) and the throughput acceptance at concurrency 4 and 16; writes it all as JSON.
Normally started by scripts/bench-pipeline.sh:

    python scripts/bench/bench_pipeline.py --manifest RUNS.tsv [--cpu CPU.tsv] \
        [--out bench-out/pipeline.json] [--meta key=value ...]

Manifest: tab-separated with a header `round service concurrency requests wall_s rc csv`, one
row per timed load run (round optional, 1 when absent); wall_s is the run's wall-clock time
measured by the caller, rc the load command's exit status. Each CSV has the header
`index,file,mode,status,latency_ms,detector_ms,objects,labels,correct,error`: status is the HTTP
status (0 = transport error), detector_ms = preprocess + inference + postprocess from the
answer's timings (empty when absent).

CPU file (optional): tab-separated with a header `round service concurrency role processes
cpu_ms`, the CPU time (user + system) each role of the service under test used during that run,
summed over its processes; role `client` is the load client. Divided by the run's 200 answers.

Medians and ratios use only runs without a problem; a ratio is taken within a round (same round,
same level) and then the median over the rounds where both services' runs are good.

Exit status 1 when a run failed (rc != 0, CSV missing or unreadable, or no 200 answer);
missing the overhead or throughput bar is reported, not an error.
"""

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVICES = ("skyburst", "reference")
LABEL = {"skyburst": "Skyburst", "reference": "reference (Flask+gunicorn+OpenCV)"}
OVERHEAD_BAR_MS = 5.0  # issue 3: per-job overhead p50 <= 5 ms on loopback at concurrency 1
# Acceptance bars at these levels: Skyburst images/s >= 1.3x the reference's, p95 no worse;
# medians over interleaved rounds measured in one run.
THROUGHPUT_LEVELS = (4, 16)
THROUGHPUT_BAR = 1.3
P95_BAR = 1.0
CLIENT = "client"
ROLE_ORDER = ("up", "controller", "serve", "master", "worker")  # table columns; others follow


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, help="TSV: round, service, concurrency, requests, wall_s, rc, csv")
    p.add_argument("--cpu", help="TSV: round, service, concurrency, role, processes, cpu_ms")
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
    """One run's figures from its CSV rows; the per-job samples stay in run["_samples"] for pooling."""
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
        _samples={"latency": lat, "detector": det, "overhead": over},
    )
    return run


def load_cpu(path):
    """(round, service, concurrency) -> {role: (processes, cpu_ms)}; empty without a file."""
    cpu = {}
    if not path:
        return cpu
    with open(path, newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t"):
            ms = num(rec.get("cpu_ms"))
            if ms is None:
                continue
            key = (int(rec["round"]), rec["service"], int(rec["concurrency"]))
            cpu.setdefault(key, {})[rec["role"]] = (int(rec.get("processes") or 0), ms)
    return cpu


def attach_cpu(run, roles):
    """CPU ms per role for the run, and per answered image (service_total = every role but the client)."""
    if not roles:
        run.update(cpu_ms=None, cpu_processes=None, cpu_ms_per_image=None, cpu_cores_busy=None)
        return
    run["cpu_ms"] = {role: ms for role, (_, ms) in sorted(roles.items())}
    run["cpu_processes"] = {role: n for role, (n, _) in sorted(roles.items())}
    service = [ms for role, (_, ms) in roles.items() if role != CLIENT]
    total = sum(service) if service else None
    per = {role: ms / run["ok"] for role, ms in run["cpu_ms"].items()} if run["ok"] else {}
    if run["ok"] and total is not None:
        per["service_total"] = total / run["ok"]
    run["cpu_ms_per_image"] = per or None
    # Mean number of cores the service kept busy over the run (2 = both cores of a 2-vCPU box).
    run["cpu_cores_busy"] = total / (run["wall_s"] * 1000) if total is not None and run["wall_s"] else None


def load_manifest(path, cpu):
    runs, failures = [], []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t"):
            run = {"round": int(rec.get("round") or 1), "service": rec["service"],
                   "concurrency": int(rec["concurrency"]), "requests": int(rec["requests"]),
                   "wall_s": num(rec["wall_s"]), "rc": int(rec["rc"]), "csv": rec["csv"], "rows": []}
            problem = None
            if run["rc"] != 0:
                problem = f"load exited with status {run['rc']}"
            try:
                run["rows"] = read_csv(rec["csv"])
            except (OSError, ValueError, csv.Error) as e:
                problem = problem or str(e)
            run = summarise(run)
            attach_cpu(run, cpu.get((run["round"], run["service"], run["concurrency"])))
            if not problem and run["ok"] == 0:
                problem = "no request answered 200"
            if problem:
                run["problem"] = problem
                failures.append(f"{run['service']} c={run['concurrency']} round {run['round']}: {problem}")
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


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def agg(per_round):
    """{"median", "per_round"}: per_round lines up with the rounds (None where the run failed)."""
    return {"median": med(per_round), "per_round": per_round}


def with_rounds(a, nd=2, unit=""):
    """`1.21x (1.18, 1.21, 1.25)`: the median, then each round's value in round order."""
    if a["median"] is None:
        return "—"
    if len(a["per_round"]) < 2:
        return f"{fmt(a['median'], nd)}{unit}"
    return f"{fmt(a['median'], nd)}{unit} ({', '.join(fmt(v, nd) for v in a['per_round'])})"


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


def dig(run, *keys):
    """run[k1][k2]..., None where a level is missing or None (or the run is)."""
    v = run
    for k in keys:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v


def summarise_groups(runs, levels, rounds):
    """Per (service, concurrency): medians over the good rounds, with each round's value."""
    good = {(r["service"], r["concurrency"], r["round"]): r for r in runs if "problem" not in r}
    present = {(r["service"], r["concurrency"]) for r in runs}
    groups = []
    for c in levels:
        for s in SERVICES:
            if (s, c) not in present:
                continue
            per = [good.get((s, c, n)) for n in rounds]
            col = lambda *keys: agg([dig(r, *keys) if r else None for r in per])
            roles = sorted({k for r in per if r and r["cpu_ms_per_image"] for k in r["cpu_ms_per_image"]},
                           key=role_key)
            groups.append({
                "service": s, "concurrency": c, "rounds": list(rounds),
                "good_rounds": [n for n, r in zip(rounds, per) if r],
                "images_per_s": col("images_per_s"), "latency_p50_ms": col("latency_ms", "p50"),
                "latency_p95_ms": col("latency_ms", "p95"), "detector_p50_ms": col("detector_ms", "p50"),
                "cpu_ms_per_image": {role: col("cpu_ms_per_image", role) for role in roles},
                "cpu_cores_busy": col("cpu_cores_busy"),
            })
    return groups


def role_key(role):
    if role == "service_total":
        return (2, role)
    if role == CLIENT:
        return (3, role)
    return (0, ROLE_ORDER.index(role)) if role in ROLE_ORDER else (1, role)


def per_round_ratios(runs, levels, rounds):
    """Skyburst / reference within each round (same round, same level), then the median over rounds."""
    good = {(r["service"], r["concurrency"], r["round"]): r for r in runs if "problem" not in r}
    present = {(r["service"], r["concurrency"]) for r in runs}
    metrics = {"images_per_s": ("images_per_s",), "latency_p50": ("latency_ms", "p50"),
               "latency_p95": ("latency_ms", "p95"), "detector_p50": ("detector_ms", "p50"),
               "cpu_ms_per_image": ("cpu_ms_per_image", "service_total")}
    out = []
    for c in levels:
        if ("skyburst", c) not in present or ("reference", c) not in present:
            continue
        pairs = [(good.get(("skyburst", c, n)), good.get(("reference", c, n))) for n in rounds]
        entry = {"concurrency": c, "rounds": list(rounds),
                 "good_rounds": [n for n, (sk, ref) in zip(rounds, pairs) if sk and ref]}
        for name, keys in metrics.items():
            entry[name] = agg([ratio(dig(sk, *keys), dig(ref, *keys)) if sk and ref else None for sk, ref in pairs])
        out.append(entry)
    return out


def main():
    a = parse_args()
    meta = dict(kv.split("=", 1) for kv in a.meta if "=" in kv)
    runs, failures = load_manifest(a.manifest, load_cpu(a.cpu))
    by = {(r["service"], r["concurrency"], r["round"]): r for r in runs}
    levels = sorted({r["concurrency"] for r in runs})
    rounds = sorted({r["round"] for r in runs})
    m = machine()

    print()
    print(f"pipeline benchmark: {m['cpu']}, {m['cpus']} CPUs ({m['usable_cpus']} usable), load avg {m['load_avg']}")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    print()
    print(f"Every run ({len(rounds)} round{'s' if len(rounds) != 1 else ''}):")
    print()
    rows = []
    for c in levels:
        for n in rounds:
            for s in SERVICES:
                r = by.get((s, c, n))
                if not r:
                    continue
                checked = f"{r['correct']}/{r['checked']}" if r["checked"] else "—"
                note = r.get("problem") or ", ".join(f"{k} x status {st}" for st, k in sorted(r["statuses"].items())
                                                      if st != "200")
                rows.append([LABEL[s], c, n, r["rows"], r["ok"], checked, fmt(r["wall_s"], 2),
                             fmt(r["images_per_s"], 2), fmt(r["latency_ms"]["p50"]), fmt(r["latency_ms"]["p95"]),
                             fmt(r["detector_ms"]["p50"]), fmt(dig(r, "cpu_ms_per_image", "service_total")), note])
    print(table(["service", "concurrency", "round", "requests", "ok", "correct", "wall s", "images/s", "p50 ms",
                 "p95 ms", "detector p50 ms", "CPU ms/image", "problem / non-200"], rows, left=(0, 12)))

    groups = summarise_groups(runs, levels, rounds)
    print()
    print("Medians over the rounds without a problem (each round's value in parentheses, in round order;")
    print("— where that round's run failed):")
    print()
    rows = []
    for g in groups:
        rows.append([LABEL[g["service"]], g["concurrency"], f"{len(g['good_rounds'])}/{len(g['rounds'])}",
                     with_rounds(g["images_per_s"]), with_rounds(g["latency_p50_ms"], 1),
                     with_rounds(g["latency_p95_ms"], 1), fmt(g["detector_p50_ms"]["median"])])
    print(table(["service", "concurrency", "rounds", "images/s", "p50 ms", "p95 ms", "detector p50 ms"], rows,
                left=(0, 3, 4, 5)))

    print()
    print("CPU ms per answered image by role, median over rounds (user + system time of the service's")
    print("processes during the timed run; the other service is idle then). service = every role but the")
    print("client; cores busy = service CPU time / wall time.")
    print()
    roles = sorted({role for g in groups for role in g["cpu_ms_per_image"]} - {"service_total", CLIENT},
                   key=role_key)
    rows = []
    for g in groups:
        cpu = g["cpu_ms_per_image"]
        if not cpu:
            continue
        rows.append([LABEL[g["service"]], g["concurrency"]] + [fmt(cpu[r]["median"]) if r in cpu else "—" for r in roles]
                    + [with_rounds(cpu["service_total"], 1) if "service_total" in cpu else "—",
                       fmt(g["cpu_cores_busy"]["median"], 2),
                       fmt(cpu[CLIENT]["median"]) if CLIENT in cpu else "—"])
    if rows:
        print(table(["service", "concurrency"] + roles + ["service", "cores busy", CLIENT], rows,
                    left=(0, len(roles) + 2)))
    else:
        print("(no CPU figures: run through scripts/bench-pipeline.sh, which passes --cpu)")

    print()
    print("Per-job overhead at concurrency 1 = client latency - detector time (preprocess + inference +")
    print("postprocess as the answer reports them): queue, store, HTTP, JSON and base64 for Skyburst;")
    print("HTTP, JSON and base64 for the reference. Every job of the good rounds, pooled.")
    print()
    acceptance = None
    rows = []
    for s in SERVICES:
        pool = [r for n in rounds for r in [by.get((s, 1, n))] if r and "problem" not in r]
        if not any(by.get((s, 1, n)) for n in rounds):
            continue
        over = [x for r in pool for x in r["_samples"]["overhead"]]
        lat = [x for r in pool for x in r["_samples"]["latency"]]
        det = [x for r in pool for x in r["_samples"]["detector"]]
        o = {"p50": percentile(over, 50), "p95": percentile(over, 95), "n": len(over)}
        verdict = ""
        if s == "skyburst":
            if o["p50"] is None:
                acceptance = {"bar_p50_ms": OVERHEAD_BAR_MS, "p50_ms": None, "pass": False, "rounds": len(pool),
                              "why": "no good run" if not pool else "no detector timings in the answers"}
                verdict = "FAIL (no good run)" if not pool else "FAIL (no detector_ms)"
            else:
                ok = o["p50"] <= OVERHEAD_BAR_MS
                acceptance = {"bar_p50_ms": OVERHEAD_BAR_MS, "p50_ms": o["p50"], "p95_ms": o["p95"], "pass": ok,
                              "jobs": o["n"], "rounds": len(pool)}
                verdict = f"{'PASS' if ok else 'FAIL'} (bar p50 <= {OVERHEAD_BAR_MS:g} ms)"
        rows.append([LABEL[s], len(pool), o["n"], fmt(o["p50"], 2), fmt(o["p95"], 2), fmt(percentile(lat, 50)),
                     fmt(percentile(det, 50)), verdict])
    if rows:
        print(table(["service", "rounds", "jobs", "overhead p50 ms", "overhead p95 ms", "latency p50 ms",
                     "detector p50 ms", "acceptance"], rows, left=(0, 7)))
    else:
        print("(no concurrency-1 run)")

    print()
    print("Skyburst / reference: images/s above 1 and latency or CPU below 1 favour Skyburst. Each ratio")
    print("is taken within a round (same round, same level); the figure is the median over rounds,")
    print("each round's ratio in parentheses.")
    print()
    ratios = per_round_ratios(runs, levels, rounds)
    print(table(["concurrency", "rounds", "images/s ratio", "p50 ratio", "p95 ratio", "detector p50 ratio",
                 "CPU/image ratio"],
                [[x["concurrency"], f"{len(x['good_rounds'])}/{len(x['rounds'])}", with_rounds(x["images_per_s"], 2, "x"),
                  with_rounds(x["latency_p50"], 2, "x"), with_rounds(x["latency_p95"], 2, "x"),
                  with_rounds(x["detector_p50"], 2, "x"), with_rounds(x["cpu_ms_per_image"], 2, "x")]
                 for x in ratios], left=(2, 3, 4, 5, 6)))

    print()
    print(f"Acceptance at concurrency {' and '.join(map(str, THROUGHPUT_LEVELS))}: images/s ratio >= "
          f"{THROUGHPUT_BAR:.1f} and p95 ratio <= {P95_BAR:.1f}\n(medians of the per-round ratios; every round must be good):")
    throughput = []
    for x in ratios:
        if x["concurrency"] not in THROUGHPUT_LEVELS:
            continue
        img, p95 = x["images_per_s"]["median"], x["latency_p95"]["median"]
        why = []
        if img is None or p95 is None:
            why.append("no round where both runs are good")
        else:
            if img < THROUGHPUT_BAR:
                why.append(f"images/s {img:.2f}x < {THROUGHPUT_BAR:.1f}")
            if p95 > P95_BAR:
                why.append(f"p95 {p95:.2f}x > {P95_BAR:.1f}")
        missing = len(x["rounds"]) - len(x["good_rounds"])
        if missing:
            why.append(f"{missing} of {len(x['rounds'])} rounds failed")
        ok = not why
        throughput.append({"concurrency": x["concurrency"], "images_per_s_ratio": img, "latency_p95_ratio": p95,
                           "bar_images_per_s_ratio": THROUGHPUT_BAR, "bar_latency_p95_ratio": P95_BAR,
                           "rounds": len(x["good_rounds"]), "pass": ok, "why": "; ".join(why) or None})
        print(f"  concurrency {x['concurrency']}: {'PASS' if ok else 'FAIL'} (images/s {fmt(img, 2)}x, "
              f"p95 {fmt(p95, 2)}x over {len(x['good_rounds'])} round{'s' if len(x['good_rounds']) != 1 else ''}"
              + (f"; {'; '.join(why)}" if why else "") + ")")
    if not throughput:
        print("  (no run at those levels with both services)")

    if failures:
        print()
        for f in failures:
            print(f"error: {f}", file=sys.stderr)

    m["load_avg_end"] = m.pop("load_avg")
    legacy = [{"concurrency": x["concurrency"], "rounds": len(x["good_rounds"]),
               **{k: x[k]["median"] for k in ("images_per_s", "latency_p50", "latency_p95", "detector_p50")}}
              for x in ratios]
    doc = {"benchmark": "pipeline", "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": m,
           "meta": meta, "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
           "summary": {"rounds": rounds, "levels": levels, "per_service": groups, "ratios": ratios,
                       "acceptance_throughput": throughput},
           "ratios_skyburst_over_reference": legacy, "acceptance_overhead": acceptance,
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
