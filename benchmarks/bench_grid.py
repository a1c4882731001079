"""Grid search (OBC's 80-candidate MSE search) and fake quant: native vs reference.

    python -m pytest benchmarks/bench_grid.py --benchmark-only --benchmark-group-by=group

Shapes are the CIFAR ResNet-18 conv layers (out channels x in*3*3). The reference is the
pure-PyTorch ``ptqx.ops.reference`` (already vectorised over rows); it is timed once per
shape at the two largest shapes because it takes tens of seconds there.
"""

from __future__ import annotations

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

RESNET18_LAYERS = {
    "64x576": (64, 576),
    "128x1152": (128, 1152),
    "256x2304": (256, 2304),
    "512x4608": (512, 4608),
}


def _w(shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.05


@pytest.mark.parametrize("name", list(RESNET18_LAYERS))
@pytest.mark.parametrize("impl", ["native", "reference"])
def test_grid_search(benchmark, name, impl):
    shape = RESNET18_LAYERS[name]
    w = _w(shape)
    benchmark.group = f"grid_search 4-bit MSE {name}"
    if impl == "native":
        fn = lambda: ops.grid_search(w, 15)  # noqa: E731
        rounds = 5 if shape[0] <= 128 else 2
    else:
        fn = lambda: reference.grid_search(w, 15, False, True, 2.4, 100, 80)  # noqa: E731
        rounds = 2 if shape[0] <= 128 else 1
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    if (
        benchmark.stats is not None
    ):  # None under --benchmark-disable: one untimed call, a smoke test
        # element-candidates evaluated per second (rows x cols x 80)
        benchmark.extra_info["Gelem_cand/s"] = round(
            shape[0] * shape[1] * 80 / benchmark.stats["mean"] / 1e9, 3
        )


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_fake_quant(benchmark, impl):
    w = _w((512, 4608))
    scale, zero = ops.grid_search(w, 15, steps=1)
    benchmark.group = "fake_quant 512x4608"
    if impl == "native":
        benchmark(lambda: ops.fake_quant(w, scale, zero, 15))
    else:
        benchmark(lambda: reference.fake_quant(w, scale, zero, 15))
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GB/s"] = round(2 * w.numel() * 4 / benchmark.stats["mean"] / 1e9, 2)
