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
from .hessian import invert_hessian, quantize_with_hessians
from .layers import LayerPlan
from .spec import fit_grid

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    if not (isinstance(damp, int | float) and damp >= 0):
        raise ValueError(f"damp: expected a float >= 0, got {damp!r}")
    if precision not in _DTYPES:
        raise ValueError(f"precision: expected 'float32' or 'float64', got {precision!r}")
    dtype = _DTYPES[precision]

    def layer_fn(lp: LayerPlan, w: torch.Tensor, h: torch.Tensor):
        scale, zero = fit_grid(w, lp.spec)
        g = h.shape[0]
        per = w.shape[0] // g
        q = torch.empty_like(w)
        for k in range(g):
            sl = slice(k * per, (k + 1) * per)
            what = f"layer {lp.name!r}" + (f" group {k}" if g > 1 else "")
            hinv = invert_hessian(h[k], damp=damp, what=what, dtype=dtype)
            q[sl] = ops.obc_quantize_rows(
                w[sl].to(dtype), hinv, scale[sl].contiguous(), zero[sl].contiguous(), lp.spec.maxq
            ).to(torch.float32)
        return q, scale, zero

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
