"""GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization
for Generative Pre-trained Transformers", ICLR 2023), Algorithm 1.

Columns are quantized left to right (or by decreasing H_ii with ``actorder``); each
column's rounding error is spread over the not-yet-quantized columns through the upper
Cholesky factor of H^-1, in blocks of ``blocksize`` columns whose updates to the rest are
applied lazily as one matrix product.
"""

from __future__ import annotations

import torch
from torch import nn

from .api import ProgressFn, register_quantizer
from .calib import CalibrationSet
from .hessian import check_hessian_options, invert_hessian, quantize_groups, quantize_with_hessians
from .layers import LayerPlan


def gptq_rows(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    *,
    blocksize: int = 128,
    actorder: bool = False,
    damp: float = 0.01,
    what: str = "layer",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """GPTQ on one weight matrix sharing one Hessian.

    Args:
        weight: float32 [R, C] (dead inputs already zeroed).
        hessian: float64 [C, C] (dead inputs already set to 1).
        scale, zero: float32 [R]: the per-row grid, fixed beforehand.
        maxq: largest code.
        blocksize: columns per lazy batch.
        actorder: quantize columns in order of decreasing H_ii.
        damp: relative damping added to H's diagonal before inverting.
        what: names the layer in errors.
        dtype: precision of H^-1 and its Cholesky factor (float32 as the official code).
    Returns:
        float32 [R, C]: quantized values ``scale * (code - zero)``.
    """
    w = weight.to(torch.float32).clone()
    h = hessian
    cols = w.shape[1]
    perm = None
    if actorder:
        perm = torch.argsort(torch.diagonal(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
    hinv = invert_hessian(h, damp=damp, what=what, dtype=dtype)
    # Row i of the upper Cholesky factor of H^-1 gives column i's error propagation to
    # the later columns, already divided through by the earlier eliminations.
    u = torch.linalg.cholesky(hinv, upper=True).to(torch.float32)
    s, z = scale[:, None], zero[:, None]
    q_all = torch.zeros_like(w)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i : i + 1]
            # Same rounding as ptqx.ops.fake_quant (round half to even, clamp to the grid).
            q = s * (torch.clamp(torch.round(col / s) + z, 0, maxq) - z)
            q_all[:, i1 + i : i1 + i + 1] = q
            e = (col - q) / u1[i, i]
            w1[:, i:] -= e * u1[i : i + 1, i:]
            err1[:, i : i + 1] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    if perm is not None:
        q_all = q_all[:, torch.argsort(perm)]
    return q_all


@register_quantizer("gptq", needs_calib=True)
def quantize_gptq(
    model: nn.Module,
    plan: list[LayerPlan],
    calib: CalibrationSet | None,
    *,
    progress: ProgressFn,
    blocksize: int = 128,
    actorder: bool = False,
    damp: float = 0.01,
    sequential: bool = True,
    precision: str = "float32",
) -> None:
    """GPTQ for every planned layer.

    Options:
        blocksize: lazy-batch width (128, as the paper).
        actorder: quantize columns by decreasing H_ii ("act-order").
        damp: relative damping, ``damp * mean(diag H)`` added to the diagonal (0.01).
        sequential: Hessians from the partially quantized network (True, GPTQ's default)
            or all from the float network (False).
        precision: "float32" (the official code: H^-1 and its Cholesky factor in
            float32) or "float64". H is summed in float64 either way, from per-chunk
            ``X^T X`` products in this precision (the official OBC code's
            ``inp.matmul(inp.t()).double()`` for float32); column updates run in float32.
    """
    dtype = check_hessian_options(damp, precision)
    if not isinstance(actorder, bool):
        raise ValueError(f"actorder: expected a bool, got {actorder!r}")
    if not isinstance(blocksize, int) or isinstance(blocksize, bool) or blocksize < 1:
        raise ValueError(f"blocksize: expected an int >= 1, got {blocksize!r}")

    def layer_fn(lp: LayerPlan, w: torch.Tensor, h: torch.Tensor):
        def rows(w_rows, h_group, scale, zero, what):
            return gptq_rows(
                w_rows, h_group, scale, zero, lp.spec.maxq, blocksize=blocksize,
                actorder=actorder, damp=damp, dtype=dtype, what=what,
            )  # fmt: skip

        return quantize_groups(lp, w, h, rows)

    quantize_with_hessians(
        model,
        plan,
        calib,
        sequential=sequential,
        method="gptq",
        progress=progress,
        layer_fn=layer_fn,
        product_dtype=dtype,
    )
