"""OBC greedy row quantization: native kernels vs the reference vs the official-style code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

from .conftest import native_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _obc_official_style import obc_official_style  # noqa: E402


def reference_order(*args):
    """The reference on one thread: its thousands of tiny ops only lose to OpenMP
    synchronisation on a busy machine (seconds became minutes here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return reference.obc_quantize_rows_order(*args)
    finally:
        torch.set_num_threads(threads)


def correlated_hinv(
    cols: int, *, seed: int, dtype=torch.float64, damp: float = 0.01, n: int | None = None
):
    """Inverse of H = 2 X X^T / n + damp * mean(diag) I with X = A Z: dense, correlated."""
    g = torch.Generator().manual_seed(seed)
    n = n or max(2 * cols, 8)
    a = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    a += torch.eye(cols, dtype=torch.float64)  # keeps H well conditioned but far from diagonal
    x = a @ torch.randn(cols, n, generator=g, dtype=torch.float64)
    h = 2 * x @ x.T / n
    h += damp * torch.diagonal(h).mean() * torch.eye(cols, dtype=torch.float64)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return ((hinv + hinv.T) / 2).to(dtype)  # exactly symmetric, as the kernels assume


def make_problem(
    rows: int, cols: int, *, bits: float = 3, seed: int = 0, dtype=torch.float64, hinv_dtype=None
):
    g = torch.Generator().manual_seed(seed + 1000)
    w = (torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    maxq = 2 if bits == 1.58 else 2 ** int(bits) - 1
    scale, zero = (
        ops.grid_search(w.float(), maxq, steps=1) if rows else (torch.ones(0), torch.zeros(0))
    )
    hinv = correlated_hinv(cols, seed=seed, dtype=hinv_dtype or dtype)
    return w, hinv, scale, zero, maxq


def obc_loss(w: torch.Tensor, q: torch.Tensor, hinv: torch.Tensor) -> float:
    """Summed OBC loss: sum over rows of (w - q) H (w - q)^T with H = hinv^-1."""
    h = torch.linalg.inv(hinv.double())
    d = (w - q).double()
    return float(((d @ h) * d).sum())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows,cols,bits", [(5, 11, 3), (33, 17, 2), (3, 23, 1.58), (2, 1, 4)])
def test_reference_matches_official_style(rows, cols, bits, dtype):
    w, hinv, scale, zero, maxq = make_problem(rows, cols, bits=bits, seed=rows * cols, dtype=dtype)
    q_ref, o_ref = reference_order(w, hinv, scale, zero, maxq)
    q_off, o_off = obc_official_style(w, hinv, scale, zero, maxq)
    assert torch.equal(o_ref, o_off)
    assert torch.equal(q_ref, q_off)


def test_reference_beats_rtn_and_is_on_grid():
    w, hinv, scale, zero, maxq = make_problem(8, 24, bits=2, seed=3)
    q = reference.obc_quantize_rows(w, hinv, scale, zero, maxq)
    rtn = reference.fake_quant(w, scale, zero, maxq)
    assert torch.equal(reference.fake_quant(q, scale, zero, maxq), q)  # every entry on the grid
    assert obc_loss(w, q, hinv) < obc_loss(w, rtn, hinv)


# ---------------------------------------------------------------------------------------
# Native kernels against the reference


def run_both(w, hinv, scale, zero, maxq, device):
    q_k, o_k = ops.obc_quantize_rows(
        w.to(device), hinv.to(device), scale.to(device), zero.to(device), maxq, return_order=True
    )
    q_r, o_r = reference_order(w, hinv, scale, zero, maxq)
    return q_k.cpu(), o_k.cpu(), q_r, o_r


# 1 row / 1 column, primes, C below / at / just above the CPU kernel's pivot batch
# (C // 8 clamped to [8, 64]) and its 16-wide (f32) / 8-wide (f64) tiles, C with many folds (65: batch 8).
FLOAT64_SHAPES = [
    (1, 1, 3),
    (1, 2, 2),
    (4, 1, 4),
    (0, 5, 3),
    (3, 7, 1.58),
    (2, 31, 2),
    (3, 37, 3),
    (2, 64, 4),
    (3, 65, 2),
    (2, 97, 1.58),
    (2, 131, 3),
    (1, 257, 2),
]


@pytest.mark.parametrize("rows,cols,bits", FLOAT64_SHAPES)
def test_kernel_float64_equals_reference(rows, cols, bits, device):
    native_or_skip("obc_quantize_rows_order", device)
    w, hinv, scale, zero, maxq = make_problem(rows, cols, bits=bits, seed=7 * rows + cols)
    q_k, o_k, q_r, o_r = run_both(w, hinv, scale, zero, maxq, device)
    assert q_k.dtype == torch.float64 and q_k.shape == (rows, cols)
    assert torch.equal(o_k, o_r)
    assert torch.equal(q_k, q_r)


@pytest.mark.slow
@pytest.mark.parametrize("rows,cols", [(2, 517), (1, 1031)])
def test_kernel_float64_equals_reference_large(rows, cols, device):
    native_or_skip("obc_quantize_rows_order", device)
    w, hinv, scale, zero, maxq = make_problem(rows, cols, bits=2, seed=cols)
    q_k, o_k, q_r, o_r = run_both(w, hinv, scale, zero, maxq, device)
    assert torch.equal(o_k, o_r)
    assert torch.equal(q_k, q_r)


def assert_float32_close(q_k, q_r, w, hinv):
    # Acceptance for float32 (issue 2): >= 99.9% of entries equal and the summed OBC loss
    # within 0.5%. Greedy picks may flip on near-ties, since the kernel sums the Hinv
    # downdates in a different order than the reference.
    equal = (q_k == q_r).double().mean().item()
    assert equal >= 0.999, f"only {equal:.4%} of entries equal"
    loss_k, loss_r = obc_loss(w, q_k, hinv), obc_loss(w, q_r, hinv)
    assert abs(loss_k - loss_r) <= 0.005 * loss_r, (loss_k, loss_r)


@pytest.mark.parametrize("rows,cols,bits", [(24, 149, 2), (6, 181, 3), (5, 101, 1.58)])
def test_kernel_float32_matches_reference(rows, cols, bits, device):
    native_or_skip("obc_quantize_rows_order", device)
    w, hinv, scale, zero, maxq = make_problem(rows, cols, bits=bits, seed=cols, dtype=torch.float32)
    q_k, _, q_r, _ = run_both(w, hinv, scale, zero, maxq, device)
    assert q_k.dtype == torch.float32
    assert_float32_close(q_k, q_r, w, hinv)


def test_float32_weight_with_float64_hinv_runs_in_float64(device):
    native_or_skip("obc_quantize_rows_order", device)
    w, hinv, scale, zero, maxq = make_problem(
        6, 53, bits=2, seed=5, dtype=torch.float32, hinv_dtype=torch.float64
    )
    q_k, o_k, q_r, o_r = run_both(w, hinv, scale, zero, maxq, device)
    assert q_k.dtype == torch.float32
    assert torch.equal(o_k, o_r)
    assert torch.equal(q_k, q_r)
    q64, o64 = reference_order(w.double(), hinv, scale, zero, maxq)
    assert torch.equal(o_r, o64) and torch.equal(q_r, q64.float())


def test_weights_beyond_the_grid_and_exact_zeros(device):
    """Clamped outliers (the outlier rule fires) and dead inputs (W = 0, decoupled H)."""
    native_or_skip("obc_quantize_rows_order", device)
    w, hinv, scale, zero, maxq = make_problem(5, 40, bits=2, seed=11)
    w[:, 3] *= 20  # far outside the grid: err > scale^2 / 4 until picked
    w[:, [5, 17]] = 0
    hinv[[5, 17], :] = 0
    hinv[:, [5, 17]] = 0
    hinv[5, 5] = hinv[17, 17] = 1
    q_k, o_k, q_r, o_r = run_both(w, hinv, scale, zero, maxq, device)
    assert torch.equal(o_k, o_r)
    assert torch.equal(q_k, q_r)
    # Zero weights cost nothing and come first (w == 0 disables the outlier rule), then
    # the outlier rule picks the clamped entry.
    assert (o_r[:, :3] == torch.tensor([5, 17, 3])).all()


# ---------------------------------------------------------------------------------------
# A Hessian collected from a trained model


@pytest.fixture(scope="module")
def digits_layer(digits_model, digits_data):
    """(weight [32, 144], hinv f64) of the trained SmallCNN's second conv, H from its inputs."""
    conv = digits_model.layer1[0]
    x_tr = digits_data[0]
    h = torch.zeros(conv.weight[0].numel(), conv.weight[0].numel(), dtype=torch.float64)
    count = 0

    def hook(module, inputs, output):
        nonlocal h, count
        cols = torch.nn.functional.unfold(
            inputs[0],
            module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,
            stride=module.stride,
        )  # [B, C*kh*kw, L]
        x = cols.permute(1, 0, 2).flatten(1).double()
        h += 2 * x @ x.T
        count += x.shape[1]

    handle = conv.register_forward_hook(hook)
    with torch.no_grad():
        digits_model(x_tr[:512])
    handle.remove()
    h /= count
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    weight = conv.weight.detach().flatten(1).double().clone()
    weight[:, dead] = 0
    h += 0.01 * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=torch.float64)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return weight, (hinv + hinv.T) / 2


def test_trained_model_hessian(digits_layer, device):
    native_or_skip("obc_quantize_rows_order", device)
    weight, hinv = digits_layer
    maxq = 3
    scale, zero = ops.grid_search(weight.float(), maxq)
    q_k, o_k, q_r, o_r = run_both(weight, hinv, scale, zero, maxq, device)
    assert torch.equal(o_k, o_r)
    assert torch.equal(q_k, q_r)
    rtn = reference.fake_quant(weight, scale, zero, maxq)
    assert obc_loss(weight, q_r, hinv) < obc_loss(weight, rtn, hinv)
    w32, h32 = weight.float(), hinv.float()
    q_k32, _, q_r32, _ = run_both(w32, h32, scale, zero, maxq, device)
    assert_float32_close(q_k32, q_r32, w32, h32)


# ---------------------------------------------------------------------------------------
# Op registration and argument checks


@pytest.mark.parametrize("op", ["obc_quantize_rows", "obc_quantize_rows_order"])
def test_opcheck(op, device):
    w, hinv, scale, zero, maxq = make_problem(3, 10, bits=2, seed=2, dtype=torch.float32)
    args = (w.to(device), hinv.to(device), scale.to(device), zero.to(device), maxq)
    torch.library.opcheck(getattr(torch.ops.ptqx, op), args)
    # A transposed weight: the kernels return contiguous outputs, so must the fake kernel
    # (empty_like kept the input's strides: a stride mismatch here).
    w_t = w.t().contiguous().t().to(device)
    assert not w_t.is_contiguous()
    torch.library.opcheck(getattr(torch.ops.ptqx, op), (w_t, *args[1:]))


def test_bad_inputs():
    w, hinv, scale, zero, maxq = make_problem(3, 6, bits=2, seed=4)

    def call(**kw):
        a = dict(weight=w, hinv=hinv, scale=scale, zero=zero, maxq=maxq) | kw
        return ops.obc_quantize_rows(a["weight"], a["hinv"], a["scale"], a["zero"], a["maxq"])

    nan_w = w.clone()
    nan_w[1, 2] = float("nan")
    inf_h = hinv.clone()
    inf_h[0, 0] = float("inf")
    cases = [
        (dict(weight=w.to(torch.int32)), TypeError, "weight"),
        (dict(weight=w.half()), TypeError, "weight"),
        (dict(weight=w[0]), ValueError, "weight"),
        (dict(weight=nan_w), ValueError, "weight"),
        (dict(hinv=hinv[:5, :5]), ValueError, "hinv"),
        (dict(hinv=hinv.to(torch.bfloat16)), TypeError, "hinv"),
        (dict(hinv=hinv.to("meta")), ValueError, "hinv"),
        (dict(hinv=inf_h), ValueError, "hinv"),
        (dict(hinv=torch.zeros_like(hinv)), ValueError, "hinv"),  # non-invertible Hessian
        (
            dict(hinv=hinv - 2 * torch.diagonal(hinv).max() * torch.ones_like(hinv)),
            ValueError,
            "hinv",
        ),
        (
            dict(hinv=hinv + torch.triu(torch.ones_like(hinv), 1)),
            ValueError,
            "hinv",
        ),  # not symmetric
        (dict(scale=scale[:2]), ValueError, "scale"),
        (dict(scale=scale.double()), TypeError, "scale"),
        (dict(scale=-scale), ValueError, "scale"),
        (dict(zero=zero + 0.5), ValueError, "zero"),
        (dict(zero=zero + 300), ValueError, "zero"),
        (dict(maxq=0), ValueError, "maxq"),
        (dict(maxq=256), ValueError, "maxq"),
        (dict(maxq=3.0), ValueError, "maxq"),
    ]
    for kw, exc, name in cases:
        with pytest.raises(exc, match=name):
            call(**kw)


def test_indefinite_hinv_with_positive_diagonal_is_rejected():
    # Positive diagonal, symmetric, but indefinite: what a wrongly inverted H looks like.
    hinv = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    w = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    with pytest.raises(ValueError, match="hinv: not positive definite"):
        ops.obc_quantize_rows(w, hinv, torch.tensor([0.1]), torch.tensor([1.0]), 3)
