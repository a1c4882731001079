"""Public wrappers for membership-inference score ops."""

from __future__ import annotations

import torch

from ._checks import check_tensor, check_values

LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)


def logit_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(sum_{k != y} p_k)`` in float64.

    Computed as ``z_y - logsumexp_{k != y} z_k`` (Carlini et al. 2022; the Quant-MIA code
    adds 1e-45 inside both logs of the softmax form, which saturates for confident
    predictions: this form never does), in float64, in one pass over the logits. Finite
    logits always give finite scores; a NaN/Inf logit that makes a score non-finite is
    reported as an error (found from the output, so valid input pays no extra pass).

    Args:
        logits: float16/bfloat16/float32/float64 [..., K], K >= 2.
        labels: int [...] (the leading shape of ``logits``), values in [0, K).
    Returns:
        float64 [...].
    """
    check_tensor("logits", logits, dtypes=LOGIT_DTYPES, min_ndim=1)
    k = logits.shape[-1]
    if k < 2:
        raise ValueError(f"logits: need at least 2 classes in the last dimension, got {k}")
    check_tensor("labels", labels, dtypes=LABEL_DTYPES, device=logits.device)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"labels: expected shape {list(logits.shape[:-1])} (logits without its class dim), "
            f"got {list(labels.shape)}"
        )
    check_values(
        ((labels >= 0) & (labels < k)).all(),
        f"labels: values must lie in [0, {k})",
        lambda: (
            f"labels: values must lie in [0, {k}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        ),
    )
    out = torch.ops.ptqx.logit_scores(logits.contiguous(), labels.to(torch.int64).contiguous())
    finite = torch.isfinite(out)
    check_values(
        finite.all(),
        "logits: a row gives a non-finite score (the row holds NaN or Inf logits)",
        lambda: (
            f"logits: {int((~finite).sum())} row(s) give a non-finite score "
            "(the row holds NaN or Inf logits)"
        ),
    )
    return out
