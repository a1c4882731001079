"""Packed low-bit linear vs fp32 F.linear on the same (dequantized) weights.

Run:  PTQX_REQUIRE_NATIVE=1 python -m pytest benchmarks/bench_lowbit.py -q \\
          --benchmark-group-by=param:shape,param:batch --benchmark-columns=min,median

Each group (one shape, one batch) holds, measured in the same run:
- ``fp32``: ``F.linear(x, W)`` with W the dequantized fp32 weight (the baseline);
- ``ptqx-2bit`` / ``ptqx-ternary`` / ``ptqx-4bit``: ``ptqx.ops.lowbit_linear``;
- ``ptqx-2bit-int8act`` / ``ptqx-ternary-int8act`` / ``ptqx-4bit-int8act``:
  ``ptqx.ops.lowbit_linear_int8act`` (opt-in, int8 per-token activations: a different
  model), batch 1 and 8 only (the small-batch regime it targets);
- ``dequant-then-linear``: the naive fake-quant path (unpack, dequantize, F.linear),
  i.e. ``ptqx.ops.reference.lowbit_linear``;
- ``torch-int8``: ``aten._weight_int8pack_mm`` (int8 per-channel weight-only);
- ``torch-int4``: ``aten._weight_int4pack_mm_for_cpu`` (int4 with per-group scale/zero,
  group 256, the coarsest it accepts: finer than our per-channel grid, so it does a bit
  more work per weight).

Cold weights, warm code: before every timed call, ``setup`` writes a 96 MiB buffer (3x
the 32 MiB L3), which evicts the weights from the caches, so each call reads its weights
from DRAM as a layer does in a real forward pass over a large model. The flush also
evicts the code and data of the Python interpreter, the dispatcher and the kernel, which
in a forward pass stay warm from the previous layer's call; left cold they added a fixed
60-120 us to every method (measured on the 2-bit 4096x4096 GEMV: 0.46-0.53 ms after the
flush alone, 0.40-0.43 ms when a tiny call follows it, 0.40-0.42 ms hot). So ``setup``
then runs the same method once on a tiny 16x256 layer: every method, fp32 included, is
timed with cold weights and warm code. ``PTQX_BENCH_COLD_CODE=1`` skips that warm-up
(everything cold), for comparison.
``test_lowbit_vs_fp32_paired`` times each ptqx variant and fp32 in the same rounds (one
fp32 call, then one ptqx call, each after its own flush and warm-up): the "never slower
than fp32" comparison rests on it, because fp32 and ptqx timed seconds apart drift apart
with the machine's clock (see its docstring).
Each benchmark's ``extra_info`` holds the weight bytes it reads (for GB/s).
Tests never assert on time; ratios are read from the report (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
import torch.nn.functional as F

import ptqx.ops as ops
from ptqx.ops import reference

# (R, C): CIFAR ResNet-18 conv layers flattened (256x2304, 512x4608) and LLM-sized
# projections (4096x4096, 11008x4096).
SHAPES = {
    "256x2304": (256, 2304),
    "512x4608": (512, 4608),
    "4096x4096": (4096, 4096),
    "11008x4096": (11008, 4096),
}
BATCHES = [1, 8, 64, 256]
# The paired comparison with fp32 also covers the batches in between: the GEMV's 4-token
# passes (2, 4, 12), the GEMV/GEMM crossover (12-16) and more than one M block (512).
PAIRED_BATCHES = [1, 2, 4, 8, 12, 16, 32, 64, 128, 256, 512]
# The layer each method runs once after every flush to warm its code (never timed).
WARM_CODE_SHAPE = (16, 256)
METHODS = [
    "fp32",
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

_FLUSH = torch.empty(96 * 1024 * 1024 // 4)


def _flush():
    _FLUSH.add_(1.0)


_COLD_CODE = os.environ.get("PTQX_BENCH_COLD_CODE") == "1"


_LAYERS: dict = {}


def _layer(rows: int, cols: int, levels: int):
    key = (rows, cols, levels)
    if key not in _LAYERS:
        g = torch.Generator().manual_seed(0)
        codes = torch.randint(0, levels, (rows, cols), generator=g, dtype=torch.uint8)
        scale = torch.rand(rows, generator=g) * 0.02 + 1e-3
        zero = torch.full((rows,), float(levels // 2))
        bits = 2 if levels <= 4 else 4
        layer = (codes, ops.pack_weights(codes, bits), scale, zero, bits)
        if (rows, cols) == WARM_CODE_SHAPE:
            return layer
        _LAYERS.clear()  # keep memory bounded: one layer at a time
        _LAYERS[key] = layer
    return _LAYERS[key]


LEVELS = {"ptqx-2bit": 4, "ptqx-ternary": 3, "ptqx-4bit": 16}


def _make(method: str, rows: int, cols: int, batch: int, levels: int | None = None):
    """Return (callable, weight bytes read per call) or raise pytest.skip.

    ``levels`` picks the layer's code range; by default the method's own (fp32 and the
    other baselines run on the 4-bit layer)."""
    x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(1))
    int8act = method.endswith("-int8act")
    base = method.removesuffix("-int8act")
    if levels is None:
        levels = LEVELS.get(base, 16)
    codes, packed, scale, zero, bits = _layer(rows, cols, levels)
    if int8act:
        return (lambda: ops.lowbit_linear_int8act(x, packed, scale, zero, bits)), packed.numel()
    if method.startswith("ptqx-"):
        return (lambda: ops.lowbit_linear(x, packed, scale, zero, bits)), packed.numel()
    if method == "fp32":
        w = reference.dequantize_packed(packed, scale, zero, bits, cols)
        return (lambda: F.linear(x, w)), w.numel() * 4
    if method == "dequant-then-linear":
        return (lambda: reference.lowbit_linear(x, packed, scale, zero, bits)), packed.numel()
    if method == "torch-int8":
        w8 = (codes.to(torch.int16) - 8).to(torch.int8)
        try:
            torch.ops.aten._weight_int8pack_mm(x[:1], w8, scale)
        except Exception as e:  # pragma: no cover - depends on the torch build
            pytest.skip(f"aten._weight_int8pack_mm does not run here: {e}")
        return (lambda: torch.ops.aten._weight_int8pack_mm(x, w8, scale)), w8.numel()
    if method == "torch-int4":
        group = 256
        if cols % group:
            pytest.skip(f"aten._weight_int4pack_mm_for_cpu needs C % {group} == 0")
        try:
            wp = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
            qsz = torch.stack(
                [scale.expand(cols // group, rows), torch.zeros(cols // group, rows)], -1
            )
            qsz = qsz.contiguous()
            torch.ops.aten._weight_int4pack_mm_for_cpu(x[:1], wp, group, qsz)
        except Exception as e:  # pragma: no cover - depends on the torch build
            pytest.skip(f"aten._weight_int4pack_mm_for_cpu does not run here: {e}")
        return (lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, wp, group, qsz)), wp.numel()
    raise AssertionError(method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lowbit_linear_cold(benchmark, shape, batch, method):
    if method == "dequant-then-linear" and batch > 8:
        pytest.skip("naive path timed at batch 1 and 8 only (it is 16-25x slower)")
    if method.endswith("-int8act") and batch > 8:
        pytest.skip("int8-activation variant targets small batches: timed at batch 1 and 8 only")
    rows, cols = SHAPES[shape]
    fn, nbytes = _make(method, rows, cols, batch)
    fn()  # warm up code paths and allocator
    warm_code, _ = _make(method, *WARM_CODE_SHAPE, batch)

    def setup():
        _flush()
        if not _COLD_CODE:
            warm_code()

    benchmark.extra_info.update(weight_bytes=nbytes, flop=2 * rows * cols * batch)
    # Minimum over rounds: enough of them that one noisy neighbour on the shared VM does
    # not decide a ratio (3 rounds once put a batch-256 GEMM at x0.64 that measured x1.0
    # on a rerun), except for torch's weight-only ops, 20-100x slower than fp32 at large
    # batches (seconds per call), timed for the record only.
    work = rows * cols * batch
    if work <= 4096 * 4096 * 8:
        rounds = 20
    elif method.startswith("torch-"):
        rounds = 3
    else:
        rounds = 10 if work <= 4096 * 4096 * 64 else 5
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("variant", ["ptqx-2bit", "ptqx-ternary", "ptqx-4bit"])
@pytest.mark.parametrize("batch", PAIRED_BATCHES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lowbit_vs_fp32_paired(benchmark, shape, batch, variant):
    """``lowbit_linear`` and fp32 ``F.linear`` on the same layer, timed in the same rounds.

    The per-method groups above time fp32 and each ptqx variant in separate stretches of
    the run, seconds apart. This machine's clock and its neighbours drift over seconds,
    so where the two sides are close (compute-bound GEMMs at 64-256 tokens, both near the
    FMA peak) the ratio of two such minima moved by +-10% between runs (256x2304 at batch
    256: x0.89-1.15). Here every round times one fp32 call and one ptqx call, each after
    its own flush and code warm-up, so both see the same machine state: pytest-benchmark
    times ptqx, and ``setup`` or ``teardown`` times fp32 with the same clock, before ptqx
    in even rounds and after it in odd ones. ``extra_info`` holds the fp32 minimum
    and median, the ratio of the two minima and the median of the per-round ratios
    (fp32 time / ptqx time: > 1 is faster than fp32), which
    ``benchmarks/lowbit_table.py`` turns into the paired table of RESULTS.md.
    """
    rows, cols = SHAPES[shape]
    levels = LEVELS[variant]
    fn, nbytes = _make(variant, rows, cols, batch)
    fp32, _ = _make("fp32", rows, cols, batch, levels=levels)
    warm_fn, _ = _make(variant, *WARM_CODE_SHAPE, batch)
    warm_fp32, _ = _make("fp32", *WARM_CODE_SHAPE, batch, levels=levels)
    fn()  # warm up code paths and allocator
    fp32()
    fp32_times: list[float] = []

    def time_fp32():
        _flush()
        warm_fp32()
        t0 = time.perf_counter()
        fp32()
        fp32_times.append(time.perf_counter() - t0)

    # fp32 runs before ptqx in even rounds (in setup) and after it in odd rounds (in
    # teardown): a fixed order put the later call at a 3-5% advantage in an A/B.
    round_index = 0

    def setup():
        if round_index % 2 == 0:
            time_fp32()
        _flush()
        warm_fn()

    def teardown():
        nonlocal round_index
        if round_index % 2 == 1:
            time_fp32()
        round_index += 1

    work = rows * cols * batch
    # An even count, so that each order runs equally often.
    rounds = 40 if work <= 4096 * 4096 * 8 else (16 if work <= 4096 * 4096 * 64 else 8)
    warmup_rounds = 1
    benchmark.extra_info.update(weight_bytes=nbytes, flop=2 * rows * cols * batch)
    benchmark.pedantic(
        fn, setup=setup, teardown=teardown, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds
    )
    if benchmark.stats is None:  # --benchmark-disable: fn ran once, untimed (a smoke test)
        return
    ptqx_times = list(benchmark.stats.stats.data)
    fp32_times = fp32_times[warmup_rounds:]
    assert len(fp32_times) == len(ptqx_times) == rounds
    benchmark.extra_info.update(
        fp32_min=min(fp32_times),
        fp32_median=statistics.median(fp32_times),
        ratio_of_min=min(fp32_times) / min(ptqx_times),
        ratio_median=statistics.median(f / p for f, p in zip(fp32_times, ptqx_times, strict=True)),
    )
