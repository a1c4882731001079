"""Turn a pytest-benchmark JSON of bench_lowbit.py into the RESULTS.md table.

Usage: python benchmarks/lowbit_table.py results.json [min|median]
Speed-up = fp32 time / method time in the same group (> 1: faster than fp32);
GB/s = weight bytes read per call / time. A second table covers the paired test
(fp32 and ptqx timed in the same rounds): ratio of the two minima / median of the
per-round ratios.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str, stat: str = "min") -> None:
    data = json.load(open(path))
    groups: dict = defaultdict(dict)
    paired: dict = defaultdict(dict)
    for b in data["benchmarks"]:
        p = b["params"]
        if "variant" in p:
            paired[(p["shape"], p["batch"])][p["variant"]] = b["extra_info"]
            continue
        groups[(p["shape"], p["batch"])][p["method"]] = (
            b["stats"][stat],
            b["extra_info"]["weight_bytes"],
        )
    if groups:
        print_groups(groups)
    if paired:
        print_paired(paired)


def print_groups(groups: dict) -> None:
    methods = [
        "ptqx-2bit",
        "ptqx-ternary",
        "ptqx-4bit",
        "ptqx-2bit-int8act",
        "ptqx-ternary-int8act",
        "ptqx-4bit-int8act",
        "dequant-then-linear",
        "torch-int8",
        "torch-int4",
    ]
    print("| shape | batch | fp32 ms (GB/s) | " + " | ".join(methods) + " |")
    print("|" + "---|" * (3 + len(methods)))
    for (shape, batch), row in groups.items():
        if "fp32" not in row:
            continue
        tf, bf = row["fp32"]
        cells = []
        for m in methods:
            if m in row:
                t, nb = row[m]
                cells.append(f"x{tf / t:.2f} ({nb / t / 1e9:.1f} GB/s)")
            else:
                cells.append("-")
        print(
            f"| {shape} | {batch} | {tf * 1e3:.2f} ({bf / tf / 1e9:.1f}) | "
            + " | ".join(cells)
            + " |"
        )


def print_paired(paired: dict) -> None:
    variants = ["ptqx-2bit", "ptqx-ternary", "ptqx-4bit"]
    print()
    print("Paired rounds: ratio of minima / median of per-round ratios (fp32 / ptqx)")
    print()
    print("| shape | batch | fp32 ms (min / median) | " + " | ".join(variants) + " |")
    print("|" + "---|" * (3 + len(variants)))
    for (shape, batch), row in paired.items():
        info = row.get("ptqx-2bit", next(iter(row.values())))  # fp32 on the 2-bit layer
        cells = [
            f"x{row[v]['ratio_of_min']:.2f} / x{row[v]['ratio_median']:.2f}" if v in row else "-"
            for v in variants
        ]
        fp32 = f"{info['fp32_min'] * 1e3:.2f} / {info['fp32_median'] * 1e3:.2f}"
        print(f"| {shape} | {batch} | {fp32} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
