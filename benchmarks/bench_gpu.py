"""GPU benchmarks: every native CUDA kernel against its reference run on the same GPU
and against the best plain-torch alternative, in one run (ratios, not absolute times).

Skipped without CUDA. Run through ``benchmarks/gpu_check.sh`` on a GPU machine, which
gives the whole file a few minutes: rounds are few, and the slow references (OBC,
LiRA's leave-one-out loop) are timed on a slice and fewer rounds, as ``extra_info`` says.
Shapes come from the named lists below (CIFAR ResNet-18 layers, LLM-size linears).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ptqx.ops as ops
from ptqx.ops import reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

RESNET_LAYERS = [(64, 576), (128, 1152), (256, 2304), (512, 4608)]
LINEAR_SHAPES = [(4096, 4096), (11008, 4096)]
BATCHES = [1, 8, 64, 256, 512]
ROUNDS = 10  # kernels of a few ms at most: enough for a stable minimum
SLOW_ROUNDS = 3  # references that take seconds per call


def _timed(benchmark, fn, *args, rounds: int = ROUNDS):
    """Time ``fn`` with CUDA synchronisation inside the timed call."""

    def run():
        out = fn(*args)
        torch.cuda.synchronize()
        return out

    run()  # warm-up (lazy init, autotuning)
    benchmark.extra_info["rounds"] = rounds
    return benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


def _rand_weight(rows, cols, gen_seed=0):
    g = torch.Generator(device="cuda").manual_seed(gen_seed)
    return torch.randn(rows, cols, device="cuda", generator=g)


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("shape", RESNET_LAYERS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grid_search(benchmark, shape, impl):
    benchmark.group = f"grid_search {shape[0]}x{shape[1]}"
    w = _rand_weight(*shape)
    fn = (
        ops.grid_search
        if impl == "native"
        else (lambda w, maxq: reference.grid_search(w, maxq, False, True, 2.4, 100, 80))
    )
    _timed(benchmark, fn, w, 3)


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("op", ["fake_quant", "quantize_codes"])
def test_fake_quant(benchmark, op, impl):
    rows, cols = LINEAR_SHAPES[1]
    benchmark.group = f"{op} {rows}x{cols}"
    w = _rand_weight(rows, cols)
    scale, zero = ops.grid_search(w, 15, steps=1)
    fn = getattr(ops if impl == "native" else reference, op)
    _timed(benchmark, fn, w, scale, zero, 15)
    benchmark.extra_info["bytes"] = w.numel() * (8 if op == "fake_quant" else 5)


def _spd_hinv(cols):
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(cols, 4 * cols, device="cuda", generator=g, dtype=torch.float64)
    h = 2 * x @ x.T / x.shape[1] + 0.01 * torch.eye(cols, device="cuda", dtype=torch.float64)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return ((hinv + hinv.T) / 2).float()


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("shape", RESNET_LAYERS[:3], ids=lambda s: f"{s[0]}x{s[1]}")
def test_obc(benchmark, shape, impl):
    benchmark.group = f"obc {shape[0]}x{shape[1]}"
    rows, cols = shape
    if impl == "reference":
        rows = 4  # the row-at-a-time reference is O(R*C^3): time 4 rows and say so
    benchmark.extra_info["rows_timed"] = rows
    w = _rand_weight(rows, cols)
    scale, zero = ops.grid_search(w, 3)
    hinv = _spd_hinv(cols)
    fn = ops.obc_quantize_rows if impl == "native" else reference.obc_quantize_rows
    slow = impl == "reference" or cols > 1152
    _timed(benchmark, fn, w, hinv, scale, zero, 3, rounds=SLOW_ROUNDS if slow else ROUNDS)


@pytest.mark.parametrize("impl", ["native", "int8act", "fp32", "fp16", "dequant"])
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_lowbit_linear(benchmark, shape, batch, bits, impl):
    benchmark.group = f"lowbit_linear {shape[0]}x{shape[1]} b{batch} {bits}bit"
    rows, cols = shape
    g = torch.Generator(device="cuda").manual_seed(2)
    codes = torch.randint(0, 2**bits, (rows, cols), device="cuda", generator=g, dtype=torch.uint8)
    scale = torch.rand(rows, device="cuda", generator=g) + 0.5
    zero = torch.full((rows,), float(2 ** (bits - 1)), device="cuda")
    x = torch.randn(batch, cols, device="cuda", generator=g)
    w = scale[:, None] * (codes.float() - zero[:, None])
    if impl == "native":
        packed = ops.pack_weights(codes, bits)
        _timed(benchmark, ops.lowbit_linear, x, packed, scale, zero, bits)
    elif impl == "int8act":  # opt-in: activations quantized to int8 per token
        packed = ops.pack_weights(codes, bits)
        _timed(benchmark, ops.lowbit_linear_int8act, x, packed, scale, zero, bits)
    elif impl == "fp32":
        _timed(benchmark, F.linear, x, w)
    elif impl == "fp16":
        _timed(benchmark, F.linear, x.half(), w.half())
    else:  # the naive fake-quant path: dequantize every call, then a dense GEMM
        _timed(
            benchmark, lambda x: F.linear(x, scale[:, None] * (codes.float() - zero[:, None])), x
        )


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("op", ["pack", "unpack"])
def test_pack(benchmark, op, impl):
    rows, cols = LINEAR_SHAPES[1]
    benchmark.group = f"{op}_weights {rows}x{cols} 4bit"
    g = torch.Generator(device="cuda").manual_seed(5)
    codes = torch.randint(0, 16, (rows, cols), device="cuda", generator=g, dtype=torch.uint8)
    mod = ops if impl == "native" else reference
    if op == "pack":
        _timed(benchmark, mod.pack_weights, codes, 4)
    else:
        _timed(benchmark, mod.unpack_weights, ops.pack_weights(codes, 4), 4, cols)


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_adaround(benchmark, impl):
    """One reconstruction step's soft rounding: forward and backward (ResNet-18 layer4)."""
    rows, cols = RESNET_LAYERS[3]
    benchmark.group = f"adaround forward+backward {rows}x{cols}"
    w = _rand_weight(rows, cols) * 0.1
    scale, zero = ops.grid_search(w, 3)
    s = scale[:, None]
    w_floor = torch.floor(w / s)
    alpha = reference.adaround_init_alpha(w / s).requires_grad_()
    grad_w = _rand_weight(rows, cols, 6)

    def step():
        if impl == "native":
            w_soft, reg = ops.adaround_soft_weight(w_floor, alpha, scale, zero, 3, 10.0)
        else:
            w_soft, reg = reference.adaround_forward(w_floor, alpha, scale, zero, 3, 10.0)
        (g,) = torch.autograd.grad((w_soft * grad_w).sum() + 0.01 * reg, alpha)
        return g

    _timed(benchmark, step)


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_logit_scores(benchmark, impl):
    benchmark.group = "logit_scores [64, 5000, 2, 100] f32"
    g = torch.Generator(device="cuda").manual_seed(3)
    logits = torch.randn(64, 5000, 2, 100, device="cuda", generator=g) * 5
    labels = torch.randint(0, 100, (64, 5000, 2), device="cuda", generator=g)
    fn = ops.logit_scores if impl == "native" else reference.logit_scores
    _timed(benchmark, fn, logits, labels)
    benchmark.extra_info["bytes"] = logits.numel() * 4


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_lira_loo_stats(benchmark, impl):
    benchmark.group = "lira_loo_stats N=64 M=50000 V=2"
    g = torch.Generator(device="cuda").manual_seed(4)
    m = 50000 if impl == "native" else 2000  # the reference loops over targets
    scores = torch.randn(64, m, 2, device="cuda", generator=g, dtype=torch.float64)
    keep = torch.rand(64, m, device="cuda", generator=g) < 0.5
    benchmark.extra_info["examples_timed"] = m
    fn = ops.lira_loo_stats if impl == "native" else reference.lira_loo_stats
    _timed(benchmark, fn, scores, keep, rounds=ROUNDS if impl == "native" else SLOW_ROUNDS)
