"""LiRA (Carlini et al. 2022, "Membership Inference Attacks From First Principles",
IEEE S&P) with every model attacked in turn by the others as reference models.

For target n, example m and view v let s = target_scores[n, m, v] and let the IN/OUT
statistics come from the reference scores of the models j != n, less one model of the
side n is not on (``lira_loo_stats``: leaving out n alone would make the side n is on
one model smaller, and the side sizes would reveal n's membership): mu = np.median,
sigma = population std (ddof 0). Statistics are averaged over views (the
diagonal-Gaussian combination of the paper's multiple queries). Higher = member.

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

The code truncates every example's IN/OUT set to the smallest count over examples
(keeping the lowest-indexed models). With balanced masks that is what the extra
leave-out above does: both sides keep N/2 - 1 models, the highest-indexed model of the
larger side leaves.

``"ptqx"`` (default) fixes what the paper's text and the LiRA paper mean:

- offline is one-sided, as in the LiRA paper (s large => member):
  ``mean_v log Phi((s - mu_out) / sd_out)``, the log-probability that an OUT score lies
  below s (for one view exactly the paper's ``1 - Pr[Z > s]``, in log space so the
  far tail keeps its resolution);
- fixed variance means one *per-example* variance shared by all examples: the pooled
  within-example variance ``sum_(m,v) c_m sd_(m,v)^2 / sum_(m,v) (c_m - 1)`` (c_m = the
  number of reference models on that side, sd of ddof 0: the unbiased pooled estimate;
  a side of one model adds nothing), computed separately for IN and OUT, so the OUT side
  gets its own sigma_out;
- an sd of 0 (a side with a single reference model, or identical scores) is replaced by
  that side's pooled sd (or, if that side has no spread anywhere, as with N = 3, the
  pooled sd of both sides) instead of 1e-30, which would turn one coincidence into an
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
# Elementwise work runs over a few target rows at a time: ~2 MB per temporary stays in
# cache and is recycled by the allocator, where whole [N, M, V] temporaries would fault
# in fresh pages for every operation (measured: ~10x slower on CPU).
_CPU_CHUNK_ELEMS = 1 << 18


def _row_chunks(inp: AttackInputs):
    n, m, v = inp.target.shape
    rows = n if inp.target.is_cuda else max(1, _CPU_CHUNK_ELEMS // max(m * v, 1))
    for a in range(0, n, rows):
        yield slice(a, min(a + rows, n))


def _per_target(inp: AttackInputs, fn) -> torch.Tensor:
    """Evaluate ``fn(rows) -> [r, M]`` over chunks of target rows into one [N, M]."""
    n, m, _ = inp.target.shape
    out = torch.empty((n, m), dtype=torch.float64, device=inp.target.device)
    for sl in _row_chunks(inp):
        out[sl] = fn(sl)
    return out


def _sum_views(x: torch.Tensor) -> torch.Tensor:
    """Sum over the (short) last dim as slice adds: [r, M, V] -> [r, M]."""
    acc = x[..., 0].clone()
    for v in range(1, x.shape[-1]):
        acc += x[..., v]
    return acc


def _log_normal(s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(s; mu, sigma), as scipy.stats.norm.logpdf(s, mu, sigma)."""
    z = (s - mu).div_(sigma)
    return z.square_().mul_(-0.5).sub_(torch.log(sigma)).sub_(_HALF_LOG_2PI)


def raw_std_loo(inp: AttackInputs, member: bool) -> torch.Tensor:
    """``np.std`` of every IN (or OUT) reference score that judges target n, per target.

    A target whose pool on this side is empty (the side has at most one model per
    example) takes the other side's sd, as the per-example statistics borrow the other
    side's, rather than 0, which the faithful ``+ 1e-30`` would turn into scores of 1e59.

    What the original code's fixed-variance attacks use (all examples and views pooled,
    so between-example spread is included), over the same reference sets as the
    per-example statistics: models j != n, less the model dropped with n on each example
    (``AttackInputs.dropped``). The pool of target n is the side's whole pool less model
    n's entries and the dropped models' entries, so sums over those three parts give every
    target's pool in O(N M V). Sums are of (x - K) with K the side's overall mean: the
    variance ``Q / c - (mean - K)^2`` then subtracts only a tiny square, and the parts
    removed from Q are a small share of it, so nothing cancels badly.

    Returns:
        float64 [N].
    """

    def make():
        sd, cnt = _raw_std_one_side(inp, member)
        sd_other, _ = _raw_std_one_side(inp, not member)
        return torch.where(cnt > 0, sd, sd_other)

    return inp.cached(f"raw_std_{member}", make)


def _raw_std_one_side(inp: AttackInputs, member: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(sd, number of scores) of one side's pool per target (see ``raw_std_loo``): [N] x2."""

    def make():
        n, m, v = inp.ref.shape
        side = inp.keep == member  # [N, M]: entries of this side
        x = inp.ref
        cnt_all = side.sum().to(torch.float64) * v
        shift = torch.where(side.unsqueeze(-1), x, 0).sum() / cnt_all.clamp(min=1)
        d = torch.where(side.unsqueeze(-1), x - shift, 0)  # [N, M, V]
        s1_em, s2_em = d.sum(2), d.square().sum(2)  # per (model, example): [N, M]
        # The model dropped with target t on example e is on this side iff t is not.
        drop = inp.dropped
        dropped_here = (drop >= 0) & ~side  # [N(target), M]
        idx = drop.clamp(min=0)
        s1_drop = torch.where(dropped_here, s1_em.gather(0, idx), 0).sum(1)
        s2_drop = torch.where(dropped_here, s2_em.gather(0, idx), 0).sum(1)
        c = cnt_all - (side.sum(1) + dropped_here.sum(1)).to(torch.float64) * v
        s1 = s1_em.sum() - s1_em.sum(1) - s1_drop
        s2 = s2_em.sum() - s2_em.sum(1) - s2_drop
        mean_d = s1 / c.clamp(min=1)
        var = (s2 / c.clamp(min=1) - mean_d.square()).clamp(min=0)
        return torch.sqrt(var), c

    return inp.cached(f"raw_std_one_side_{member}", make)


def _pooled_moments(inp: AttackInputs, member: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of c * sd^2, sum of (c - 1)) over examples and views of one side, per target.

    c * sd^2 (sd of ddof 0) is the side's sum of squared deviations, so their ratio is
    the unbiased pooled variance; dividing by sum c instead would shrink it by about
    (c - 1) / c (0.58x the true sd at N = 4, 0.93x at N = 16: measured).
    Returns: float64 [N] x2.
    """

    def make():
        loo = inp.loo
        sd = loo.std_in if member else loo.std_out
        c = (loo.count_in if member else loo.count_out).to(torch.float64)  # [N, M]
        num = torch.empty(c.shape[0], dtype=torch.float64, device=c.device)
        for sl in _row_chunks(inp):
            num[sl] = (c[sl] * _sum_views(sd[sl] * sd[sl])).sum(1)
        return num, (c - 1).clamp(min=0).sum(1) * sd.shape[2]

    return inp.cached(f"pooled_moments_{member}", make)


def pooled_std_loo(inp: AttackInputs, member: bool) -> torch.Tensor:
    """Pooled within-example sd of the IN (or OUT) side, per target n: float64 [N].

    ``sqrt(sum_(m,v) c[n,m] sd[n,m,v]^2 / sum_(m,v) (c[n,m] - 1))`` with c the side's
    model count (sides of at most one model weigh 0). Where a side has no spread at all
    (every side holds at most one model, e.g. N = 4), the pooled sd of both sides
    together is used, and 1e-30 if even that is 0.
    """

    def make():
        num, den = _pooled_moments(inp, member)
        num_o, den_o = _pooled_moments(inp, not member)
        side = torch.sqrt(num / den.clamp(min=1))
        both = torch.sqrt((num + num_o) / (den + den_o).clamp(min=1))
        return torch.where(side > 0, side, both).clamp(min=FAITHFUL_EPS)

    return inp.cached(f"pooled_std_{member}", make)


def _sigma(inp: AttackInputs, member: bool, mode: str, sl: slice) -> torch.Tensor:
    """Per-example sd of one side for target rows ``sl``: [r, M, V].

    faithful: sd + 1e-30; ptqx: sd, with zeros replaced by the side's pooled sd.
    """
    sd = (inp.loo.std_in if member else inp.loo.std_out)[sl]
    if mode == "faithful":
        return sd + FAITHFUL_EPS
    return torch.where(sd > 0, sd, pooled_std_loo(inp, member)[sl, None, None])


def _fixed_sigma(inp: AttackInputs, member: bool, mode: str) -> torch.Tensor:
    """The global sd of a fixed-variance attack, shaped [N, 1, 1] to broadcast."""
    if mode == "faithful":
        sd = raw_std_loo(inp, member) + FAITHFUL_EPS
    else:
        sd = pooled_std_loo(inp, member)
    return sd[:, None, None]


def lira_online(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Online LiRA: mean over views of log N(s; IN) - log N(s; OUT). Returns [N, M]."""
    loo, v = inp.loo, inp.target.shape[2]

    def rows(sl):
        s = inp.target[sl]
        llr = _log_normal(s, loo.median_in[sl], _sigma(inp, True, mode, sl))
        llr -= _log_normal(s, loo.median_out[sl], _sigma(inp, False, mode, sl))
        return _sum_views(llr).div_(v)

    return _per_target(inp, rows)


def lira_online_fixed_var(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Online LiRA with one global sd per side (faithful: the IN sd for both sides)."""
    loo, v = inp.loo, inp.target.shape[2]
    sd_in = _fixed_sigma(inp, True, mode)
    sd_out = sd_in if mode == "faithful" else _fixed_sigma(inp, False, mode)

    def rows(sl):
        s = inp.target[sl]
        llr = _log_normal(s, loo.median_in[sl], sd_in[sl])
        llr -= _log_normal(s, loo.median_out[sl], sd_out[sl])
        return _sum_views(llr).div_(v)

    return _per_target(inp, rows)


def _offline(inp: AttackInputs, mode: str, sd_out) -> torch.Tensor:
    mu, v = inp.loo.median_out, inp.target.shape[2]

    def rows(sl):
        s = inp.target[sl]
        if mode == "faithful":  # two-sided: minus the OUT log-density
            return _sum_views(_log_normal(s, mu[sl], sd_out(sl))).div_(-v)
        return _sum_views(torch.special.log_ndtr((s - mu[sl]).div_(sd_out(sl)))).div_(
            v
        )  # one-sided

    return _per_target(inp, rows)


def lira_offline(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Offline LiRA: only OUT references (faithful: two-sided; ptqx: one-sided)."""
    return _offline(inp, mode, lambda sl: _sigma(inp, False, mode, sl))


def lira_offline_fixed_var(inp: AttackInputs, mode: str) -> torch.Tensor:
    """Offline LiRA with one global OUT sd."""
    sd = _fixed_sigma(inp, False, mode)
    return _offline(inp, mode, lambda sl: sd[sl])


def global_threshold(inp: AttackInputs, mode: str) -> torch.Tensor:
    """The target's own score, averaged over views (no reference model needed)."""
    return _sum_views(inp.target).div_(inp.target.shape[2])
