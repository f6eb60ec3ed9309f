#!/usr/bin/env bash
# kernel_times.sh - every kernel of one UNet step (batch 2, 64x64 latent,
# fp16) timed alone by Nsight Compute (gpu__time_duration, clocks and
# caches left as they are), grouped by kernel: where the step's GPU time
# goes without the per-op profile's events between ops.  Runs after
# bench_sd15.sh in the same device call, on its build and model folder
# (check_and_profile.sh leaves both); sd_forward's txt2img of 2 steps under
# ncu, the kernels of its second sampling's first step reported.  About a minute.
#
#   tools/gpu/kernel_times.sh      (OUT: kernel_times.md, kernel_times.csv)
#
# Environment: KT_BUILD (default /tmp/weft-bench-build), KT_MODEL
# (/tmp/weft-bench-work/sd15_random), KT_COUNT (kernels profiled, from the
# first: 5000), and any WEFT_* switch for the run.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/build-kernel-times}
mkdir -p "$out"
build=${KT_BUILD:-/tmp/weft-bench-build}
model=${KT_MODEL:-/tmp/weft-bench-work/sd15_random}
say() { echo "[kernel_times] $*"; }
# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_deps "$root" /tmp/weft-bench-deps >/dev/null || exit 1
export LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { say "no ncu"; exit 1; }
WEFT_PRECISION=fp16 timeout 300 "$ncu" --clock-control none \
  --cache-control none --metrics gpu__time_duration.sum --csv \
  --print-units base --launch-count "${KT_COUNT:-5000}" \
  --log-file "$out/kernel_times.csv" \
  "$build/tools/gpu/sd_forward" --device cuda --model "$model" \
  --bench "$out/kt_bench.json" --latent 64 --steps 2 --reps 1 \
  --txt2img-reps 1 >"$out/kt_run.log" 2>&1
say "ncu: exit $?"
python3 - "$out/kernel_times.csv" "$out/kernel_times.md" <<'EOF'
import csv, re, sys
rows = []
with open(sys.argv[1], newline="") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "ns")
    ns = v * {"ns": 1, "nsecond": 1, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6}.get(unit, 1)
    rows.append((r["Kernel Name"], r.get("Grid Size", ""), r.get("Block Size", ""), ns))
# a UNet call starts with the timestep embedding's kernel
starts = [i for i, r in enumerate(rows) if "timestep_kernel" in r[0]]
out = open(sys.argv[2], "w")
out.write(f"{len(rows)} kernels profiled; UNet calls start at {starts[:8]}\n\n")
if len(starts) < 2:
    out.write("fewer than two UNet calls found\n")
    sys.exit(0)
# the second sampling's first step (its graph's launch, with the
# sampler's own kernels after the UNet): the 3rd start, the first
# sampling having had 2 steps; else the last complete one
k = 2 if len(starts) >= 4 else len(starts) - 2
a, b = starts[k], starts[k + 1]
step = rows[a:b]
tot = sum(r[3] for r in step)
out.write(f"one UNet step (kernels {a}..{b - 1}): {len(step)} kernels, {tot / 1e3:.1f} us of kernel time\n\n")
def short(n):
    n = re.sub(r"\(.*$", "", n)
    return n[:90]
agg = {}
for n, g, bl, ns in step:
    key = short(n)
    c, t, mx = agg.get(key, (0, 0.0, 0.0))
    agg[key] = (c + 1, t + ns, max(mx, ns))
out.write("| kernel | calls | us | % | us/call | max us |\n|---|---|---|---|---|---|\n")
for key, (c, t, mx) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    out.write(f"| `{key}` | {c} | {t / 1e3:.1f} | {100 * t / tot:.1f} | {t / c / 1e3:.2f} | {mx / 1e3:.2f} |\n")
out.write("\n## every kernel of the step, in order\n\n| # | kernel | grid | block | us |\n|---|---|---|---|---|\n")
for i, (n, g, bl, ns) in enumerate(step):
    out.write(f"| {i} | `{short(n)}` | {g} | {bl} | {ns / 1e3:.2f} |\n")
EOF
say "summary: exit $?"
head -60 "$out/kernel_times.md" 2>/dev/null
