#!/usr/bin/env bash
# attn_bench.sh - the fused 16-bit attention kernel at SD1.5's shapes next
# to PyTorch's scaled_dot_product_attention in the same run, on the GPU
# machine.  Builds tools/gpu/attn_bench.cu once per variant (compile-time
# settings of kernels/cuda/flash16.cu, given as NAME=NVCC_FLAGS arguments;
# "default" is always built), runs each, times torch SDPA with q, k and v in
# the same strided layouts, and writes attn_bench.md (a table: microseconds
# a call; "(differs)" where a variant's sum of |o| is off SDPA's on the
# same inputs by more than 1e-3) and attn_bench.json to $OUT.
# WEFT_ATTN_NCU=1 also runs Nsight Compute on the default's d 40 and d 80
# self-attention kernels (ncu_d48.txt, ncu_d80.txt, with the warps' stall
# reasons) and writes the default build's SASS (sass.txt).
#
#   OUT=dir tools/gpu/attn_bench.sh ['nosplit=-DFA_SPLIT=0' ...]
#
# About 60 s for a few variants (they compile in parallel, ~35 s each),
# 100 s with WEFT_ATTN_NCU=1; give it 150.
set -uf # no globbing: the variants' flags hold ( ) ?
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-attn-bench}
mkdir -p "$OUT"
tmp=$(mktemp -d /tmp/attn-bench.XXXXXX)
variants=("default=" "$@")
nvflags="-std=c++17 -O2 -gencode=arch=compute_90,code=sm_90 -I$root -I$root/runtime/include -I$root/kernels/cuda -DWEFT_HAVE_CUDNN=0 -DFA_HALF_ONLY"
for v in "${variants[@]}"; do
  name=${v%%=*} flags=${v#*=}
  # shellcheck disable=SC2086
  nvcc $nvflags $flags "$root/tools/gpu/attn_bench.cu" \
    -o "$tmp/$name" >"$tmp/$name.log" 2>&1 &
done
wait
for v in "${variants[@]}"; do
  name=${v%%=*}
  if [ -x "$tmp/$name" ]; then
    "$tmp/$name" >"$tmp/$name.tsv" 2>>"$tmp/$name.log" || true
  fi
  cp "$tmp/$name.log" "$OUT/build_$name.log" 2>/dev/null
done

if [ "${WEFT_ATTN_NCU:-0}" = 1 ] && [ -x "$tmp/default" ]; then
  for dp in 48 80; do
    timeout 120 ncu --clock-control none --kernel-name-base demangled \
      -k "regex:fa_kernel<.int.$dp," -s 2 -c 1 --section SpeedOfLight \
      --section Occupancy --section SchedulerStats --section WarpStateStats \
      --section ComputeWorkloadAnalysis --section InstructionStats \
      --section MemoryWorkloadAnalysis \
      --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
      "$tmp/default" >"$OUT/ncu_d$dp.txt" 2>&1
  done
  cuobjdump -sass "$tmp/default" >"$OUT/sass.txt" 2>&1
fi

python3 - "$tmp" "$OUT" "${variants[@]}" <<'EOF'
import json, sys, torch
import torch.nn.functional as F
tmp, out, variants = sys.argv[1], sys.argv[2], [v.split("=", 1)[0] for v in sys.argv[3:]]
B, H = 2, 8
shapes = [("64x64 self, 4096 x 4096, d 40", 4096, 4096, 40, True),
          ("64x64 cross, 4096 x 77, d 40", 4096, 77, 40, False),
          ("32x32 self, 1024 x 1024, d 80", 1024, 1024, 80, True),
          ("32x32 cross, 1024 x 77, d 80", 1024, 77, 80, False),
          ("16x16 self, 256 x 256, d 160", 256, 256, 160, True),
          ("16x16 cross, 256 x 77, d 160", 256, 77, 160, False),
          ("8x8 self, 64 x 64, d 160", 64, 64, 160, True),
          ("8x8 cross, 64 x 77, d 160", 64, 77, 160, False)]
def fill(n, seed):  # attn_bench.cu's fill(): the same fp16 values
    i = torch.arange(n, device="cuda", dtype=torch.int64)
    h = ((i * 2654435761) & 0xffffffff) ^ seed
    h ^= h >> 15
    h = ((h & 0xffff) * 2246822519 + (((h >> 16) * 2246822519) & 0xffff) * 65536) & 0xffffffff
    h ^= h >> 13
    return ((h & 0xffff).float() / 32768.0 - 1.0).half()
def heads(x, lo, L, d):  # [B, L, n] columns lo.. as [B, H, L, d] views
    return x[:, :, lo:lo + H * d].view(B, L, H, d).transpose(1, 2)
rows = {}
for name, lq, lk, d, self_ in shapes:
    C = H * d
    if self_:
        qkv = fill(B * lq * 3 * C, 1).view(B, lq, 3 * C)
        q, k, v = heads(qkv, 0, lq, d), heads(qkv, C, lq, d), heads(qkv, 2 * C, lq, d)
    else:
        qx = fill(B * lq * C, 1).view(B, lq, C)
        kv = fill(B * lk * 2 * C, 2).view(B, lk, 2 * C)
        q, k, v = heads(qx, 0, lq, d), heads(kv, 0, lk, d), heads(kv, C, lk, d)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for rep in range(8):
        e0.record()
        for _ in range(20):
            F.scaled_dot_product_attention(q, k, v)
        e1.record()
        torch.cuda.synchronize()
        if rep:
            ts.append(e0.elapsed_time(e1) * 1000 / 20)
    ts.sort()
    us = ts[len(ts) // 2]
    rows[name] = {"torch_sdpa_us": us, "tflops_torch": 4 * B * H * lq * lk * d / us / 1e6,
                  "torch_sum": F.scaled_dot_product_attention(q, k, v).double().abs().sum().item()}
for v in variants:
    try:
        for line in open(f"{tmp}/{v}.tsv"):
            n, us, tf, total = line.rstrip("\n").split("\t")
            rows[n][f"weft_{v}_us"] = float(us)
            rows[n][f"weft_{v}_sum"] = float(total)
    except OSError:
        pass
cols = [f"weft_{v}_us" for v in variants] + ["torch_sdpa_us"]
md = ["| shape (batch 2, 8 heads, fp16) | " + " | ".join(
    c.replace("_us", " (us)").replace("_", " ") for c in cols) + " |",
    "|---|" + "---|" * len(cols)]
def cell(r, c):  # a variant whose sum of |o| is off SDPA's by 1e-3
    if c not in r:
        return "-"
    s, s0 = r.get(c.replace("_us", "_sum")), r.get("torch_sum")
    bad = s is not None and s0 and abs(s - s0) > 1e-3 * abs(s0)
    return f"{r[c]:.1f}" + (" (differs)" if bad else "")
for name, *_ in shapes:
    md.append(f"| {name} | " + " | ".join(cell(rows[name], c) for c in cols) + " |")
md.append("")
md.append(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; "
          "median of 7 runs of 20 calls each.")
open(f"{out}/attn_bench.md", "w").write("\n".join(md) + "\n")
json.dump(rows, open(f"{out}/attn_bench.json", "w"), indent=1)
print("\n".join(md))
EOF
