"""Public wrappers for membership-inference score ops."""

from __future__ import annotations

import torch

from ._checks import check_tensor


def logit_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(sum_{k != y} p_k)`` in float64.

    Args:
        logits: float16/bfloat16/float32/float64 [..., K], K >= 2.
        labels: int [...] (the leading shape of ``logits``), values in [0, K).
    Returns:
        float64 [...].
    """
    check_tensor("logits", logits, dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64), min_ndim=1)
    k = logits.shape[-1]
    if k < 2:
        raise ValueError(f"logits: need at least 2 classes in the last dimension, got {k}")
    check_tensor("labels", labels, dtypes=(torch.int64, torch.int32, torch.int16, torch.uint8), device=logits.device)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels: expected shape {list(logits.shape[:-1])} (logits without its class dim), got {list(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels: values must lie in [0, {k}), got range [{int(labels.min())}, {int(labels.max())}]")
    return torch.ops.ptqx.logit_scores(logits.contiguous(), labels.to(torch.int64).contiguous())
