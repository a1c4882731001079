"""Public wrapper for OBC's row-wise greedy quantization (``TrueOBS.quantize``)."""

from __future__ import annotations

import torch

from ._checks import FLOATS, check_maxq, check_per_row, check_tensor

# Relative asymmetry tolerated in ``hinv``: torch.cholesky_inverse output is symmetric
# to a few ulps; anything far beyond that is a wrong argument (the kernels read row j of
# hinv as column j, the reference reads row j, so a non-symmetric matrix would make them
# disagree silently).
_SYMMETRY_RTOL = 1e-4


def _check_obc(weight, hinv, scale, zero, maxq) -> None:
    check_tensor("weight", weight, dtypes=FLOATS, ndim=2, finite=True)
    rows, cols = weight.shape
    check_tensor("hinv", hinv, dtypes=FLOATS, shape=(cols, cols), device=weight.device, finite=True)
    check_per_row("scale", scale, rows, weight.device)
    check_per_row("zero", zero, rows, weight.device)
    if scale.numel() and not (scale > 0).all():
        raise ValueError("scale: every per-row scale must be > 0")
    check_maxq(maxq)
    if zero.numel() and not ((zero == torch.round(zero)) & (zero >= 0) & (zero <= maxq)).all():
        raise ValueError(f"zero: expected integer values in [0, maxq={maxq}]")
    if cols:
        diag = torch.diagonal(hinv)
        if not (diag > 0).all():
            bad = int((diag <= 0).sum())
            raise ValueError(
                f"hinv: {bad} diagonal entr{'y is' if bad == 1 else 'ies are'} <= 0; hinv must be the "
                "inverse of a positive definite Hessian (damp H or mark dead inputs before inverting)"
            )
        asym = (hinv - hinv.T).abs().max()
        if asym > _SYMMETRY_RTOL * diag.max():
            raise ValueError(
                f"hinv: expected a symmetric matrix, max |hinv - hinv^T| = {float(asym):.3g} "
                f"(diagonal max {float(diag.max()):.3g})"
            )


def obc_quantize_rows(
    weight: torch.Tensor,
    hinv: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    *,
    return_order: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """OBC greedy quantization of every row of ``weight`` given the inverse Hessian.

    Each row is quantized one entry at a time: the entry whose rounding costs least,
    ``(w_j - q(w_j))^2 / hinv_jj`` (or the worst-rounded one when some entry errs by more
    than half a step: OBC's outlier rule), is fixed to its grid value, the row's other
    entries absorb the error through ``hinv``, and ``hinv`` is downdated to drop entry j.
    Semantics: :func:`ptqx.ops.reference.obc_quantize_rows_order` (IST-DASLab/OBC
    ``TrueOBS.quantize``); every row starts from the same ``hinv``.

    Computation runs in the wider of ``weight``'s and ``hinv``'s dtypes (float32 weights
    with a float64 ``hinv`` run in float64); the official code runs in float32.

    Args:
        weight: float32/float64 [R, C] (conv weights flattened to [R, C_in*kh*kw]).
        hinv: float32/float64 [C, C], the symmetric positive definite inverse Hessian
            ``H^-1`` with ``H = 2/n sum x x^T`` (dead inputs and damping handled by the
            caller), on ``weight``'s device.
        scale: float32 [R] > 0; zero: float32 [R], integers in [0, maxq]: the per-row
            grid, fixed before the updates.
        maxq: largest code (2^bits - 1; 2 for 1.58-bit ternary).
        return_order: also return the order in which each row's entries were picked.
    Returns:
        Q [R, C], ``weight``'s dtype: the dequantized weights ``scale * (code - zero)``;
        with ``return_order``, ``(Q, order)`` where order is int64 [R, C] and
        ``order[r, k]`` is the column fixed at step k of row r.
    Raises:
        TypeError/ValueError naming the argument on a wrong dtype, shape, device,
        NaN/Inf, scale <= 0, zero off the grid, maxq out of range, or a ``hinv`` that is
        not symmetric with a positive diagonal.
    """
    _check_obc(weight, hinv, scale, zero, maxq)
    args = (weight.contiguous(), hinv.contiguous(), scale.contiguous(), zero.contiguous(), maxq)
    if return_order:
        return torch.ops.ptqx.obc_quantize_rows_order(*args)
    return torch.ops.ptqx.obc_quantize_rows(*args)
