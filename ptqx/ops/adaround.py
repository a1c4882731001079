"""Public wrapper for AdaRound's fused soft rounding (dequantize with h, regulariser, gradient).

``adaround_soft_weight`` is differentiable in ``alpha``: its backward is the fused
``ptqx::adaround_backward`` op, registered here with ``torch.library.register_autograd``.
"""

from __future__ import annotations

import torch

from ._checks import FLOATS, check_maxq, check_per_row, check_tensor


def _setup_context(ctx, inputs, output):
    w_floor, alpha, scale, zero, maxq, beta = inputs
    ctx.save_for_backward(w_floor, alpha, scale, zero)
    ctx.maxq, ctx.beta = maxq, beta


def _backward(ctx, grad_w, grad_reg):
    w_floor, alpha, scale, zero = ctx.saved_tensors
    if grad_w is None:
        grad_w = torch.zeros_like(alpha)
    if grad_reg is None:
        grad_reg = alpha.new_zeros(())
    grad_alpha = torch.ops.ptqx.adaround_backward(
        grad_w.contiguous(), grad_reg, w_floor, alpha, scale, zero, ctx.maxq, ctx.beta
    )
    return None, grad_alpha, None, None, None, None


torch.library.register_autograd("ptqx::adaround_forward", _backward, setup_context=_setup_context)


def adaround_soft_weight(
    w_floor: torch.Tensor,
    alpha: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    beta: float,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-rounded weight and the rounding regulariser, differentiable in ``alpha``.

    ``w_soft = scale * (clamp(w_floor + h(alpha) + zero, 0, maxq) - zero)`` with
    ``h(a) = clamp(1.2 * sigmoid(a) - 0.1, 0, 1)``, and
    ``reg = sum(1 - (2 |h - 0.5|)^beta)`` (0 for ``beta == 0``, the warm-up).

    Args:
        w_floor: float32/float64 [R, ...], ``floor(w / scale)`` (dim 0 = output channel),
            finite (the kernels would clamp a NaN to a code where the reference keeps it).
        alpha: rounding variables, same shape, dtype and device as ``w_floor``.
        scale, zero: float32 [R]; scale > 0.
        maxq: largest code (2^bits - 1; 2 for 1.58 bits).
        beta: regulariser exponent: 0 (no regulariser) or >= 1.
        validate: check every argument (the default). Reconstruction loops call this
            thousands of times on tensors they checked once and pass False: the NaN scan
            alone cost ~0.5 ms per call on small layers.
    Returns:
        (w_soft, reg): w_soft shaped like ``alpha``; reg a 0-dim tensor of its dtype.
    """
    if not validate:
        return torch.ops.ptqx.adaround_forward(w_floor, alpha, scale, zero, maxq, float(beta))
    check_tensor("alpha", alpha, dtypes=FLOATS, min_ndim=1, finite=True)
    check_tensor(
        "w_floor",
        w_floor,
        dtypes=(alpha.dtype,),
        shape=tuple(alpha.shape),
        device=alpha.device,
        finite=True,
    )
    check_per_row("scale", scale, alpha.shape[0], alpha.device)
    check_per_row("zero", zero, alpha.shape[0], alpha.device)
    if scale.numel() and not (scale > 0).all():
        raise ValueError("scale: every per-channel scale must be > 0")
    check_maxq(maxq)
    beta = float(beta)
    # For 0 < beta < 1 the regulariser's slope is unbounded at h = 0.5.
    if not (beta == 0 or 1 <= beta < float("inf")):
        raise ValueError(f"beta: expected 0 or a finite value >= 1, got {beta!r}")
    return torch.ops.ptqx.adaround_forward(
        w_floor.contiguous(), alpha.contiguous(), scale.contiguous(), zero.contiguous(), maxq, beta
    )
