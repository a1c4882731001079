"""LiRA (Carlini et al. 2022, "Membership Inference Attacks From First Principles",
IEEE S&P) with every model attacked in turn by the other N - 1 as reference models.

For target n, example m and view v let s = target_scores[n, m, v] and let the IN/OUT
statistics come from the reference scores of the models j != n (``lira_loo_stats``):
mu = np.median, sigma = population std (ddof 0). Statistics are averaged over views
(the diagonal-Gaussian combination of the paper's multiple queries). Higher = member.

Two modes, labelled in :data:`ptqx.attacks.ATTACKS`:

``"faithful"`` reproduces the formulas of Quant-MIA's ``Codes/plot.py`` (itself a
modified copy of tensorflow/privacy ``research/mi_lira_2021/plot.py``):

- online: ``mean_v[log N(s; mu_in, sd_in + 1e-30) - log N(s; mu_out, sd_out + 1e-30)]``;
- online, fixed variance: one sd for both sides, ``np.std`` of *all* IN scores (every
  reference model, example and view pooled, so it includes the spread *between*
  examples); the OUT side also uses that IN sd (the code's quirk);
- offline: ``-mean_v log N(s; mu_out, sd_out + 1e-30)``: a two-sided test (a score far
  below the OUT mean looks as "member" as one far above it);
- offline, fixed variance: as offline with ``np.std`` of all OUT scores.

Not reproduced, on purpose: the code truncates every example's IN/OUT set to the
smallest count over examples, which with balanced masks and a separate target is a
no-op, but with leave-one-out would drop one arbitrary model from half the examples.

``"ptqx"`` (default) fixes what the paper's text and the LiRA paper mean:

- offline is one-sided, as in the LiRA paper (s large => member):
  ``mean_v log Phi((s - mu_out) / sd_out)``, the log-probability that an OUT score lies
  below s (for one view exactly the paper's ``1 - Pr[Z > s]``, in log space so the
  far tail keeps its resolution);
- fixed variance means one *per-example* variance shared by all examples: the pooled
  within-example variance ``sum_(m,v) c_m sd_(m,v)^2 / sum_(m,v) c_m`` (c_m = the number of
  reference models on that side), computed separately for IN and OUT, so the OUT side
  gets its own sigma_out;
- an sd of 0 (a side with a single reference model, or identical scores) is replaced by
  that side's pooled sd instead of 1e-30, which would turn one coincidence into an
  astronomically confident vote.

Both modes are NaN-free: a side with no reference model takes the other side's
statistics (``lira_loo_stats``), which makes the online ratio exactly 0 (no evidence).
"""

from __future__ import annotations

import math

import torch

from ._inputs import AttackInputs

# The +1e-30 of the original code (it keeps scipy's logpdf finite when sd is 0).
FAITHFUL_EPS = 1e-30
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _log_normal(s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(s; mu, sigma^2), as scipy.stats.norm.logpdf(s, mu, sigma)."""
    z = (s - mu) / sigma
    return -0.5 * z * z - torch.log(sigma) - _HALF_LOG_2PI


def raw_std_loo(inp: AttackInputs, member: bool) -> torch.Tensor:
    """``np.std`` of every IN (or OUT) reference score of the models j != n, per target n.

    What the original code's fixed-variance attacks use (all examples and views pooled,
    so between-example spread is included). Per-model means and two-pass sums of squares
    merged with Chan's formula, so nothing cancels.

    Returns:
        float64 [N].
    """
    n, m, v = inp.ref.shape
    mask = (inp.keep == member).unsqueeze(-1).expand(n, m, v)
    cnt = mask.sum(dim=(1, 2)).to(torch.float64)  # [N]
    mean_j = torch.where(mask, inp.ref, 0).sum(dim=(1, 2)) / cnt.clamp(min=1)
    m2_j = torch.where(mask, (inp.ref - mean_j[:, None, None]) ** 2, 0).sum(dim=(1, 2))
    others = 1 - torch.eye(n, dtype=torch.float64, device=inp.ref.device)  # [target, j]
    w = others * cnt  # counts of the models j != n
    total = w.sum(1)
    mean = (w @ mean_j) / total.clamp(min=1)
    m2 = others @ m2_j + (w * (mean_j[None, :] - mean[:, None]) ** 2).sum(1)
    return torch.sqrt(m2 / total.clamp(min=1))


def pooled_std_loo(inp: AttackInputs, member: bool) -> torch.Tensor:
    """Pooled within-example sd of the IN (or OUT) side, per target n: float64 [N].

    ``sqrt(sum_(m,v) c[n,m] sd[n,m,v]^2 / sum_(m,v) c[n,m])`` with c the side's
    leave-one-out model count; sides without models weigh 0.
    """
    loo = inp.loo
    sd = loo.std_in if member else loo.std_out
    c = (loo.count_in if member else loo.count_out).to(torch.float64)  # [N, M]
    num = (c.unsqueeze(-1) * sd * sd).sum(dim=(1, 2))
    den = c.sum(1) * sd.shape[2]
    return torch.sqrt(num / den.clamp(min=1))


def _sigma_ptqx(inp: AttackInputs, member: bool) -> torch.Tensor:
    """Per-example sd with zeros replaced by the side's pooled sd: [N, M, V]."""

    def make():
        sd = inp.loo.std_in if member else inp.loo.std_out
        pooled = pooled_std_loo(inp, member).clamp(min=FAITHFUL_EPS)[:, None, None]
        return torch.where(sd > 0, sd, pooled)

    return inp.cached(f"sigma_ptqx_{member}", make)


def _fixed_sigma(inp: AttackInputs, member: bool, mode: str) -> torch.Tensor:
    """The global sd of a fixed-variance attack, shaped [N, 1, 1] to broadcast."""
    if mode == "faithful":
        sd = inp.cached(f"raw_std_{member}", lambda: raw_std_loo(inp, member)) + FAITHFUL_EPS
    else:
        sd = inp.cached(f"pooled_std_{member}", lambda: pooled_std_loo(inp, member))
        sd = sd.clamp(min=FAITHFUL_EPS)
    return sd[:, None, None]


def lira_online(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Online LiRA: mean over views of log N(s; IN) - log N(s; OUT). Returns [N, M]."""
    loo = inp.loo
    if mode == "faithful":
        sd_in, sd_out = loo.std_in + FAITHFUL_EPS, loo.std_out + FAITHFUL_EPS
    else:
        sd_in, sd_out = _sigma_ptqx(inp, True), _sigma_ptqx(inp, False)
    s = inp.target
    llr = _log_normal(s, loo.median_in, sd_in) - _log_normal(s, loo.median_out, sd_out)
    return llr.mean(dim=2)


def lira_online_fixed_var(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Online LiRA with one global sd per side (faithful: the IN sd for both sides)."""
    loo = inp.loo
    sd_in = _fixed_sigma(inp, True, mode)
    sd_out = sd_in if mode == "faithful" else _fixed_sigma(inp, False, mode)
    s = inp.target
    llr = _log_normal(s, loo.median_in, sd_in) - _log_normal(s, loo.median_out, sd_out)
    return llr.mean(dim=2)


def _offline(inp: AttackInputs, mode: str, sd_out: torch.Tensor) -> torch.Tensor:
    mu = inp.loo.median_out
    if mode == "faithful":
        return -_log_normal(inp.target, mu, sd_out).mean(dim=2)  # two-sided
    return torch.special.log_ndtr((inp.target - mu) / sd_out).mean(dim=2)  # one-sided


def lira_offline(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Offline LiRA: only OUT references (faithful: two-sided; ptqx: one-sided)."""
    sd = inp.loo.std_out + FAITHFUL_EPS if mode == "faithful" else _sigma_ptqx(inp, False)
    return _offline(inp, mode, sd)


def lira_offline_fixed_var(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Offline LiRA with one global OUT sd."""
    return _offline(inp, mode, _fixed_sigma(inp, False, mode))


def global_threshold(inp: AttackInputs, mode: str) -> torch.Tensor:
    """The target's own score, averaged over views (no reference model needed)."""
    return inp.target.mean(dim=2)
