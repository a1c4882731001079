"""Where the packed GEMM overtakes the register GEMV, for re-tuning on another CPU.

The crossover is a property of the CPU (vector ports, cache sizes), so it is measured,
not derived. Run each path forced on in its own process (the threshold is read once):

    PTQX_LOWBIT_GEMM_MIN_TOKENS=1000 python benchmarks/lowbit_crossover.py   # GEMV always
    PTQX_LOWBIT_GEMM_MIN_TOKENS=1    python benchmarks/lowbit_crossover.py   # GEMM always

and set ``PTQX_LOWBIT_GEMM_MIN_TOKENS`` to the first token count where the second run's
times drop below the first's. Hot weights, minimum of 15 calls, milliseconds.
"""

from __future__ import annotations

import os
import time

import torch

from ptqx import ops

SHAPES = [(4096, 4096), (512, 4608)]
TOKENS = [4, 8, 9, 12, 16, 24, 32]


def _best_ms(*args, calls: int = 15) -> float:
    """Minimum time of ``ops.lowbit_linear(*args)`` over ``calls`` hot calls, in ms."""
    ops.lowbit_linear(*args)
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        ops.lowbit_linear(*args)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    threshold = os.environ.get("PTQX_LOWBIT_GEMM_MIN_TOKENS", "default")
    print(f"PTQX_LOWBIT_GEMM_MIN_TOKENS={threshold}; ms per call at tokens {TOKENS}")
    g = torch.Generator().manual_seed(0)
    for rows, cols in SHAPES:
        for bits in (2, 4):
            codes = torch.randint(0, 2**bits, (rows, cols), generator=g, dtype=torch.uint8)
            packed = ops.pack_weights(codes, bits)
            scale = torch.rand(rows, generator=g) * 0.01 + 0.01
            zero = torch.full((rows,), float(2 ** (bits - 1)))
            times = []
            for nt in TOKENS:
                x = torch.randn(nt, cols, generator=g)
                times.append(_best_ms(x, packed, scale, zero, bits))
            print(f"{rows}x{cols} {bits}-bit: " + "  ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main()
