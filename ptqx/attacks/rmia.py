"""RMIA (Zarifzadeh, Liu, Shokri, "Low-Cost High-Power Membership Inference Attacks",
ICML 2024; reference code: privacytrustlab/ml_privacy_meter ``modules/mia/attacks/rmia.py``)
and the LOSS baseline (Yeom et al. 2018).

Scores are LiRA's ``log p - log(1 - p)``, so the true-class probability is
``p = sigmoid(score)``; RMIA works on p averaged over the views.

RMIA, for target n (reference models: j != n and, per example, one model of the side n
is not on left out too, as for LiRA: see ``ptqx.ops.lira_loo_stats``):

- ``Pr(x | theta_n)`` = the target's p on x;
- ``Pr(x)``: online, the mean of p over all reference models; offline (default, as the
  reference code runs), from the OUT reference models only with the paper's linear
  correction ``Pr(x) = ((1 + a) mean_out(x) + (1 - a)) / 2`` (a = ``offline_a``);
- ``ratio(x) = Pr(x | theta_n) / Pr(x)``;
- population z: the target's non-members (all of them, or a seeded sample of
  ``n_population``), with ratio(z) computed the same way;
- score(x) = the fraction of z with ``ratio(x) / ratio(z) > gamma``; x itself is left
  out of its own population. One sort per target and a binary search per example
  replace the reference code's |x| * |z| comparison matrix.

The "faithful"/"ptqx" mode does not change RMIA or LOSS (Quant-MIA has neither).
"""

from __future__ import annotations

import torch

from ._inputs import AttackInputs


def _probabilities(scores: torch.Tensor) -> torch.Tensor:
    """p = sigmoid(score) averaged over views: float64 [N, M]."""
    return torch.sigmoid(scores).mean(dim=2)


def rmia(
    inp: AttackInputs,
    mode: str,
    *,
    offline: bool = True,
    offline_a: float = 0.3,
    gamma: float = 1.0,
    n_population: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """RMIA statistic [N, M] in [0, 1] (higher = member). See the module docstring.

    Args:
        offline: estimate Pr(x) from OUT reference models with the ``a`` correction
            (True), or as the mean over all reference models (False: online RMIA).
        offline_a: the a of the offline correction, in [0, 1].
        gamma: threshold of the pairwise likelihood ratio, > 0.
        n_population: number of z samples per target drawn (without replacement,
            seeded) from its non-members; None uses all of them.
        seed: seed of that draw.
    """
    if not 0.0 <= float(offline_a) <= 1.0:
        raise ValueError(f"offline_a: expected a value in [0, 1], got {offline_a!r}")
    if not float(gamma) > 0:
        raise ValueError(f"gamma: expected > 0, got {gamma!r}")
    if n_population is not None and (not isinstance(n_population, int) or n_population < 1):
        raise ValueError(f"n_population: expected None or an int >= 1, got {n_population!r}")
    keep = inp.keep
    n_models, m = keep.shape
    p_target = _probabilities(inp.target)
    p_ref = _probabilities(inp.ref)
    # Means over the reference models of every (target, example), for all targets at
    # once: all models less the target and its dropped partner. Keeping the partner
    # would put one more model of the side the target is not on into p_all, which
    # tells members apart (null-target AUC 0.56 at N = 16).
    drop = inp.dropped  # [N, M]
    has_drop = drop >= 0
    p_drop = torch.where(has_drop, p_ref.gather(0, drop.clamp(min=0)), 0)
    cnt_all = (n_models - 1) - has_drop.to(torch.float64)
    p_all = (p_ref.sum(0, keepdim=True) - p_ref - p_drop) / cnt_all.clamp(min=1)
    if offline:
        out = (~keep).to(torch.float64)
        out_drop = torch.where(has_drop, out.gather(0, drop.clamp(min=0)), 0)
        cnt = out.sum(0, keepdim=True) - out - out_drop
        removed = p_ref * out + p_drop * out_drop
        mean_out = ((p_ref * out).sum(0, keepdim=True) - removed) / cnt.clamp(min=1)
        # An example OUT for no other model has no OUT estimate: fall back to all models.
        mean_out = torch.where(cnt > 0, mean_out, p_all)
        a = float(offline_a)
        p_x = ((1 + a) * mean_out + (1 - a)) / 2
    else:
        p_x = p_all
    ratio = p_target / p_x  # [N, M]; p_x > 0 unless every p underflowed

    g = torch.Generator().manual_seed(int(seed))
    result = torch.empty_like(ratio)
    for n in range(n_models):
        pool_idx = torch.nonzero(~keep[n]).squeeze(1)
        if n_population is not None and n_population < pool_idx.numel():
            pick = torch.randperm(pool_idx.numel(), generator=g)[:n_population]
            pool_idx = pool_idx[pick.to(pool_idx.device)]
        in_pool = torch.zeros(m, dtype=torch.bool, device=keep.device)
        in_pool[pool_idx] = True
        pool = ratio[n, pool_idx].sort().values
        thresh = ratio[n] / gamma
        # ratio(x) / ratio(z) > gamma  <=>  ratio(z) < ratio(x) / gamma
        below = torch.searchsorted(pool, thresh, side="left").to(torch.float64)
        # x is no z for itself: drop its own vote (only possible when gamma < 1) and
        # shrink its population by one.
        self_vote = in_pool & (ratio[n] < thresh)
        below = below - self_vote.to(torch.float64)
        size = pool.numel() - in_pool.to(torch.float64)
        result[n] = below / size.clamp(min=1)
    return result


def loss_attack(inp: AttackInputs, mode: str) -> torch.Tensor:
    """LOSS baseline: minus the cross-entropy, ``log p = logsigmoid(score)``, mean over views."""
    return torch.nn.functional.logsigmoid(inp.target).mean(dim=2)
