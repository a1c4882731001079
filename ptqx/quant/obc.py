"""OBC (Frantar & Alistarh, "Optimal Brain Compression", NeurIPS 2022) quantization, as the
protocol's OBC path runs it: per layer, ``H = 2/n sum x x^T`` in float64, dead inputs
(H_ii = 0) get H_ii = 1 and W[:, i] = 0, optional damping, ``H^-1``, the grid fixed per
row from the weights, then the greedy row-wise ``ptqx.ops.obc_quantize_rows``.
"""

from __future__ import annotations

import torch
from torch import nn

from ptqx import ops

from .api import ProgressFn, register_quantizer
from .calib import CalibrationSet
from .hessian import check_hessian_options, invert_hessian, quantize_groups, quantize_with_hessians
from .layers import LayerPlan


@register_quantizer("obc", needs_calib=True)
def quantize_obc(
    model: nn.Module,
    plan: list[LayerPlan],
    calib: CalibrationSet | None,
    *,
    progress: ProgressFn,
    damp: float = 0.0,
    sequential: bool = True,
    precision: str = "float32",
) -> None:
    """OBC for every planned layer.

    Options:
        damp: relative damping ``damp * mean(diag H)`` before inverting (0: none, as the
            protocol; a singular Hessian is then an error that suggests damping, where
            the official code silently adds the identity).
        sequential: Hessians from the partially quantized network (True, the default:
            later layers compensate earlier layers' errors, like GPTQ) or all from the
            float network in one pass (False: the official OBC code).
        precision: "float32" (the official code: H^-1 and the greedy updates in float32,
            fastest) or "float64". H is summed in float64 either way, from per-chunk
            ``X^T X`` products in this precision (the official code's
            ``inp.matmul(inp.t()).double()`` for float32).
    """
    dtype = check_hessian_options(damp, precision)

    def layer_fn(lp: LayerPlan, w: torch.Tensor, h: torch.Tensor):
        def rows(w_rows, h_group, scale, zero, what):
            hinv = invert_hessian(h_group, damp=damp, what=what, dtype=dtype)
            return ops.obc_quantize_rows(
                w_rows.to(dtype), hinv, scale.contiguous(), zero.contiguous(), lp.spec.maxq
            ).to(torch.float32)

        return quantize_groups(lp, w, h, rows)

    quantize_with_hessians(
        model,
        plan,
        calib,
        sequential=sequential,
        method="obc",
        progress=progress,
        layer_fn=layer_fn,
        product_dtype=dtype,
    )
