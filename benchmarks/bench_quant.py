"""Whole-network quantization time: CIFAR ResNet-18 (random weights) with RTN, GPTQ, OBC.

Timing only (random weights and random calibration images): what matters is how long
each method takes on the paper's architecture and where the time goes per layer
(Hessian collection vs the quantizer itself). Each method runs once (a whole network is
minutes, not microseconds); pytest-benchmark records the wall time and ``extra_info``
holds the per-layer table, which is also printed (run with ``-s``).

    python -m pytest benchmarks/bench_quant.py --benchmark-only -s \
        --benchmark-json=/tmp/bench_quant.json

Environment: ``PTQX_BENCH_CALIB`` calibration images (default 320: enough rows for the
4608-column conv Hessians of layer4, 320 * 4 * 4 = 5120, but fewer than the 512 inputs
of fc, so OBC runs with ``damp=0.01`` here, like GPTQ's default), ``PTQX_BENCH_METHODS`` (default "rtn,gptq,obc"),
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

    def report(event: dict) -> None:
        events.append(event)
        if event.get("event") == "layer":  # live per-layer line (run with -s)
            h = event.get("hessian_seconds")
            extra = f"  (Hessian {h:6.2f} s)" if h is not None else ""
            print(f"  {event['layer']:<28} {event['seconds']:8.2f} s{extra}", flush=True)

    def run():
        print(f"\n{method}:", flush=True)
        events.clear()
        t0 = time.perf_counter()
        result["model"] = ptqx.quantize(
            resnet18,
            method=method,
            bits=BITS,
            calib=None if method == "rtn" else calib,
            progress=report,
            **({"damp": 0.01} if method == "obc" else {}),
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
    print(f"{method} {BITS:g}-bit ResNet-18, {CALIB} calibration images: {result['seconds']:.1f} s")
    assert len(layers) == 21  # 20 convs (stem, 16 in blocks, 3 shortcuts) + fc


# Rows timed per layer in the projected OBC run: every row up to this many columns,
# then a subset (the kernel's cost per row is the same for every row of a layer:
# C greedy steps over the same C x C inverse Hessian).
SUBSET_ROWS = {4608: 8, 2304: 32}


def test_resnet18_obc_projected(benchmark, resnet18, calib):
    """OBC on the whole network with the widest layers timed on a row subset.

    Everything but the per-row greedy kernel runs in full (float-model Hessians for all
    21 layers, dead inputs, grid fit, H^-1); ``obc_quantize_rows`` runs on all rows of
    layers up to 1152 columns and on ``SUBSET_ROWS`` rows of the 2304/4608-column layers,
    scaled by R / rows. The sum is the projected whole-network time on this machine.
    """
    from ptqx import ops
    from ptqx.quant import LayerPlan, QuantSpec, find_layers, fit_grid, weight_rows
    from ptqx.quant.calib import CalibrationSet
    from ptqx.quant.hessian import collect_hessians, invert_hessian, prepare_layer

    layers, _ = find_layers(resnet18)
    plans = [LayerPlan(n, m, QuantSpec(BITS)) for n, m in layers.items()]
    rows_out = []

    def run():
        rows_out.clear()
        cset = CalibrationSet(calib, batch_size=64)
        t0 = time.perf_counter()
        hs = collect_hessians(resnet18, plans, cset, product_dtype=torch.float32)
        t_hess = time.perf_counter() - t0
        print(
            f"\nobc projected: Hessians of all layers in one float-model pass: {t_hess:.1f} s",
            flush=True,
        )
        for lp in plans:
            t1 = time.perf_counter()
            w, h = prepare_layer(weight_rows(lp.module), hs.pop(lp.name))
            scale, zero = fit_grid(w, lp.spec)
            hinv = invert_hessian(h[0], damp=0.01, what=lp.name, dtype=torch.float32)
            t_prep = time.perf_counter() - t1
            n = SUBSET_ROWS.get(lp.columns, lp.rows)
            t2 = time.perf_counter()
            ops.obc_quantize_rows(
                w[:n].contiguous(),
                hinv,
                scale[:n].contiguous(),
                zero[:n].contiguous(),
                lp.spec.maxq,
            )
            t_obc = (time.perf_counter() - t2) * lp.rows / n
            rows_out.append(
                {
                    "layer": lp.name,
                    "shape": [lp.rows, lp.columns],
                    "rows_timed": n,
                    "prep_seconds": t_prep,
                    "obc_seconds": t_obc,
                }
            )
            print(
                f"  {lp.name:<24} {lp.rows:>4}x{lp.columns:<5} prep {t_prep:6.2f} s  obc {t_obc:8.1f} s"
                + ("" if n == lp.rows else f" (scaled from {n} rows)"),
                flush=True,
            )
        total = t_hess + sum(r["prep_seconds"] + r["obc_seconds"] for r in rows_out)
        rows_out.append({"hessian_seconds": t_hess, "projected_total_seconds": total})
        print(
            f"obc {BITS:g}-bit ResNet-18 projected total: {total:.0f} s ({total / 60:.1f} min)",
            flush=True,
        )

    benchmark.group = f"resnet18-{BITS:g}bit-obc-projected"
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"calib_images": CALIB, "threads": torch.get_num_threads(), "layers": rows_out}
    )
