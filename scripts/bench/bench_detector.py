#!/usr/bin/env python3
"""Benchmarks yolov3-tiny forward passes: candle (the project's bench binary) vs OpenCV DNN vs
onnxruntime, then asks which layout serves a 2-core worker best. Normally started by
scripts/bench-detector.sh, which prepares the venv, the model files and the ONNX file:

    scripts/bench-detector.sh [--rounds 3] [--runs 30] [--warmup 5] [--threads 1,2] [--batches 1,4]
    CANDLE_RUNNER=/path/to/detector scripts/bench-detector.sh     # skip the cargo build

Design, because the machine is shared and noisy (load average 3-6 on 2 vCPUs was seen):
- one fresh process per (runtime, threads, batch), so no runtime inherits another's thread
  pools, caches or allocator state; each prints one JSON line (see common.py);
- several rounds, each running every configuration once in a seeded shuffled order, so a
  burst of outside load hits different runtimes in different rounds; ratios are taken per
  round (medians measured minutes apart are not compared) and then the median over rounds;
- 1-thread CPU time is reported beside wall time: it barely moves under contention.
Raw results go to bench-out/detector-<UTC timestamp>.json, the tables to the matching .md.
"""

import argparse
import json
import math
import os
import platform
import random
import statistics as st
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "skyburst")
RUNTIMES = ("candle", "opencv", "onnxruntime")
LABEL = {"candle": "candle", "opencv": "OpenCV DNN", "onnxruntime": "onnxruntime"}
# The worker experiment models the project's 2-vCPU workers: 1 process x 2 threads against
# 2 processes x 1 thread. It is about that machine shape, so the 2 is fixed.
WORKER_CORES = 2
# Rough ms per image on a quiet 2-vCPU Zen 3 (measured once), used only for the
# up-front time estimate and the per-process timeout. Startup: ~1 s to import cv2/ORT and
# load the model in Python, ~0.3 s for candle's .weights load.
ANCHOR_MS = {("candle", 1): 170, ("candle", 2): 130, ("opencv", 1): 80, ("opencv", 2): 45,
             ("onnxruntime", 1): 65, ("onnxruntime", 2): 35}
STARTUP_S = {"candle": 0.3, "opencv": 1.0, "onnxruntime": 1.0}


def csv_ints(s):
    return [int(v) for v in s.split(",") if v.strip()]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3 for a meaningful median)")
    p.add_argument("--runs", type=int, default=30, help="timed forwards per process")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards per process first")
    p.add_argument("--threads", type=csv_ints, default=[1, 2], help="comma list, default 1,2")
    p.add_argument("--batches", type=csv_ints, default=[1, 4], help="comma list, default 1,4")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma list of " + ", ".join(RUNTIMES))
    p.add_argument("--no-workers", action="store_true", help="skip the 1x2-thread vs 2x1-thread experiment")
    p.add_argument("--seed", type=int, default=416, help="seed of the per-round shuffles")
    p.add_argument("--model-dir", default=os.environ.get("MODEL_DIR", os.path.join(CACHE, "models")))
    p.add_argument("--image", default=os.path.join(os.environ.get("IMAGE_DIR", os.path.join(CACHE, "images")), "bus.jpg"))
    p.add_argument("--onnx", help="default: MODEL_DIR/yolov3-tiny.onnx")
    p.add_argument("--candle-runner", default=os.environ.get("CANDLE_RUNNER"),
                   help="candle bench binary (env CANDLE_RUNNER); default: build it with cargo")
    p.add_argument("--out-dir", default=os.path.join(REPO, "bench-out"))
    p.add_argument("--timeout", type=float, default=0, help="seconds per process; 0 = 10x its estimate + 60")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, run nothing")
    a = p.parse_args()
    a.runtimes = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    bad = [r for r in a.runtimes if r not in RUNTIMES]
    if bad or a.rounds < 1 or a.runs < 1 or a.warmup < 0 or not a.threads or not a.batches:
        p.error(f"bad arguments (unknown runtimes: {bad})")
    a.onnx = a.onnx or os.path.join(a.model_dir, "yolov3-tiny.onnx")
    a.workers = "candle" in a.runtimes and not a.no_workers
    return a


# ---------------------------------------------------------------- machine and provenance

def machine():
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return {"cpu": model, "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}


def git_head():
    """Commit of the checkout, read from .git without running git (provenance only)."""
    try:
        head = open(os.path.join(REPO, ".git", "HEAD")).read().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        path = os.path.join(REPO, ".git", ref)
        if os.path.isfile(path):
            return open(path).read().strip()
        for line in open(os.path.join(REPO, ".git", "packed-refs")):
            if line.rstrip().endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def load():
    return [round(v, 2) for v in os.getloadavg()]


def build_candle():
    """`cargo bench --no-run` and the path of the `detector` bench executable it reports."""
    cmd = ["cargo", "bench", "--bench", "detector", "--no-run", "--message-format=json-render-diagnostics"]
    print(f"building the candle runner: {' '.join(cmd)}", flush=True)
    # stdout carries the JSON messages; stderr (progress, rendered diagnostics) goes to the user.
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"error: cargo bench --no-run failed ({proc.returncode})")
    exe = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "detector":
            exe = msg.get("executable") or exe
    if not exe:
        sys.exit("error: cargo reported no executable for the bench target 'detector'")
    return exe


# ---------------------------------------------------------------- running one configuration

def command(a, runtime, threads, batch):
    common = ["--threads", str(threads), "--batch", str(batch), "--runs", str(a.runs),
              "--warmup", str(a.warmup), "--model-dir", a.model_dir, "--image", a.image]
    if runtime == "candle":
        return [a.candle_runner, *common]
    if runtime == "opencv":
        return [sys.executable, os.path.join(HERE, "run_opencv.py"), *common]
    return [sys.executable, os.path.join(HERE, "run_ort.py"), *common, "--onnx", a.onnx]


def estimate_s(a, runtime, threads, batch, procs=1):
    forwards = a.warmup + a.runs + 1  # +1: the runners' first (checked) forward
    # Two 1-thread processes on 2 cores each run at about 1-thread speed, plus ~10% for
    # shared L3 and memory bandwidth.
    slow = 1.1 if procs > 1 else 1.0
    return STARTUP_S[runtime] + forwards * batch * ANCHOR_MS[(runtime, min(threads, 2))] * slow / 1000


def parse_line(out, runtime, threads, batch, runs):
    """The protocol: exactly one JSON object line on stdout with matching fields."""
    lines = [l for l in out.splitlines() if l.strip()]
    objs = []
    for l in lines:
        try:
            objs.append(json.loads(l))
        except ValueError:
            pass
    if len(lines) != 1 or len(objs) != 1 or not isinstance(objs[0], dict):
        raise ValueError(f"expected exactly one JSON line on stdout, got {len(lines)} lines: {out[:300]!r}")
    r = objs[0]
    want = {"runtime": runtime, "threads": threads, "batch": batch}
    got = {k: r.get(k) for k in want}
    if got != want:
        raise ValueError(f"fields {got} do not match the request {want}")
    for k in ("wall_ms", "cpu_ms"):
        v = r.get(k)
        if (not isinstance(v, list) or len(v) != runs
                or not all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in v)):
            raise ValueError(f"{k} must be a list of {runs} finite non-negative numbers, got {str(v)[:200]}")
    return r


def run_procs(a, runtime, threads, batch, procs):
    """Starts `procs` identical processes at once and waits for all; returns one dict per process."""
    env = dict(os.environ)
    # Belt and braces for thread counts: candle's CPU backend sizes its gemm parallelism from
    # RAYON_NUM_THREADS (else all cores), and an OpenMP build would read OMP_NUM_THREADS.
    env.update(RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = command(a, runtime, threads, batch)
    timeout = a.timeout or 10 * estimate_s(a, runtime, threads, batch, procs) + 60
    started = []
    for _ in range(procs):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        started.append((subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True), out, err))
    t0 = time.monotonic()
    results = []
    for proc, out, err in started:
        try:
            rc = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = f"timeout ({timeout:.0f} s)"
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        res = {"cmd": cmd, "rc": rc}
        try:
            if rc != 0:
                raise ValueError(f"exit status {rc}" if isinstance(rc, int) else rc)
            line = parse_line(stdout, runtime, threads, batch, a.runs)
            res.update(wall_ms=line["wall_ms"], cpu_ms=line["cpu_ms"])
        except ValueError as e:
            res.update(error=str(e), stderr_tail=stderr[-2000:])
        results.append(res)
    return results, time.monotonic() - t0


# ---------------------------------------------------------------- statistics and report

def med(v):
    return st.median(v) if v else float("nan")


def fmt(v, nd=1):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def singles(results, runtime, threads, batch, rnd=None):
    return [r for r in results if r["experiment"] == "single" and (r["runtime"], r["threads"], r["batch"])
            == (runtime, threads, batch) and (rnd is None or r["round"] == rnd) and "error" not in r["procs"][0]]


def round_median(results, runtime, threads, batch, rnd):
    rs = singles(results, runtime, threads, batch, rnd)
    return med(rs[0]["procs"][0]["wall_ms"]) if rs else float("nan")


def report(a, meta, results):
    rounds = range(1, a.rounds + 1)
    md = [f"# yolov3-tiny forward pass: candle vs OpenCV DNN vs onnxruntime ({meta['started']})", "",
          f"- machine: {meta['machine']['cpu']}, nproc {meta['machine']['nproc']}, kernel {meta['machine']['kernel']}",
          f"- load average (1/5/15 min): start {meta['load_start']}, end {meta.get('load_end')}",
          f"- versions: {meta['versions']}; commit {meta['commit'][:12]}",
          f"- input: {os.path.basename(a.image)} letterboxed to 416x416, repeated `batch` times (NCHW f32)",
          f"- {a.rounds} rounds x every configuration in seeded shuffled order (seed {a.seed}); "
          f"{a.warmup} warm-up + {a.runs} timed forwards per process; one process per configuration",
          "", "## Forward pass (wall clock)", "",
          "| runtime | threads | batch | median ms/forward | ms/image | images/s | min ms/forward | per-round medians (ms) |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    for rt in a.runtimes:
        for t in a.threads:
            for b in a.batches:
                rs = singles(results, rt, t, b)
                wall = [v for r in rs for v in r["procs"][0]["wall_ms"]]
                m = med(wall)
                per_round = " / ".join(fmt(round_median(results, rt, t, b, r)) for r in rounds)
                md.append(f"| {LABEL[rt]} | {t} | {b} | {fmt(m)} | {fmt(m / b)} | {fmt(1000 * b / m)} | "
                          f"{fmt(min(wall) if wall else None)} | {per_round} |")
    others = [o for o in ("opencv", "onnxruntime") if o in a.runtimes]
    if "candle" in a.runtimes and others:
        md += ["", "Ratios are the median over rounds of (candle median / other median) within a round; "
               "above 1 means candle is slower.", "",
               "| threads | batch | " + " | ".join(f"candle / {LABEL[o]} (per round)" for o in others) + " |",
               "|---:|---:|" + "---:|" * len(others)]
        for t in a.threads:
            for b in a.batches:
                cells = []
                for o in others:
                    per = [round_median(results, "candle", t, b, r) / round_median(results, o, t, b, r) for r in rounds]
                    ok = [p for p in per if not math.isnan(p)]
                    cells.append(f"**{fmt(med(ok), 2)}x** ({', '.join(fmt(p, 2) for p in per)})")
                md.append(f"| {t} | {b} | " + " | ".join(cells) + " |")
    if 1 in a.threads:
        md += ["", "## 1-thread CPU time per image", "",
               "Process CPU time (all threads) per forward / batch. Contention inflates wall time but "
               "barely CPU time, so this is the most stable cost figure on a shared machine.", "",
               "| runtime | batch | CPU ms/image (median) | CPU ms/image (min) | wall ms/image (median) |",
               "|---|---:|---:|---:|---:|"]
        for rt in a.runtimes:
            for b in a.batches:
                rs = singles(results, rt, 1, b)
                cpu = [v / b for r in rs for v in r["procs"][0]["cpu_ms"]]
                wall = [v / b for r in rs for v in r["procs"][0]["wall_ms"]]
                md.append(f"| {LABEL[rt]} | {b} | {fmt(med(cpu))} | {fmt(min(cpu) if cpu else None)} | {fmt(med(wall))} |")
    if a.workers:
        md += ["", f"## Which serves a {WORKER_CORES}-core worker best (candle)", "",
               f"Aggregate images/s of 1 process x {WORKER_CORES} threads against {WORKER_CORES} concurrent "
               f"processes x 1 thread, each process at its median forward time; median over rounds, "
               f"ratio per round then median.", "",
               f"| batch | 1 x {WORKER_CORES} threads (images/s) | {WORKER_CORES} x 1 thread (images/s) | "
               f"ratio {WORKER_CORES}x1 / 1x{WORKER_CORES} (per round) | rounds won by {WORKER_CORES}x1 | recommendation |",
               "|---:|---:|---:|---|---:|---|"]
        recs = []
        for b in a.batches:
            one, many = [], []
            for r in rounds:
                m1 = round_median(results, "candle", WORKER_CORES, b, r)
                one.append(1000 * b / m1)
                pr = [x for x in results if x["experiment"] == "workers" and x["batch"] == b and x["round"] == r]
                ok = pr and all("error" not in p for p in pr[0]["procs"])
                many.append(sum(1000 * b / med(p["wall_ms"]) for p in pr[0]["procs"]) if ok else float("nan"))
            ratios = [m / o for m, o in zip(many, one)]
            good = [x for x in ratios if not math.isnan(x)]
            rm = med(good)
            won = sum(x > 1 for x in good)
            # Within 5% is inside this machine's round-to-round spread: call it a tie.
            if math.isnan(rm):
                rec = "no data"
            elif rm > 1.05:
                rec = f"**{WORKER_CORES} processes x 1 thread** (+{(rm - 1) * 100:.0f}%)"
            elif rm < 0.95:
                rec = f"**1 process x {WORKER_CORES} threads** (+{(1 / rm - 1) * 100:.0f}%)"
            else:
                rec = "tie (within 5%): prefer 1 process x 2 threads (half the memory, lower latency)"
            recs.append(f"batch {b}: {rec}")
            md.append(f"| {b} | {fmt(med([x for x in one if not math.isnan(x)]))} | "
                      f"{fmt(med([x for x in many if not math.isnan(x)]))} | **{fmt(rm, 2)}x** "
                      f"({', '.join(fmt(x, 2) for x in ratios)}) | {won}/{len(good)} | {rec} |")
        md += ["", "Recommendation: " + "; ".join(recs) + "."]
    failed = [r for r in results if any("error" in p for p in r["procs"])]
    if failed:
        md += ["", f"**{len(failed)} process run(s) failed**; their cells show —. See the JSON for stderr."]
    md += ["", f"Per-round load averages: " + ", ".join(f"r{r}: {meta['round_load'].get(str(r), '?')}" for r in rounds)]
    return "\n".join(md) + "\n"


# ---------------------------------------------------------------- main

def main():
    a = parse_args()
    for path in (os.path.join(a.model_dir, "yolov3-tiny.cfg"), os.path.join(a.model_dir, "yolov3-tiny.weights"), a.image):
        if not os.path.isfile(path):
            sys.exit(f"error: {path} is missing; run scripts/fetch-assets.sh")
    if "onnxruntime" in a.runtimes and not os.path.isfile(a.onnx):
        sys.exit(f"error: {a.onnx} is missing; run scripts/bench/darknet2onnx.py")
    if "candle" in a.runtimes and a.dry_run:
        a.candle_runner = a.candle_runner or "<cargo bench --no-run output>"
    elif "candle" in a.runtimes:
        a.candle_runner = a.candle_runner or build_candle()
        if not os.access(a.candle_runner, os.X_OK):
            sys.exit(f"error: candle runner {a.candle_runner} is not an executable file")

    versions = {}
    for mod in ("cv2", "onnxruntime", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "missing"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    meta = {"started": stamp, "machine": machine(), "load_start": load(), "versions": versions,
            "commit": git_head(), "candle_runner": a.candle_runner, "round_load": {},
            "args": {k: v for k, v in vars(a).items()}}

    # Jobs per round: every single configuration, plus (worker experiment) one 2x1-thread
    # pair per batch. Its 1x2-thread side is the same round's candle/2-thread single run.
    jobs = [("single", rt, t, b) for rt in a.runtimes for t in a.threads for b in a.batches]
    if a.workers:
        jobs += [("single", "candle", WORKER_CORES, b) for b in a.batches if WORKER_CORES not in a.threads]
        jobs += [("workers", "candle", 1, b) for b in a.batches]

    def job_est(j):
        return estimate_s(a, j[1], j[2], j[3], WORKER_CORES if j[0] == "workers" else 1)

    per_round = sum(job_est(j) for j in jobs)
    m = meta["machine"]
    print(f"machine: {m['cpu']}, nproc {m['nproc']}; load average {meta['load_start']}")
    print(f"plan: {a.rounds} rounds x {len(jobs)} processes ({a.warmup} warm-up + {a.runs} timed forwards each); "
          f"estimate ~{a.rounds * per_round / 60:.1f} min on a quiet machine "
          f"({per_round:.0f} s/round from README anchors; load stretches it)", flush=True)
    if a.dry_run:
        for j in jobs:
            n = f"{WORKER_CORES} x " if j[0] == "workers" else ""
            print(f"  {n}{' '.join(command(a, j[1], j[2], j[3]))}   (~{job_est(j):.0f} s)")
        return

    os.makedirs(a.out_dir, exist_ok=True)
    json_path = os.path.join(a.out_dir, f"detector-{stamp}.json")
    md_path = os.path.join(a.out_dir, f"detector-{stamp}.md")
    results = []
    t_start = time.monotonic()

    def save():
        with open(json_path + ".tmp", "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        os.replace(json_path + ".tmp", json_path)

    for rnd in range(1, a.rounds + 1):
        order = list(jobs)
        random.Random(a.seed * 1000 + rnd).shuffle(order)
        meta["round_load"][str(rnd)] = load()
        t_round = time.monotonic()
        for slot, (exp, rt, t, b) in enumerate(order):
            procs = WORKER_CORES if exp == "workers" else 1
            before = load()
            res, elapsed = run_procs(a, rt, t, b, procs)
            results.append({"experiment": exp, "round": rnd, "slot": slot, "runtime": rt, "threads": t,
                            "batch": b, "load_before": before, "elapsed_s": round(elapsed, 2), "procs": res})
            errs = [p["error"] for p in res if "error" in p]
            meds = ", ".join(fmt(med(p["wall_ms"])) for p in res if "error" not in p)
            what = f"{procs} x {rt}" if procs > 1 else rt
            print(f"  round {rnd} [{slot + 1:2d}/{len(order)}] {what:<13} threads {t} batch {b}: "
                  + (f"FAILED: {errs[0]}" if errs else f"median {meds} ms/forward") + f" ({elapsed:.1f} s)", flush=True)
            for p in res:
                if "error" in p and p.get("stderr_tail"):
                    print("    stderr: " + p["stderr_tail"].strip().replace("\n", "\n    "), file=sys.stderr)
        save()
        took = time.monotonic() - t_round
        left = a.rounds - rnd
        print(f"round {rnd}/{a.rounds} took {took:.0f} s" + (f"; about {left * took / 60:.1f} min left" if left else ""),
              flush=True)

    meta["load_end"] = load()
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    save()
    md = report(a, meta, results)
    with open(md_path, "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"machine: {m['cpu']}, nproc {m['nproc']}; load average at end {meta['load_end']} "
          f"(start {meta['load_start']}); took {meta['elapsed_s'] / 60:.1f} min")
    print(f"raw results: {json_path}\nreport: {md_path}")
    if any("error" in p for r in results for p in r["procs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
