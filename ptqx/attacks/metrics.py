"""Attack metrics from one pooled ROC over all (target, example) pairs, with bootstrap CIs.

Members are positives; a pair is flagged as member when its statistic is at least the
threshold. The ROC has one vertex per distinct statistic value (tied pairs enter
together), plus (0, 0); nothing is dropped (sklearn's ``drop_intermediate`` removes
collinear vertices, which can only move the "last vertex below" reading when tied
groups repeat the same step).

- AUC: trapezoids between vertices, i.e. Mann-Whitney with ties counted 1/2.
- Balanced accuracy: ``max over vertices of 1 - (FPR + FNR) / 2`` (Quant-MIA's "acc");
  the membership advantage TPR - FPR of that threshold is ``2 * balanced_accuracy - 1``.
- TPR at FPR t, three readings: ``"tpr@t_le"`` = the largest TPR of a vertex with
  FPR <= t (Carlini et al.'s convention: the best TPR a threshold achieves at that FPR, no
  interpolation; the one to report); ``"tpr@t"`` = TPR of the last vertex with FPR < t
  (Quant-MIA: ``tpr[np.where(fpr < t)[0][-1]]``; lower when a vertex sits exactly at t);
  ``"tpr@t_interp"`` = the ROC's piecewise-linear curve evaluated at FPR = t (upper
  envelope where it is vertical; between vertices only a randomised threshold reaches it).
- Resolution: with n non-member pairs the smallest FPR above 0 is 1/n. A level t < 1/n
  allows no false positive, so every reading at t would be the TPR at FPR 0, not at t:
  those levels are listed in ``"unresolved_fprs"``, their TPRs (and subset rates) are NaN
  and get no CI. A level that allows only a few false positives (t * n small) is resolved
  but noisy, and its percentile CI covers less than its level (synthetic designs with a
  known truth: 79-90% at one false positive, 95% at two, 99% from five on).
- F1 at the balanced-accuracy threshold (the first vertex reaching the maximum):
  ``2 TP / (2 TP + FP + FN)`` over the pooled pairs. With balanced membership this is
  the F1 of the attack's best single threshold; it is not maximised separately.
- 95% bootstrap CIs: each replicate resamples targets and examples independently with
  replacement and weights pair (n, m) by (times n drawn) * (times m drawn); the sort
  order does not change, so a replicate is a weighted cumulative sum over the one sorted
  order (no re-sorting). Percentile intervals; ``seed`` makes them reproducible. This
  two-way ("pigeonhole", Owen 2007) bootstrap counts the target x example interaction
  variance about three times, so the intervals are usually conservative: on synthetic
  designs with a known truth (target, example and vulnerability effects), nominal 95%
  intervals of AUC and TPR@1% covered 97-100%. The exception is few targets whose
  statistics are shifted against each other (a per-target offset as large as the noise):
  the pooled ROC of N targets is then biased, which no resampling repairs, and coverage
  fell to 52-56% with 4 targets, 85-87% with 16 and 96-100% with 64.
- Paired comparisons: replicate i depends only on (seed, n_bootstrap, N, M), so two
  results of the same targets and examples with the same seed resampled the same pairs
  in every replicate; :func:`paired_difference` takes the percentile interval of the
  replicate-by-replicate differences (``"replicates"`` keeps them).
- Per target: ``"per_target"`` summarises each target's own ROC (mean, sample std, min,
  max over targets), the spread across trained models that one pooled number hides and
  the "mean over targets" the paper reports.
- Subsets (calibration leakage): for each caller mask, the fraction of its pairs
  flagged at the threshold of the "last vertex with FPR < t" of the whole ROC (FPR from
  all non-members): a TPR for a members-only mask, an FPR for a non-members-only one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

DEFAULT_FPRS = (1e-4, 1e-3, 1e-2)
CI_LEVEL = 0.95


def _as_numpy(name: str, x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name}: expected a numpy array or torch.Tensor, got {type(x).__name__}")


def _check_stat_keep(stat: object, keep: object) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy("stat", stat)
    k = _as_numpy("keep", keep)
    if not np.issubdtype(s.dtype, np.floating) and not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"stat: expected a real-valued array, got dtype {s.dtype}")
    if k.dtype != np.bool_:
        raise TypeError(f"keep: expected dtype bool, got {k.dtype}")
    if s.shape != k.shape:
        raise ValueError(f"keep: expected the shape of stat {list(s.shape)}, got {list(k.shape)}")
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        raise ValueError(f"stat: contains {int((~np.isfinite(s)).sum())} NaN/Inf value(s)")
    if not k.any() or k.all():
        raise ValueError(
            f"keep: need both members and non-members, got {int(k.sum())} members of {k.size} pairs"
        )
    return s, k


def _check_fprs(fprs: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in fprs)
    if not out or not all(0.0 < t < 1.0 for t in out):
        raise ValueError(f"fprs: expected FPR levels in (0, 1), got {fprs!r}")
    return out


class _SortedPairs:
    """The pooled pairs sorted by decreasing statistic, with tie-group boundaries."""

    def __init__(self, s: np.ndarray, k: np.ndarray):
        flat = s.reshape(-1)
        self.order = np.argsort(-flat, kind="stable")
        sorted_s = flat[self.order]
        self.labels = k.reshape(-1)[self.order].astype(np.float64)
        # Last index of each group of equal values: the ROC vertices.
        change = np.nonzero(sorted_s[1:] != sorted_s[:-1])[0]
        self.ends = np.append(change, sorted_s.size - 1)
        self.thresholds = sorted_s[self.ends]
        if s.ndim == 2:
            self.rows, self.cols = np.divmod(self.order, s.shape[1])
        else:
            self.rows = self.cols = None

    def cumulative(self, w: np.ndarray, mask_sorted: np.ndarray) -> np.ndarray:
        """Cumulative weight of ``mask`` pairs at each vertex, with a leading 0: [..., G+1]."""
        c = np.cumsum(w * mask_sorted, axis=-1)[..., self.ends]
        return np.concatenate([np.zeros(c.shape[:-1] + (1,)), c], axis=-1)


def _metrics(tp: np.ndarray, fp: np.ndarray, fprs: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Metrics of cumulative TP/FP weights at the vertices (leading 0), batched over [..., G+1]."""
    pos = tp[..., -1:]
    neg = fp[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / pos
        fpr = fp / neg
        out: dict[str, np.ndarray] = {}
        out["auc"] = (np.diff(fpr, axis=-1) * (tpr[..., 1:] + tpr[..., :-1]) / 2).sum(-1)
        bal = 1 - (fpr + 1 - tpr) / 2
        best = np.argmax(bal, axis=-1)[..., None]
        out["balanced_accuracy"] = np.take_along_axis(bal, best, -1)[..., 0]
        tp_b = np.take_along_axis(tp, best, -1)[..., 0]
        fp_b = np.take_along_axis(fp, best, -1)[..., 0]
        out["f1"] = 2 * tp_b / (tp_b + fp_b + pos[..., 0])
    flat_fpr = fpr.reshape(-1, fpr.shape[-1])
    flat_tpr = tpr.reshape(-1, tpr.shape[-1])
    for t in fprs:
        vertex = np.empty(flat_fpr.shape[0])
        at_most = np.empty(flat_fpr.shape[0])
        interp = np.empty(flat_fpr.shape[0])
        for b in range(flat_fpr.shape[0]):
            f, r = flat_fpr[b], flat_tpr[b]
            if not np.isfinite(f[-1]) or not np.isfinite(r[-1]):
                vertex[b] = at_most[b] = interp[b] = np.nan
                continue
            # fpr is nondecreasing; index 0 is (0, 0) so both searches find a vertex.
            below = np.searchsorted(f, t, side="left") - 1  # last vertex with fpr < t
            vertex[b] = r[below]
            k = np.searchsorted(f, t, side="right") - 1  # last vertex with fpr <= t
            at_most[b] = r[k]  # tpr is nondecreasing: the largest with fpr <= t
            if k >= f.size - 1:
                interp[b] = r[k]
            else:
                interp[b] = r[k] + (r[k + 1] - r[k]) * (t - f[k]) / (f[k + 1] - f[k])
        out[f"tpr@{t:g}_le"] = at_most.reshape(fpr.shape[:-1])
        out[f"tpr@{t:g}"] = vertex.reshape(fpr.shape[:-1])
        out[f"tpr@{t:g}_interp"] = interp.reshape(fpr.shape[:-1])
    return out


def _threshold_vertex(fp: np.ndarray, t: float) -> np.ndarray:
    """Index of the last vertex with FPR < t, per replicate: [...]."""
    fpr = fp / fp[..., -1:]
    return (fpr < t).sum(-1) - 1  # fpr nondecreasing from 0


def roc_curve(
    stat: np.ndarray | torch.Tensor,
    keep: np.ndarray | torch.Tensor,
    *,
    max_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled ROC over all pairs (members positive).

    Args:
        stat: float [N, M] (or any shape) attack statistic, higher = member.
        keep: bool, same shape: ground-truth membership.
        max_points: if given, thin the curve for plotting to about this many vertices,
            log-spaced in FPR (low-FPR detail kept), always keeping both ends.
    Returns:
        (fpr, tpr, thresholds): float64 [G + 1] each; vertex 0 is (0, 0) with threshold
        +inf; vertex g flags every pair with ``stat >= thresholds[g]``.
    """
    s, k = _check_stat_keep(stat, keep)
    sp = _SortedPairs(s, k)
    ones = np.ones_like(sp.labels)
    tp = sp.cumulative(ones, sp.labels)
    fp = sp.cumulative(ones, 1 - sp.labels)
    fpr, tpr = fp / fp[-1], tp / tp[-1]
    thr = np.concatenate([[np.inf], sp.thresholds])
    if max_points is not None and fpr.size > max_points:
        if max_points < 2:
            raise ValueError(f"max_points: expected >= 2, got {max_points}")
        grid = np.geomspace(1.0 / fp[-1], 1.0, max_points)
        idx = np.unique(
            np.concatenate([[0, fpr.size - 1], np.searchsorted(fpr, grid, side="right") - 1])
        )
        fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
    return fpr, tpr, thr


def evaluate(
    stat: np.ndarray | torch.Tensor,
    keep: np.ndarray | torch.Tensor,
    *,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_bootstrap: int = 200,
    seed: int = 0,
    subsets: Mapping[str, np.ndarray | torch.Tensor] | None = None,
) -> dict:
    """Metrics of one attack on one configuration, with 95% bootstrap CIs.

    Args:
        stat: float [N, M] statistic (higher = member) of N targets on M examples.
        keep: bool [N, M] membership (positives).
        fprs: FPR levels for TPR@FPR, each in (0, 1).
        n_bootstrap: bootstrap replicates (0: no CIs); targets and examples are
            resampled independently.
        seed: seed of the resampling.
        subsets: name -> bool [N, M] mask of pairs (e.g. "calibration members",
            "other members", "non-members") for the calibration-leakage breakdown.
    Returns:
        A JSON-ready dict: ``n_targets, n_examples, n_members, n_nonmembers``;
        ``fpr_resolution`` (1 / n_nonmembers) and ``unresolved_fprs`` (the levels below
        it: their TPRs and subset rates are NaN, without CI); the point metrics ``auc,
        balanced_accuracy, f1, tpr@<t>_le, tpr@<t>, tpr@<t>_interp``; ``ci`` mapping each
        metric to ``[low, high]`` (over the finite replicates); ``ci_dropped`` mapping
        each metric to the number of replicates left out because they drew no member or
        no non-member; ``replicates`` mapping ``auc, balanced_accuracy, tpr@<t>_le`` to
        their replicate values in order (NaN where dropped; for
        :func:`paired_difference`); ``per_target`` mapping the same metrics to ``{mean,
        std, min, max, n}`` over the targets' own ROCs; ``subsets`` mapping each name to
        ``{n_pairs, n_members, rate@<t>, ci: {rate@<t>: [low, high]}}``; ``n_bootstrap,
        seed, ci_level``. See the module docstring for definitions.
    """
    s, k = _check_stat_keep(stat, keep)
    if s.ndim != 2:
        raise ValueError(f"stat: expected shape [N, M] (targets, examples), got {list(s.shape)}")
    fprs = _check_fprs(fprs)
    if (
        not isinstance(n_bootstrap, int | np.integer)
        or isinstance(n_bootstrap, bool)
        or n_bootstrap < 0
    ):
        raise ValueError(f"n_bootstrap: expected an int >= 0, got {n_bootstrap!r}")
    masks: dict[str, np.ndarray] = {}
    for name, mask in (subsets or {}).items():
        mk = _as_numpy(f"subsets[{name!r}]", mask)
        if mk.dtype != np.bool_ or mk.shape != s.shape:
            raise ValueError(
                f"subsets[{name!r}]: expected a bool mask of shape {list(s.shape)}, "
                f"got {mk.dtype} {list(mk.shape)}"
            )
        masks[str(name)] = mk

    sp = _SortedPairs(s, k)
    sorted_masks = {name: mk.reshape(-1)[sp.order].astype(np.float64) for name, mk in masks.items()}
    neg_sorted = 1 - sp.labels

    def replicate(w: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        tp = sp.cumulative(w, sp.labels)
        fp = sp.cumulative(w, neg_sorted)
        main = _metrics(tp, fp, fprs)
        sub: dict[str, dict[str, np.ndarray]] = {}
        for name, ms in sorted_masks.items():
            c = sp.cumulative(w, ms)
            total = c[..., -1]
            rates = {}
            for t in fprs:
                at = _threshold_vertex(fp, t)
                with np.errstate(invalid="ignore", divide="ignore"):
                    r = np.take_along_axis(c, at[..., None], -1)[..., 0] / total
                # A replicate without non-members has no FPR threshold.
                rates[f"rate@{t:g}"] = np.where(fp[..., -1] > 0, r, np.nan)
            sub[name] = rates
        return main, sub

    point, point_sub = replicate(np.ones((1, sp.labels.size)))
    n_t, n_e = s.shape
    n_neg = int(k.size - k.sum())
    unresolved = [t for t in fprs if not _resolved(t, n_neg)]
    # Readings at a level no false positive fits under are the TPR at FPR 0: withheld.
    blank = {f"tpr@{t:g}{sfx}" for t in unresolved for sfx in ("", "_le", "_interp")}
    blank_sub = {f"rate@{t:g}" for t in unresolved}
    result: dict = {
        "n_targets": int(n_t),
        "n_examples": int(n_e),
        "n_members": int(k.sum()),
        "n_nonmembers": n_neg,
        "fpr_resolution": 1.0 / n_neg,
        "unresolved_fprs": unresolved,
    }
    result.update({key: np.nan if key in blank else float(v[0]) for key, v in point.items()})
    result["subsets"] = {
        name: {
            "n_pairs": int(masks[name].sum()),
            "n_members": int((masks[name] & k).sum()),
            **{key: np.nan if key in blank_sub else float(v[0]) for key, v in rates.items()},
        }
        for name, rates in point_sub.items()
    }
    result["per_target"] = _per_target(s, k, fprs)

    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        boots: dict[str, list[np.ndarray]] = {key: [] for key in point if key not in blank}
        sub_boots = {
            name: {key: [] for key in r if key not in blank_sub} for name, r in point_sub.items()
        }
        # Batch replicates so that one batch holds about 4M weights.
        chunk = max(1, min(n_bootstrap, 4_000_000 // max(sp.labels.size, 1)))
        done = 0
        while done < n_bootstrap:
            b = min(chunk, n_bootstrap - done)
            a_t = rng.multinomial(n_t, np.full(n_t, 1.0 / n_t), size=b).astype(np.float64)
            a_e = rng.multinomial(n_e, np.full(n_e, 1.0 / n_e), size=b).astype(np.float64)
            w = a_t[:, sp.rows] * a_e[:, sp.cols]  # [b, pairs] in sorted order
            main, sub = replicate(w)
            for key, vals in boots.items():
                vals.append(main[key])
            for name, rates in sub_boots.items():
                for key, vals in rates.items():
                    vals.append(sub[name][key])
            done += b

        result["ci"] = {key: _interval(np.concatenate(v)) for key, v in boots.items()}
        # Replicates left out of an interval (no member or no non-member drawn): said, not
        # hidden, since many of them would make the interval describe a selected subset.
        result["ci_dropped"] = {
            key: int(sum(np.count_nonzero(~np.isfinite(a)) for a in v)) for key, v in boots.items()
        }
        for name, rates in sub_boots.items():
            result["subsets"][name]["ci"] = {
                key: _interval(np.concatenate(v)) for key, v in rates.items()
            }
        # Kept in replicate order (NaN where dropped) for paired comparisons.
        result["replicates"] = {
            key: np.concatenate(boots[key]).tolist() for key in boots if key in _paired_keys(fprs)
        }
    else:
        result["ci"], result["ci_dropped"], result["replicates"] = {}, {}, {}
    result.update({"n_bootstrap": int(n_bootstrap), "seed": int(seed), "ci_level": CI_LEVEL})
    return result


def _paired_keys(fprs: Sequence[float]) -> tuple[str, ...]:
    """The metrics whose bootstrap replicates :func:`evaluate` keeps for paired comparisons."""
    return ("auc", "balanced_accuracy", *(f"tpr@{float(t):g}_le" for t in fprs))


def false_positives_allowed(t: float, n_neg: int) -> int:
    """How many of ``n_neg`` non-members may be false positives at FPR level ``t``: the
    count a TPR at ``t`` rests on (0: the level is below the sample's resolution)."""
    # t * n_neg can land a hair below the integer it stands for: (1 / 49) * 49 < 1.
    return math.floor(t * n_neg * (1 + 1e-12))


def _resolved(t: float, n_neg: int) -> bool:
    return false_positives_allowed(t, n_neg) >= 1


def _interval(v: np.ndarray) -> list[float]:
    lo_q, hi_q = 100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2
    v = v[np.isfinite(v)]  # a replicate without members (or non-members) has none
    if v.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))]


def _per_target(s: np.ndarray, k: np.ndarray, fprs: tuple[float, ...]) -> dict[str, dict]:
    """Mean, sample std, min, max over targets of each target's own AUC, balanced accuracy
    and ``tpr@t_le`` (NaN for a level some target's non-members cannot resolve)."""
    keys = _paired_keys(fprs)
    vals = {key: np.full(s.shape[0], np.nan) for key in keys}
    for i in range(s.shape[0]):
        n_neg = int((~k[i]).sum())
        if n_neg == 0 or n_neg == k.shape[1]:
            continue  # no ROC for a target without members or without non-members
        sp = _SortedPairs(s[i], k[i])
        ones = np.ones((1, sp.labels.size))
        m = _metrics(sp.cumulative(ones, sp.labels), sp.cumulative(ones, 1 - sp.labels), fprs)
        for key in keys:
            vals[key][i] = m[key][0]
        for t in fprs:
            if not _resolved(t, n_neg):
                vals[f"tpr@{t:g}_le"][i] = np.nan
    out = {}
    for key, v in vals.items():
        ok = np.isfinite(v).all()
        out[key] = {
            "mean": float(v.mean()) if ok else np.nan,
            "std": float(v.std(ddof=1)) if ok and v.size > 1 else (0.0 if ok else np.nan),
            "min": float(v.min()) if ok else np.nan,
            "max": float(v.max()) if ok else np.nan,
            "n": int(v.size),
        }
    return out


def paired_difference(a: Mapping, b: Mapping, key: str) -> dict[str, float | list[float] | int]:
    """``a[key] - b[key]`` with a paired percentile bootstrap CI.

    Args:
        a, b: :func:`evaluate` results on the same targets and examples (e.g. a quantized
            configuration and full precision of one run), with the same ``seed`` and
            ``n_bootstrap``: replicate i of each then resampled the same targets and
            examples, so the difference of replicate i is a replicate of the difference.
        key: a metric with kept replicates (``auc``, ``balanced_accuracy``, ``tpr@<t>_le``).
    Returns:
        ``{diff, ci: [low, high], ci_dropped, n_bootstrap}``; ``ci`` is NaN where either
        result has no replicates of ``key`` (no bootstrap, or an unresolved level).
    Raises:
        ValueError: the two results were not resampled alike (other seed, replicate
            count, or targets/examples/members), so a paired interval would be wrong.
    """
    for field in ("seed", "n_bootstrap", "n_targets", "n_examples", "n_members"):
        if a.get(field) != b.get(field):
            raise ValueError(
                f"paired_difference: results differ in {field} ({a.get(field)!r} vs "
                f"{b.get(field)!r}); only results resampled alike can be paired"
            )

    def value(r: Mapping) -> float:
        v = r.get(key)
        return np.nan if v is None else float(v)

    diff = value(a) - value(b)
    ra, rb = (a.get("replicates") or {}).get(key), (b.get("replicates") or {}).get(key)
    out: dict = {"diff": float(diff), "n_bootstrap": int(a.get("n_bootstrap") or 0)}
    if ra is None or rb is None or not math.isfinite(diff):
        return {**out, "ci": [np.nan, np.nan], "ci_dropped": out["n_bootstrap"]}
    d = np.asarray([np.nan if x is None else x for x in ra], dtype=np.float64) - np.asarray(
        [np.nan if x is None else x for x in rb], dtype=np.float64
    )
    return {**out, "ci": _interval(d), "ci_dropped": int(np.count_nonzero(~np.isfinite(d)))}


def summarize_accuracy(values: Sequence[float] | np.ndarray | torch.Tensor) -> dict[str, float]:
    """Mean, sample std (ddof 1; 0 for a single model), min and max of per-model accuracies."""
    v = np.asarray(
        values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64
    )
    v = v.reshape(-1)
    if v.size == 0:
        raise ValueError("values: expected at least one accuracy, got none")
    if not np.isfinite(v).all():
        raise ValueError("values: contains NaN/Inf")
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }
