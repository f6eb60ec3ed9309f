#!/usr/bin/env bash
# fresh_runs.sh - `weft run graphs/txt2img.yaml` in fresh processes with
# nothing else on the machine (no nvidia-smi polling, which the benchmark
# does and which may hold the driver while a process ends): each run's
# wall time, its first event, and its end after the last line it printed,
# for the environments given (one run set per argument, `-` for none).
# Run after bench_sd15.sh in the same call (its build and its SD1.5
# folder).  Writes $OUT/fresh_runs.md.
#
#   tools/gpu/fresh_runs.sh [ENV_ASSIGNMENTS|-]...
#   e.g. tools/gpu/fresh_runs.sh - WEFT_EXIT_FREE=1
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-fresh-runs}
mkdir -p "$OUT"
build=${WEFT_BENCH_BUILD:-/tmp/weft-bench-build}
work=${WEFT_BENCH_WORK:-/tmp/weft-bench-work}
runs=${FRESH_RUNS:-3}
# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_deps "$root" /tmp/weft-bench-deps >/dev/null 2>&1 || exit 1
export LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ $# -gt 0 ] || set -- -
{
  echo "| environment | wall (s) | first event (s) | end after the last line (s) |"
  echo "|---|---|---|---|"
} >"$OUT/fresh_runs.md"
for envs in "$@"; do
  [ "$envs" = - ] && envs=""
  # shellcheck disable=SC2086
  python3 - "$build/cli/weft" "$root/graphs/txt2img.yaml" "$work" "$runs" \
    $envs >>"$OUT/fresh_runs.md" <<'PY'
import os, subprocess, sys, tempfile, time
weft, graph, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = dict(os.environ)
for a in sys.argv[5:]:
    k, v = a.split("=", 1)
    env[k] = v
odir = tempfile.mkdtemp()
cmd = [weft, "run", graph, "--device", "cuda", "--output-dir", odir, "--events", "json",
       "--set", "ckpt=" + os.path.join(work, "sd15_random"), "--set", "steps=20",
       "--set", "width=512", "--set", "height=512"]
walls, firsts, ends = [], [], []
for _ in range(runs):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    stamps = [time.perf_counter() - t0 for _ in p.stdout]
    p.wait()
    wall = time.perf_counter() - t0
    if p.returncode != 0 or not stamps:
        print(f"| {' '.join(sys.argv[5:]) or '(none)'} | exit {p.returncode} | | |")
        sys.exit(0)
    walls.append(wall), firsts.append(stamps[0]), ends.append(wall - stamps[-1])
f = lambda xs: " ".join(f"{x:.3f}" for x in xs)
print(f"| {' '.join(sys.argv[5:]) or '(none)'} | {f(walls)} | {f(firsts)} | {f(ends)} |")
PY
done
cat "$OUT/fresh_runs.md"
