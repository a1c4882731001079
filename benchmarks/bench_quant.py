"""Whole-network quantization time: CIFAR ResNet-18 (random weights) with RTN, GPTQ, OBC.

Timing only (random weights and random calibration images): what matters is how long
each method takes on the paper's architecture and where the time goes per layer
(Hessian collection vs the quantizer itself). Each method runs once (a whole network is
minutes, not microseconds); pytest-benchmark records the wall time and ``extra_info``
holds the per-layer table, which is also printed (run with ``-s``).

    python -m pytest benchmarks/bench_quant.py --benchmark-only -s \
        --benchmark-json=/tmp/bench_quant.json

Environment: ``PTQX_BENCH_CALIB`` calibration images (default 320: the fewest for which
the 4608-column Hessians of layer4 are full rank, 320 * 4 * 4 = 5120 rows, so OBC runs
undamped as the protocol), ``PTQX_BENCH_METHODS`` (default "rtn,gptq,obc"),
``PTQX_BENCH_BITS`` (default 2), ``PTQX_BENCH_THREADS`` (torch intra-op threads;
default torch's).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import ptqx
from ptqx.models import build_model

CALIB = int(os.environ.get("PTQX_BENCH_CALIB", "320"))
METHODS = os.environ.get("PTQX_BENCH_METHODS", "rtn,gptq,obc").split(",")
BITS = float(os.environ.get("PTQX_BENCH_BITS", "2"))
if os.environ.get("PTQX_BENCH_THREADS"):
    # On a shared, loaded machine one intra-op thread can beat two (threads wait on
    # each other in every parallel region); record which was used.
    torch.set_num_threads(int(os.environ["PTQX_BENCH_THREADS"]))


@pytest.fixture(scope="module")
def resnet18():
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=32, seed=0)
    # Random BN statistics so activations look like a trained network's (not identity BN).
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def calib():
    return torch.randn(CALIB, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("method", METHODS)
def test_resnet18_whole_network(benchmark, resnet18, calib, method):
    events: list[dict] = []
    result = {}

    def run():
        events.clear()
        t0 = time.perf_counter()
        result["model"] = ptqx.quantize(
            resnet18,
            method=method,
            bits=BITS,
            calib=None if method == "rtn" else calib,
            progress=events.append,
            batch_size=64,
        )
        result["seconds"] = time.perf_counter() - t0

    benchmark.group = f"resnet18-{BITS:g}bit"
    benchmark.pedantic(run, rounds=1, iterations=1)
    layers = [
        {k: e.get(k) for k in ("layer", "seconds", "hessian_seconds", "error")}
        for e in events
        if e.get("event") == "layer"
    ]
    benchmark.extra_info.update(
        {
            "method": method,
            "bits": BITS,
            "calib_images": CALIB,
            "threads": torch.get_num_threads(),
            "total_seconds": result["seconds"],
            "layers": layers,
        }
    )
    print(
        f"\n{method} {BITS:g}-bit ResNet-18, {CALIB} calibration images: {result['seconds']:.1f} s"
    )
    for e in layers:
        h = e["hessian_seconds"]
        print(
            f"  {e['layer']:<28} {e['seconds']:8.2f} s"
            + (f"  (Hessian {h:6.2f} s)" if h is not None else "")
        )
    assert len(layers) == 21  # 20 convs (stem, 16 in blocks, 3 shortcuts) + fc
