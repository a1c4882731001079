"""AdaRound's fused soft-rounding op at its edges: layouts, argument checks, clamp kinks.

The op's accuracy on random inputs and its use in reconstruction are in test_recon.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

from .conftest import native_or_skip


def _grid(rows, maxq, gen, device):
    scale = (torch.rand(rows, generator=gen) * 0.3 + 0.05).to(device)
    zero = torch.randint(0, maxq + 1, (rows,), generator=gen).float().to(device)
    return scale, zero


def test_opcheck_transposed_inputs(device, gen):
    """Non-contiguous w_floor/alpha/grad_w: the kernels return contiguous tensors, and the
    fake kernels must describe them so (empty_like kept the transposed strides)."""
    wf = torch.randint(-1, 5, (13, 7), generator=gen).double().t()
    a = (torch.randn(13, 7, generator=gen, dtype=torch.float64) * 3).t()
    gw = torch.randn(13, 7, generator=gen, dtype=torch.float64).t()
    assert not (wf.is_contiguous() or a.is_contiguous() or gw.is_contiguous())
    scale, zero = _grid(7, 3, gen, device)
    for dtype in (torch.float32, torch.float64):
        wf_, a_, gw_ = (t.to(device, dtype) for t in (wf, a, gw))
        for beta in (0.0, 4.0):
            torch.library.opcheck(
                torch.ops.ptqx.adaround_forward.default, (wf_, a_, scale, zero, 3, beta)
            )
            torch.library.opcheck(
                torch.ops.ptqx.adaround_backward.default,
                (gw_, torch.tensor(0.5, dtype=dtype, device=device), wf_, a_, scale, zero, 3, beta),
            )


def test_w_floor_must_be_finite(device, gen):
    """The native kernels clamp a NaN w_floor to a code (0 or maxq), the reference keeps
    NaN: the wrapper refuses it, naming the argument."""
    a = torch.randn(3, 5, generator=gen, device="cpu").to(device)
    scale, zero = _grid(3, 15, gen, device)
    for bad in (float("nan"), float("inf"), -float("inf")):
        wf = torch.zeros(3, 5, device=device)
        wf[1, 2] = bad
        with pytest.raises(ValueError, match="w_floor: contains 1 NaN/Inf"):
            ops.adaround_soft_weight(wf, a, scale, zero, 15, 2.0)


# alpha where h = clamp(1.2 sigmoid(alpha) - 0.1, 0, 1) sits on a kink: h = 0.5 (alpha = 0,
# where abs' = 0 switches the regulariser's gradient off), u = 0 and u = 1 (sigmoid =
# 1/12 and 11/12, the clamp's closed ends), and their float64 neighbours.
def _kink_alphas(dtype):
    base = torch.tensor([0.0, -math.log(11.0), math.log(11.0)], dtype=dtype)
    up = torch.nextafter(base, torch.full_like(base, math.inf))
    down = torch.nextafter(base, torch.full_like(base, -math.inf))
    return torch.cat([base, up, down, torch.tensor([3.0, -0.5, 100.0, -100.0], dtype=dtype)])


def _autograd_grad(wf, a, scale, zero, maxq, beta, gw, greg):
    """The gradient autograd takes through the reference forward's torch ops."""
    a = a.clone().requires_grad_()
    w_soft, reg = reference.adaround_forward(wf, a, scale, zero, maxq, beta)
    ((w_soft * gw).sum() + greg * reg).backward()
    return a.grad


def test_h_is_one_half_at_zero():
    """1.1 - (-0.1) is 1.2000000000000002 in float64: h(0) was 0.5 + 1 ulp in the
    reference (a regulariser gradient where abs'(0) = 0 gives none) and 0.5 in the kernel."""
    for dtype in (torch.float32, torch.float64):
        assert reference.adaround_h(torch.zeros(1, dtype=dtype)).item() == 0.5


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 20.0])
def test_backward_matches_autograd_at_kinks_float64(beta):
    """float64 at the kinks: the kernel and the reference both use the stretch 1.2 and
    round 1.2 * sig before adding -0.1, as torch does (before: native 0.09 vs autograd
    -0.21 at alpha = 0, beta = 1)."""
    native_or_skip("adaround_backward")
    a = _kink_alphas(torch.float64)[None, :].repeat(2, 1)
    wf = torch.zeros_like(a)
    wf[1] = 1.0
    scale, zero = torch.tensor([0.3, 0.07]), torch.tensor([2.0, 0.0])
    gw = torch.ones_like(a)
    greg = torch.tensor(0.5, dtype=torch.float64)
    want = _autograd_grad(wf, a, scale, zero, 15, beta, gw, greg)
    got = torch.ops.ptqx.adaround_backward(gw, greg, wf, a, scale, zero, 15, beta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        reference.adaround_backward(gw, greg, wf, a, scale, zero, 15, beta), want
    )
    w_soft, reg = torch.ops.ptqx.adaround_forward(wf, a, scale, zero, 15, beta)
    w_ref, reg_ref = reference.adaround_forward(wf, a, scale, zero, 15, beta)
    torch.testing.assert_close(w_soft, w_ref, rtol=1e-15, atol=1e-16)
    torch.testing.assert_close(reg, reg_ref, rtol=1e-14, atol=1e-15)


def test_backward_float32_at_kinks():
    """float32 at alpha = 0 (h = 0.5) and at float32(-log 11), where torch's
    u = 1.2 * sig - 0.1 is exactly 0 (closed clamp: the gradient passes) and a fused
    multiply-add gave -3.5e-9 (gradient 0 before, 0.119 in autograd). This relies on the
    kernel's Cephes sigmoid equalling torch's there (it does on x86); other float32 kinks
    may land on the other side when the two differ by an ulp (csrc/include/ptqx/adaround.h)."""
    native_or_skip("adaround_backward")
    a = torch.tensor([[0.0] * 9 + [-math.log(11.0)] * 9])
    wf, gw = torch.zeros_like(a), torch.ones_like(a)
    scale, zero = torch.tensor([0.3]), torch.tensor([2.0])
    greg = torch.tensor(0.5)
    for beta in (1.0, 2.0):
        want = _autograd_grad(wf, a, scale, zero, 15, beta, gw, greg)
        got = torch.ops.ptqx.adaround_backward(gw, greg, wf, a, scale, zero, 15, beta)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
