"""OBC greedy row quantization: native kernel vs the reference vs the official-style code.

Shapes are CIFAR ResNet-18 layer shapes ([out, in*3*3]). The official-style baseline
(``_obc_official_style.py``, batched full-Hinv downdate as IST-DASLab/OBC runs it) costs
the same for every step of every row, so it is timed on a few rows and a few steps and
scaled by (R / rows) * (C / steps); the native kernel is timed on whole rows (a subset
for the large layers; rows are independent) and scaled by R / rows. Both scalings are
recorded in ``extra_info`` and the printed summary.

    python -m pytest benchmarks/bench_obc.py --benchmark-only -q   # pytest-benchmark
    python benchmarks/bench_obc.py                                  # summary table
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

import ptqx.ops as ops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _obc_official_style import obc_official_style  # noqa: E402

# (rows, cols, native rows timed, official rows timed, official steps timed)
SHAPES = {
    "64x576": (64, 576, 64, 32, 96),
    "128x1152": (128, 1152, 128, 32, 48),
    "256x2304": (256, 2304, 32, 8, 16),
    "512x4608": (512, 4608, 8, 2, 8),
}


def problem(rows: int, cols: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5 + torch.eye(
        cols, dtype=torch.float64
    )
    x = a @ torch.randn(cols, 2 * cols, generator=g, dtype=torch.float64)
    h = 2 * x @ x.T / (2 * cols)
    h += 0.01 * torch.diagonal(h).mean() * torch.eye(cols, dtype=torch.float64)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    hinv = ((hinv + hinv.T) / 2).to(dtype)
    w = (torch.randn(rows, cols, generator=g) * 0.05).to(dtype)
    scale, zero = ops.grid_search(w.float(), 3, steps=1)
    return w, hinv, scale, zero, 3


def native_time(name: str, dtype=torch.float32) -> tuple[float, float]:
    rows, cols, nrows, _, _ = SHAPES[name]
    w, hinv, scale, zero, maxq = problem(nrows, cols, dtype)
    t = time.perf_counter()
    ops.obc_quantize_rows(w, hinv, scale, zero, maxq)
    t = time.perf_counter() - t
    return t, t * rows / nrows


def official_time(name: str) -> tuple[float, float]:
    rows, cols, _, orows, osteps = SHAPES[name]
    w, hinv, scale, zero, maxq = problem(orows, cols)
    t = time.perf_counter()
    obc_official_style(w, hinv, scale, zero, maxq, max_steps=osteps)
    t = time.perf_counter() - t
    return t, t * (rows / orows) * (cols / osteps)


def gflops(rows: int, cols: int, seconds: float) -> float:
    """Useful work of the folded algorithm: ~C^3/6 FMAs (C^3/3 flops) per row."""
    return rows * cols**3 / 3 / seconds / 1e9


@pytest.mark.parametrize("name", list(SHAPES))
def test_native(benchmark, name):
    benchmark.group = f"obc {name}"
    rows, cols, nrows, _, _ = SHAPES[name]
    w, hinv, scale, zero, maxq = problem(nrows, cols)
    benchmark.extra_info.update(rows_timed=nrows, scale_to_layer=rows / nrows)
    benchmark.pedantic(ops.obc_quantize_rows, (w, hinv, scale, zero, maxq), rounds=1, iterations=1)


@pytest.mark.parametrize("name", list(SHAPES))
def test_official_style(benchmark, name):
    benchmark.group = f"obc {name}"
    rows, cols, _, orows, osteps = SHAPES[name]
    w, hinv, scale, zero, maxq = problem(orows, cols)
    benchmark.extra_info.update(
        rows_timed=orows, steps_timed=osteps, scale_to_layer=rows / orows * cols / osteps
    )
    benchmark.pedantic(
        obc_official_style,
        (w, hinv, scale, zero, maxq),
        {"max_steps": osteps},
        rounds=1,
        iterations=1,
    )


def test_reference(benchmark):
    """The reference (row at a time, full downdate) on 2 rows x 96 steps of 64x576."""
    benchmark.group = "obc 64x576"
    w, hinv, scale, zero, maxq = problem(2, 576)
    from ptqx.ops import reference

    def run():
        return reference.obc_quantize_rows(w, hinv, scale, zero, maxq)

    benchmark.extra_info.update(rows_timed=2, note="full rows; scale x32 for the layer")
    benchmark.pedantic(run, rounds=1, iterations=1)


if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()}")
    print(
        f"{'shape':>9} | {'native f32 (layer)':>18} {'GFLOP/s':>7} | {'native f64':>10} | {'official-style':>14} | ratio f32"
    )
    for name in sys.argv[1:] or SHAPES:
        rows, cols = SHAPES[name][:2]
        _, n32 = native_time(name)
        _, n64 = native_time(name, torch.float64)
        _, off = official_time(name)
        print(
            f"{name:>9} | {n32:>17.2f}s {gflops(rows, cols, n32):>7.1f} | {n64:>9.2f}s | "
            f"{off:>13.0f}s | {off / n32:>7.0f}x",
            flush=True,
        )
