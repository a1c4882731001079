"""Public wrapper for the leave-one-out LiRA statistics op (``ptqx::lira_loo_stats``)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._checks import check_tensor
from .reference import LOO_STAT_NAMES

__all__ = ["LOO_STAT_NAMES", "LooStats", "lira_loo_stats"]


class LooStats(NamedTuple):
    """Per-target, per-example IN/OUT statistics of the reference scores.

    Every field except the counts is ``[N, M, V]`` in the dtype of the scores: entry
    ``[n, m, v]`` summarises the scores of example m, view v under the reference models
    ``j != n``. Counts are int64 ``[N, M]``.
    """

    median_in: torch.Tensor
    median_out: torch.Tensor
    mean_in: torch.Tensor
    mean_out: torch.Tensor
    std_in: torch.Tensor
    std_out: torch.Tensor
    count_in: torch.Tensor
    count_out: torch.Tensor


def lira_loo_stats(ref_scores: torch.Tensor, keep: torch.Tensor) -> LooStats:
    """IN/OUT median, mean, population std and counts, leaving out each model in turn.

    For every target model ``n`` the statistics of example m, view v are taken over the
    other models' scores ``ref_scores[j, m, v]``, split by ``keep[j, m]`` (IN: j trained on
    m; OUT: it did not), with one more model left out: the highest-indexed model of the
    side n is not on. Leaving out n alone would shrink only n's own side, and with
    balanced membership the side sizes would then reveal whether n trained on m; this
    way the counts are ``k_in - 1`` and ``k_out - 1`` for every target. Medians follow
    ``np.median`` (mean of the two middle values for an even count), stds are population
    stds (ddof 0): LiRA's per-example Gaussians (Carlini et al. 2022) as the Quant-MIA
    code fits them. The native kernels sort each (example, view) column once and then
    update in O(1) per target (prefix/suffix Welford moments merged with Chan's formula,
    so the variance never subtracts large sums).

    A side with no model left takes the other side's statistics, so an IN-vs-OUT
    likelihood ratio built from them is exactly 0 rather than NaN; the counts identify
    these entries. With no model left on either side all statistics are 0.

    Args:
        ref_scores: float32/float64 ``[N, M, V]`` (models, examples, views), finite.
        keep: bool ``[N, M]`` membership of each example in each model's training set,
            on the device of ``ref_scores``.
    Returns:
        :class:`LooStats`.
    """
    check_tensor(
        "ref_scores", ref_scores, dtypes=(torch.float32, torch.float64), ndim=3, finite=True
    )
    n, m, _ = ref_scores.shape
    if n < 1:
        raise ValueError("ref_scores: need at least 1 model (dim 0), got 0")
    check_tensor("keep", keep, dtypes=(torch.bool,), shape=(n, m), device=ref_scores.device)
    stats, counts = torch.ops.ptqx.lira_loo_stats(ref_scores.contiguous(), keep.contiguous())
    return LooStats(*stats.unbind(0), *counts.unbind(0))
