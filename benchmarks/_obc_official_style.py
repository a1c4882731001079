"""OBC's greedy row quantization written the way the official code runs it.

IST-DASLab/OBC ``trueobs.py`` (``TrueOBS.quantize``) processes rows in batches of
``parallel`` (32): every row of the batch gets a full copy of Hinv ([B, C, C]), and each
of the C steps downdates all of it with a batched rank-1 ``bmm``, so a row costs
O(C^3) memory-bound work. This is the baseline the native kernel is measured against;
it lives here and not in the package because ptqx never needs to run it. Semantics are
identical to ``ptqx.ops.reference.obc_quantize_rows_order`` (the tests check that); the
official ``prepare_sparse`` and per-step loss bookkeeping are left out, as there.
"""

from __future__ import annotations

import torch


def obc_official_style(
    weight: torch.Tensor,
    hinv: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    parallel: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (Q, order) like the reference; all inputs in one dtype is the official case."""
    dtype = torch.promote_types(weight.dtype, hinv.dtype)
    W = weight.to(dtype)
    hinv = hinv.to(dtype)
    rows, cols = W.shape
    Q = torch.zeros_like(W)
    order = torch.zeros((rows, cols), dtype=torch.int64)
    for i1 in range(0, rows, parallel):
        i2 = min(i1 + parallel, rows)
        count = i2 - i1
        w = W[i1:i2].clone()
        H = hinv.unsqueeze(0).repeat(count, 1, 1)
        mask = torch.zeros_like(w, dtype=torch.bool)
        rc = torch.arange(count)
        s = scale[i1:i2, None].to(dtype)
        z = zero[i1:i2, None].to(dtype)
        outlier = 0.25 * s**2
        for step in range(cols):
            q = s * (torch.clamp(torch.round(w / s) + z, 0, maxq) - z)
            err = (w - q) ** 2
            diag = torch.diagonal(H, dim1=1, dim2=2)
            scores = err / diag
            scores[mask] = float("inf")
            err[mask] = 0
            j = torch.argmin(scores, 1)
            sel = torch.any(err > outlier, 1)
            sel &= w[rc, j] != 0
            if torch.any(sel):
                j[sel] = torch.argmax(err[sel, :], 1)
            q1 = q[rc, j]
            Q[i1 + rc, j] = q1
            order[i1:i2, step] = j
            row = H[rc, j, :]
            d = diag[rc, j]
            w -= row * ((w[rc, j] - q1) / d).unsqueeze(1)
            mask[rc, j] = True
            if step == cols - 1:
                break
            row /= torch.sqrt(d).unsqueeze(1)
            H -= torch.bmm(row.unsqueeze(2), row.unsqueeze(1))
    return Q.to(weight.dtype), order
