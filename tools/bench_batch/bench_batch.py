#!/usr/bin/env python3
"""bench_batch.py - images per second of `weft batch` on the tiny SD model
(tests/fixtures/sd15_tiny) with --pipeline 1 (one job after another) and
larger windows: prints a table and writes the numbers as JSON.

    python3 tools/bench_batch/bench_batch.py [--weft build/cli/weft]
        [--jobs 12] [--pipelines 1,2] [--threads 2] [--steps 4]
        [--size 64] [--reps 3] [--json bench_batch.json] [-- WEFT_ARGS...]

Images/s counts from the first job's start to the end of the batch (weft's
own --events=json clock), so loading the plugins and the graph is left out;
the model load is in (the first job pays it in every mode). The median of
--reps runs is reported, with the spread.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_once(args, pipeline, outdir):
    cmd = [args.weft, "batch", os.path.join(ROOT, "graphs", "txt2img.yaml"),
           "--set", "ckpt=" + os.path.join(ROOT, "tests", "fixtures",
                                          "sd15_tiny", "diffusers"),
           "--set", "width=%d" % args.size, "--set", "height=%d" % args.size,
           "--set", "steps=%d" % args.steps,
           "--sweep", "seed=1..%d" % args.jobs, "--output", "{seed}.png",
           "--output-dir", outdir, "--threads", str(args.threads),
           "--pipeline", str(pipeline), "--events=json"] + args.extra
    env = dict(os.environ)
    for v in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "WEFT_SHARD"):
        env.pop(v, None)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit("bench_batch: %s failed (%d):\n%s" % (" ".join(cmd),
                                                        p.returncode, p.stderr))
    first = done_t = None
    done = 0
    for line in p.stdout.splitlines():
        ev = json.loads(line)
        if ev["event"] == "job_start" and first is None:
            first = ev["t"]
        elif ev["event"] == "batch_done":
            done_t = ev["t"]
            done = ev["done"]
    if done != args.jobs:
        sys.exit("bench_batch: %d of %d jobs done" % (done, args.jobs))
    return done / (done_t - first), done_t - first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weft", default=os.path.join(ROOT, "build", "cli", "weft"))
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--pipelines", default="1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default="bench_batch.json")
    ap.add_argument("extra", nargs="*",
                    help="more weft batch arguments (after --), e.g. "
                         "--plugin-dir DIR")
    args = ap.parse_args()
    if not os.path.exists(args.weft):
        sys.exit("bench_batch: %s not found (--weft PATH)" % args.weft)
    pipelines = [int(x) for x in args.pipelines.split(",")]
    rows = []
    print("%-9s %10s %10s %10s %9s" % ("pipeline", "img/s", "min", "max",
                                        "seconds"))
    for pl in pipelines:
        rates, secs = [], []
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as d:
                r, s = run_once(args, pl, d)
            rates.append(r)
            secs.append(s)
        med = statistics.median(rates)
        rows.append({"pipeline": pl, "images_per_s": med,
                     "images_per_s_min": min(rates),
                     "images_per_s_max": max(rates),
                     "seconds_median": statistics.median(secs),
                     "reps": rates})
        print("%-9d %10.2f %10.2f %10.2f %9.2f" % (pl, med, min(rates),
                                                  max(rates),
                                                  statistics.median(secs)))
    base = rows[0]["images_per_s"]
    for row in rows[1:]:
        print("pipeline %d / pipeline %d: %.2fx" % (row["pipeline"],
                                                     rows[0]["pipeline"],
                                                     row["images_per_s"] / base))
    out = {"bench": "batch", "model": "tests/fixtures/sd15_tiny",
           "load_avg_1min": os.getloadavg()[0],
           "jobs": args.jobs, "threads": args.threads, "steps": args.steps,
           "size": args.size, "cpus": os.cpu_count(),
           "machine": platform.machine(), "results": rows}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
