"""LiRA logit scores: native kernels vs the float64 reference, extremes, errors."""

from __future__ import annotations

import math

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

from .conftest import native_or_skip

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# K = 2 (smallest), primes, one past the kernel's 1024-class chunk, multi-dim leading shapes.
SHAPES = [(1, 2), (5, 3), (100, 10), (33, 100), (7, 1025), (3, 2049), (2, 3, 7), (4, 5, 2, 11)]


def _close(got, want):
    """The brief's 1e-9 relative; scores within 1e-12 of 0 are compared absolutely."""
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_float64_reference(device, gen, dtype):
    native_or_skip("logit_scores", device)
    for shape in [*SHAPES, (0, 10), (3, 0, 4)]:
        z = (torch.randn(*shape, generator=gen, dtype=torch.float64) * 6).to(dtype)
        y = torch.randint(0, shape[-1], shape[:-1], generator=gen)
        got = ops.logit_scores(z.to(device), y.to(device))
        assert got.dtype == torch.float64 and got.shape == shape[:-1]
        _close(got, reference.logit_scores(z, y))


def test_label_in_every_position(device, gen):
    native_or_skip("logit_scores", device)
    k = 1030  # crosses the chunk boundary at 1024
    z = torch.randn(k, k, generator=gen)
    y = torch.arange(k)
    _close(ops.logit_scores(z.to(device), y.to(device)), reference.logit_scores(z, y))


def test_equals_softmax_definition(gen):
    """On moderate logits the score is log p_y - log(1 - p_y) with p = softmax(z)."""
    z = torch.randn(200, 10, generator=gen, dtype=torch.float64) * 2
    y = torch.randint(0, 10, (200,), generator=gen)
    p = torch.softmax(z, -1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(
        ops.logit_scores(z, y), torch.log(p) - torch.log1p(-p), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_extreme_logits_finite_and_exact(device, gen, dtype):
    native_or_skip("logit_scores", device)
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    y = torch.tensor([0, 0, 1, 2])
    got = ops.logit_scores(z.to(dtype).to(device), y.to(device)).cpu()
    zz = z.to(dtype).double()
    # Worked by hand: 1e4 - log(e^-1e4 + e^0) = 1e4; -1e4 - (1e4 + log(1 + e^-1e4)) = -2e4;
    # a tie with one other class: 0; three equal classes: -log 2.
    want = torch.tensor([zz[0, 0], zz[1, 0] - zz[1, 1], 0.0, -math.log(2.0)], dtype=torch.float64)
    assert torch.isfinite(got).all()
    _close(got, want)
    # Random logits of magnitude up to 1e4 (every sign pattern and gap).
    big = ((torch.rand(300, 100, generator=gen, dtype=torch.float64) * 2 - 1) * 1e4).to(dtype)
    yb = torch.randint(0, 100, (300,), generator=gen)
    got = ops.logit_scores(big.to(device), yb.to(device))
    assert torch.isfinite(got).all()
    _close(got, reference.logit_scores(big, yb))


def test_label_dtypes_accepted(gen):
    z = torch.randn(20, 7, generator=gen)
    y = torch.randint(0, 7, (20,), generator=gen)
    want = ops.logit_scores(z, y)
    for dt in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(ops.logit_scores(z, y.to(dt)), want)


def test_non_contiguous_input(gen):
    native_or_skip("logit_scores")
    z = torch.randn(10, 6, 4, generator=gen).transpose(1, 2)  # [10, 4, 6], classes strided
    y = torch.randint(0, 6, (10, 4), generator=gen)
    _close(ops.logit_scores(z, y), reference.logit_scores(z, y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(device, gen, dtype):
    z = torch.randn(4, 3, 9, generator=gen).to(dtype).to(device)
    y = torch.randint(0, 9, (4, 3), generator=gen).to(device)
    torch.library.opcheck(torch.ops.ptqx.logit_scores.default, (z, y))
    # Classes strided (transposed last two dims) and a transposed label matrix.
    z_t = z.transpose(1, 2).contiguous().transpose(1, 2)
    y_t = y.t().contiguous().t()
    assert not z_t.is_contiguous() and not y_t.is_contiguous()
    torch.library.opcheck(torch.ops.ptqx.logit_scores.default, (z_t, y_t))


def test_bad_inputs():
    z = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 4])
    with pytest.raises(TypeError, match="logits: expected dtype"):
        ops.logit_scores(z.int(), y)
    with pytest.raises(TypeError, match="labels: expected dtype"):
        ops.logit_scores(z, y.float())
    with pytest.raises(ValueError, match="labels: expected shape"):
        ops.logit_scores(z, y[:3])
    with pytest.raises(ValueError, match=r"labels: values must lie in \[0, 5\)"):
        ops.logit_scores(z, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match=r"labels: values must lie in \[0, 5\)"):
        ops.logit_scores(z, torch.tensor([0, -1, 3, 2]))
    with pytest.raises(ValueError, match="logits: need at least 2 classes"):
        ops.logit_scores(torch.randn(4, 1), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits: expected at least 1 dimensions"):
        ops.logit_scores(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(TypeError, match="logits: expected a torch.Tensor"):
        ops.logit_scores(z.numpy(), y)
    for bad in (float("nan"), float("inf"), -float("inf")):
        zb = z.clone()
        zb[2, 2] = bad  # the label's own logit
        with pytest.raises(ValueError, match="logits: 1 row"):
            ops.logit_scores(zb, y)
    zb = z.clone()
    zb[1, 3] = float("nan")  # another class's logit
    with pytest.raises(ValueError, match="logits: 1 row"):
        ops.logit_scores(zb, y)


def test_native_kernel_checks_labels():
    """The CPU kernel rejects out-of-range labels itself (no out-of-bounds read)."""
    native_or_skip("logit_scores")
    z = torch.randn(3, 4)
    for y in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(RuntimeError, match="labels: 1 value"):
            torch.ops.ptqx.logit_scores(z, torch.tensor(y))
    with pytest.raises(RuntimeError, match="logits: need at least 2 classes"):
        torch.ops.ptqx.logit_scores(torch.randn(3, 1), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="labels: expected int64"):
        torch.ops.ptqx.logit_scores(z, torch.zeros(3, dtype=torch.int32))
