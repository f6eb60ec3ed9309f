#!/usr/bin/env python3
"""gemm_study.py - reads what kernels/cuda/gemm_lt.c's study mode wrote
(WEFT_CUDA_LT_STUDY=file: every algorithm cuBLASLt's heuristic offers for
each 16-bit product, timed on scratch operands) and prints, per problem,
the heuristic's first algorithm against the fastest, then the rows of
gemm_lt.c's tuned_h200 table for the problems where the fastest beats the
first by --min-gain or more.

    python3 tools/gpu/gemm_study.py lt_study.txt [--min-gain 0.05]

The study appends a line per algorithm per problem and process; a problem
seen by several processes keeps each configuration's least time.
"""
import argparse
import sys


def parse(path):
    probs = {}
    for line in open(path):
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].startswith("mm "):
            continue
        head = parts[0].split()[1:]
        cfg = parts[1].split()
        us = float(parts[2])
        # ta tb c16 epi m n k batch beta
        key = tuple(int(v) for v in head[:8]) + (float(head[8]),)
        rank = int(cfg[0])
        conf = tuple(int(v) for v in cfg[1:10])  # algo .. cluster
        ws = int(cfg[10])
        p = probs.setdefault(key, {})
        old = p.get(conf)
        if us > 0 and (old is None or us < old[1]):
            p[conf] = (rank if old is None else min(rank, old[0]), us, ws)
        elif old is None:
            p[conf] = (rank, -1.0, ws)
    return probs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("--min-gain", type=float, default=0.05)
    a = ap.parse_args()
    probs = parse(a.study)
    if not probs:
        print("no study lines in", a.study)
        return 1
    rows, total0, total1 = [], 0.0, 0.0
    print("| ta tb c16 epi | m x n x k, batch | beta | algos | first us "
          "| best us | best/first | best (algo tile stages splitk red swz "
          "custom inner cluster) |")
    print("|---|---|---|---|---|---|---|---|")
    for key, confs in sorted(probs.items(), key=lambda kv: kv[0][4:8]):
        timed = [(v[1], c, v[0]) for c, v in confs.items() if v[1] > 0]
        first = [v[1] for c, v in confs.items() if v[0] == 0 and v[1] > 0]
        if not timed or not first:
            continue
        best = min(timed)
        f = first[0]
        total0 += f
        total1 += best[0]
        ta, tb, c16, epi, m, n, k, batch, beta = key
        print(f"| {ta} {tb} {c16} {epi} | {m}x{n}x{k}, {batch} | {beta:g} "
              f"| {len(confs)} | {f:.1f} | {best[0]:.1f} "
              f"| {best[0] / f:.2f} | {' '.join(map(str, best[1]))} |")
        if best[0] <= f * (1 - a.min_gain):
            al, tile, stages, splitk, red, swz, custom, inner, cl = best[1]
            rows.append(f"    {{{ta}, {tb}, {c16}, {epi}, {m}, {n}, {k}, "
                        f"{batch}, {al}, {tile}, {stages}, {red}, {swz}, "
                        f"{custom}, {splitk}, {inner}, {cl}}}, "
                        f"/* {f:.1f} -> {best[0]:.1f} us */")
    print(f"\nsum over the problems (one call each): first {total0:.1f} us, "
          f"best {total1:.1f} us")
    print("\ntuned_h200 rows (ta, tb, c16, epilogue, m, n, k, batch, algo, "
          "tile, stages, red, swizzle, custom, splitk, inner, cluster):")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
