"""Metrics against hand-computed ROC cases, sklearn, and explicit resampling."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics
import torch

from ptqx.attacks import evaluate, roc_curve, summarize_accuracy
from ptqx.attacks.metrics import _metrics, _resolved, _SortedPairs, paired_difference


def _ev(stat, keep, **kw):
    return evaluate(
        np.asarray(stat, float).reshape(1, -1),
        np.asarray(keep, bool).reshape(1, -1),
        n_bootstrap=0,
        **kw,
    )


def _readings(stat, keep, fprs):
    """The TPR readings before the resolution check (levels finer than 1 / non-members)."""
    sp = _SortedPairs(np.asarray(stat, float), np.asarray(keep, bool))
    ones = np.ones((1, sp.labels.size))
    m = _metrics(sp.cumulative(ones, sp.labels), sp.cumulative(ones, 1 - sp.labels), fprs)
    return {k: float(v[0]) for k, v in m.items()}


def test_hand_computed_roc():
    # Sorted: 4(+) 3(-) 2(+) 1(-): vertices (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    stat, keep = [4, 3, 2, 1], [1, 0, 1, 0]
    fpr, tpr, thr = roc_curve(np.array([stat], float), np.array([keep], bool))
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 4, 3, 2, 1])
    r = _ev(stat, keep, fprs=(0.4, 0.6))
    assert r["auc"] == 0.75
    assert r["balanced_accuracy"] == 0.75
    # First vertex reaching 0.75 is (0, .5): TP 1, FP 0, FN 1 -> F1 = 2/3.
    assert r["f1"] == pytest.approx(2 / 3)
    # Two non-members resolve FPR 0.5, not 0.4.
    assert r["unresolved_fprs"] == [0.4] and np.isnan(r["tpr@0.4_le"])
    raw = _readings(stat, keep, (0.4,))
    assert raw["tpr@0.4"] == 0.5 and raw["tpr@0.4_interp"] == 0.5 and raw["tpr@0.4_le"] == 0.5
    assert r["tpr@0.6"] == 1.0 and r["tpr@0.6_le"] == 1.0
    # Between (.5, 1) and (1, 1): flat.
    assert r["tpr@0.6_interp"] == 1.0


def test_ties():
    # Tied pair 1(+),1(-) enters together: vertices (0,0) (0,.5) (.5,1) (1,1).
    stat, keep = [2, 1, 1, 0], [1, 1, 0, 0]
    fpr, tpr, _ = roc_curve(np.array([stat], float), np.array([keep], bool))
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    assert _ev(stat, keep)["auc"] == 0.875  # Mann-Whitney: (1 + 1 + 1/2 + 1) / 4
    r = _readings(stat, keep, (0.25,))
    assert r["tpr@0.25"] == 0.5  # last vertex with FPR < 0.25 is (0, .5)
    assert r["tpr@0.25_le"] == 0.5  # the tied group reaches FPR .5 at once
    assert r["tpr@0.25_interp"] == 0.75  # halfway along the tied segment
    # All tied: the diagonal.
    r = _ev([1, 1, 1, 1], [1, 0, 1, 0], fprs=(0.5,))
    assert r["auc"] == 0.5 and r["balanced_accuracy"] == 0.5 and r["tpr@0.5"] == 0.0
    assert r["tpr@0.5_le"] == 0.0 and r["tpr@0.5_interp"] == 0.5


def test_perfect_and_inverted():
    r = _ev([5, 4, 3, 2, 1, 0], [1, 1, 1, 0, 0, 0], fprs=(0.34,))
    assert r["auc"] == 1 and r["balanced_accuracy"] == 1 and r["f1"] == 1
    assert r["tpr@0.34_le"] == 1 and r["tpr@0.34"] == 1 and r["tpr@0.34_interp"] == 1
    r = _ev([0, 1, 2, 3, 4, 5], [1, 1, 1, 0, 0, 0], fprs=(0.34,))
    assert r["auc"] == 0 and r["balanced_accuracy"] == 0.5 and r["tpr@0.34_le"] == 0


def test_random_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    keep = rng.random((6, 500)) < 0.5
    stat = np.round(rng.normal(size=(6, 500)) + 0.3 * keep, 1)  # many ties
    r = evaluate(stat, keep, n_bootstrap=0)
    assert r["auc"] == pytest.approx(
        sklearn.metrics.roc_auc_score(keep.ravel(), stat.ravel()), abs=1e-12
    )
    fpr, tpr, thr = roc_curve(stat, keep)
    sf, st, sthr = sklearn.metrics.roc_curve(keep.ravel(), stat.ravel(), drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    np.testing.assert_allclose(thr[1:], sthr[1:])
    # Quant-MIA's reading on sklearn's default (thinned) curve; continuous scores so
    # thinning only removes collinear horizontal/vertical points.
    cont = rng.normal(size=(6, 500)) + 0.5 * keep
    sf, st, _ = sklearn.metrics.roc_curve(keep.ravel(), cont.ravel())
    r = evaluate(cont, keep, n_bootstrap=0)
    for t in (1e-3, 1e-2):
        assert r[f"tpr@{t:g}"] == st[np.where(sf < t)[0][-1]]
    assert r["balanced_accuracy"] == pytest.approx(np.max(1 - (sf + (1 - st)) / 2), abs=1e-15)
    # Random statistic: AUC near 1/2.
    noise = rng.normal(size=(6, 500))
    assert abs(evaluate(noise, keep, n_bootstrap=0)["auc"] - 0.5) < 0.03


def test_weighted_replicate_equals_explicit_resampling():
    # A bootstrap replicate weights pair (n, m) by (draws of n) * (draws of m); it must
    # equal the metrics of the explicitly resampled (duplicated) pairs.
    rng = np.random.default_rng(1)
    n, m = 5, 60
    keep = rng.random((n, m)) < 0.5
    stat = np.round(rng.normal(size=(n, m)) + keep, 1)
    a_t = rng.multinomial(n, np.full(n, 1 / n))
    a_e = rng.multinomial(m, np.full(m, 1 / m))
    w = np.outer(a_t, a_e)
    sp = _SortedPairs(stat, keep)
    ws = w.reshape(-1)[sp.order][None]
    got = _metrics(sp.cumulative(ws, sp.labels), sp.cumulative(ws, 1 - sp.labels), (0.05,))
    rep_s = np.repeat(stat.ravel(), w.ravel())
    rep_k = np.repeat(keep.ravel(), w.ravel())
    want = evaluate(rep_s[None], rep_k[None], n_bootstrap=0, fprs=(0.05,))
    for key in ("auc", "balanced_accuracy", "f1", "tpr@0.05", "tpr@0.05_interp"):
        assert got[key][0] == pytest.approx(want[key], abs=1e-12), key
    assert want["auc"] == pytest.approx(sklearn.metrics.roc_auc_score(rep_k, rep_s), abs=1e-12)


def test_bootstrap_ci_seeded_and_sensible():
    rng = np.random.default_rng(2)
    keep = rng.random((8, 300)) < 0.5
    stat = rng.normal(size=(8, 300)) + keep
    a = evaluate(stat, keep, n_bootstrap=100, seed=3)
    b = evaluate(stat, keep, n_bootstrap=100, seed=3)
    c = evaluate(stat, keep, n_bootstrap=100, seed=4)
    assert a == b and a["ci"] != c["ci"]
    for key in ("auc", "balanced_accuracy", "f1", "tpr@0.01_interp"):
        lo, hi = a["ci"][key]
        assert lo <= a[key] <= hi and hi > lo, key
    assert a["n_bootstrap"] == 100 and a["ci_level"] == 0.95
    assert evaluate(stat, keep, n_bootstrap=0)["ci"] == {}
    assert (a["n_members"], a["n_nonmembers"]) == (int(keep.sum()), int((~keep).sum()))
    assert set(a["ci_dropped"].values()) == {0}


def test_bootstrap_reports_replicates_without_a_member():
    # One target, one member among 4 examples: a resample misses the member with
    # probability (3/4)^4 ~ 0.32, and such a replicate has no AUC; it must be counted.
    keep = np.array([[True, False, False, False]])
    stat = np.array([[2.0, 0.0, 1.0, -1.0]])
    r = evaluate(stat, keep, n_bootstrap=400, seed=0)
    dropped = r["ci_dropped"]["auc"]
    assert 0.2 * 400 < dropped < 0.45 * 400
    assert r["ci_dropped"]["auc"] == r["ci_dropped"]["balanced_accuracy"]


def test_subset_rates():
    rng = np.random.default_rng(5)
    n, m = 6, 400
    keep = rng.random((n, m)) < 0.5
    calib = keep & (rng.random((n, m)) < 0.3)
    stat = rng.normal(size=(n, m)) + 1.0 * keep + 2.0 * calib  # calibration leaks more
    subsets = {"calibration members": calib, "other members": keep & ~calib, "non-members": ~keep}
    r = evaluate(stat, keep, n_bootstrap=50, subsets=subsets, fprs=(0.01, 0.1))
    fpr, _, thr = roc_curve(stat, keep)
    for t in (0.01, 0.1):
        tau = thr[np.where(fpr < t)[0][-1]]
        for name, mask in subsets.items():
            want = (stat[mask] >= tau).mean()
            assert r["subsets"][name][f"rate@{t:g}"] == pytest.approx(want, abs=1e-15)
        assert r["subsets"]["non-members"][f"rate@{t:g}"] < t  # an FPR below the level
        lo, hi = r["subsets"]["calibration members"]["ci"][f"rate@{t:g}"]
        assert lo <= r["subsets"]["calibration members"][f"rate@{t:g}"] <= hi
    s = r["subsets"]
    assert s["calibration members"]["rate@0.1"] > s["other members"]["rate@0.1"]
    assert s["calibration members"]["n_pairs"] == int(calib.sum())


def test_torch_inputs_and_roc_thinning():
    rng = np.random.default_rng(6)
    keep = rng.random((4, 2000)) < 0.5
    stat = rng.normal(size=(4, 2000)) + keep
    a = evaluate(torch.from_numpy(stat), torch.from_numpy(keep), n_bootstrap=0)
    b = evaluate(stat, keep, n_bootstrap=0)
    assert a == b
    fpr, tpr, thr = roc_curve(stat, keep, max_points=50)
    assert fpr.size <= 52 and fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()


def test_summarize_accuracy():
    s = summarize_accuracy([0.9, 0.8, 0.7])
    assert s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    assert summarize_accuracy(torch.tensor([0.5]))["std"] == 0.0
    with pytest.raises(ValueError, match="values"):
        summarize_accuracy([])
    with pytest.raises(ValueError, match="values"):
        summarize_accuracy([0.5, float("nan")])


def test_bad_inputs():
    rng = np.random.default_rng(7)
    keep = rng.random((3, 10)) < 0.5
    stat = rng.normal(size=(3, 10))
    bad = stat.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="stat"):
        evaluate(bad, keep)
    with pytest.raises(TypeError, match="keep"):
        evaluate(stat, keep.astype(int))
    with pytest.raises(ValueError, match="keep"):
        evaluate(stat, keep[:, :5])
    with pytest.raises(ValueError, match="keep"):
        evaluate(stat, np.ones_like(keep))
    with pytest.raises(ValueError, match="keep: need both members and non-members"):
        roc_curve(stat, np.zeros_like(keep))
    with pytest.raises(ValueError, match="fprs"):
        evaluate(stat, keep, fprs=(0.0,))
    with pytest.raises(ValueError, match="fprs"):
        evaluate(stat, keep, fprs=(1.5,))
    with pytest.raises(ValueError, match="n_bootstrap"):
        evaluate(stat, keep, n_bootstrap=-1)
    with pytest.raises(ValueError, match="stat"):
        evaluate(stat.ravel(), keep.ravel())
    with pytest.raises(ValueError, match="subsets"):
        evaluate(stat, keep, subsets={"x": keep[:, :3]})
    with pytest.raises(TypeError, match="stat"):
        evaluate(stat.tolist(), keep)
    with pytest.raises(ValueError, match="max_points"):
        roc_curve(stat, keep, max_points=1)
    for v in (np.inf, -np.inf):  # orderable, but sklearn refuses them too: said, not sorted
        bad[0, 0] = v
        with pytest.raises(ValueError, match="NaN/Inf"):
            evaluate(bad, keep)
        with pytest.raises(ValueError, match="NaN/Inf"):
            roc_curve(bad, keep)


def test_tpr_at_fpr_is_the_best_threshold_with_fpr_at_most_the_level():
    # Sorted: 5(+) 4(-) 3(+) 2(-) 1(-) 0(-): vertices (0,.5) (.25,.5) (.25,1) ... A
    # threshold at 3 flags both members with FPR exactly 1/4: TPR@0.25 is 1, not the 0.5
    # of Quant-MIA's strict "FPR < t" reading.
    r = _ev([5, 4, 3, 2, 1, 0], [1, 0, 1, 0, 0, 0], fprs=(0.25, 0.3))
    assert r["tpr@0.25_le"] == 1.0 and r["tpr@0.25"] == 0.5
    assert r["tpr@0.3_le"] == 1.0 and r["tpr@0.3"] == 1.0
    # Against sklearn on tied scores: max TPR over its (unthinned) points with FPR <= t.
    rng = np.random.default_rng(8)
    keep = rng.random((5, 800)) < 0.5
    stat = np.round(rng.normal(size=(5, 800)) + 0.8 * keep, 1)
    sf, st, _ = sklearn.metrics.roc_curve(keep.ravel(), stat.ravel(), drop_intermediate=False)
    n_neg = int((~keep).sum())
    fprs = (1 / n_neg, 3 / n_neg, 1e-2, 0.1, 0.5)
    r = evaluate(stat, keep, n_bootstrap=0, fprs=fprs)
    for t in fprs:
        assert r[f"tpr@{t:g}_le"] == st[sf <= t].max(), t
        assert r[f"tpr@{t:g}"] == st[sf < t].max(), t
    # Constant scores: one tied group, the diagonal; nothing flagged below FPR 1.
    c = np.zeros((5, 800))
    r = evaluate(c, keep, n_bootstrap=0, fprs=(0.5,))
    assert r["auc"] == sklearn.metrics.roc_auc_score(keep.ravel(), c.ravel()) == 0.5
    assert r["tpr@0.5_le"] == 0.0 and r["balanced_accuracy"] == 0.5


def test_fpr_below_the_resolution_is_not_reported_as_a_number():
    # 1000 non-member pairs resolve FPR steps of 1e-3: at 1e-4 and 1e-5 no false positive
    # fits, and a number there would be the TPR at FPR 0 (it used to be printed as TPR@1e-4).
    rng = np.random.default_rng(9)
    keep = np.zeros((2, 1000), bool)
    keep[0, :500] = keep[1, 500:] = True
    stat = rng.normal(size=(2, 1000)) + 1.5 * keep
    calib = keep & (rng.random(keep.shape) < 0.2)
    r = evaluate(
        stat, keep, fprs=(1e-5, 1e-4, 1e-3, 1e-2), n_bootstrap=20, subsets={"calib": calib}
    )
    assert r["n_nonmembers"] == 1000 and r["fpr_resolution"] == 1e-3
    assert r["unresolved_fprs"] == [1e-5, 1e-4]
    for t in ("1e-05", "0.0001"):
        for sfx in ("_le", "", "_interp"):
            assert np.isnan(r[f"tpr@{t}{sfx}"])
            assert f"tpr@{t}{sfx}" not in r["ci"] and f"tpr@{t}{sfx}" not in r["ci_dropped"]
        assert np.isnan(r["subsets"]["calib"][f"rate@{t}"])
        assert f"rate@{t}" not in r["subsets"]["calib"]["ci"]
        assert f"tpr@{t}_le" not in r["replicates"]
    # 1e-3 is resolved: the TPR at one false positive (sklearn, unthinned).
    sf, st, _ = sklearn.metrics.roc_curve(keep.ravel(), stat.ravel(), drop_intermediate=False)
    assert r["tpr@0.001_le"] == st[sf <= 1e-3].max() > st[sf == 0].max()
    lo, hi = r["ci"]["tpr@0.001_le"]
    assert lo <= r["tpr@0.001_le"] <= hi
    # Products that land a hair below an integer still count.
    assert _resolved(1 / 49, 49) and _resolved(1e-3, 1000) and not _resolved(9.99e-4, 1000)


def test_paired_difference_uses_the_same_resamples():
    rng = np.random.default_rng(10)
    keep = rng.random((6, 400)) < 0.5
    a = rng.normal(size=(6, 400)) + keep
    b = a + 0.3 * rng.normal(size=(6, 400))
    ra = evaluate(a, keep, n_bootstrap=100, seed=4)
    rb = evaluate(b, keep, n_bootstrap=100, seed=4)
    # A monotone transform ranks the pairs alike: every replicate agrees, the difference is 0.
    same = paired_difference(ra, evaluate(3 * a + 1, keep, n_bootstrap=100, seed=4), "auc")
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["ci_dropped"] == 0
    d = paired_difference(ra, rb, "auc")
    assert d["diff"] == pytest.approx(ra["auc"] - rb["auc"])
    reps = np.asarray(ra["replicates"]["auc"]) - np.asarray(rb["replicates"]["auc"])
    assert d["ci"] == [pytest.approx(np.percentile(reps, q)) for q in (2.5, 97.5)]
    # Pairing removes the shared resampling noise: narrower than either marginal interval.
    width = d["ci"][1] - d["ci"][0]
    assert width < 0.5 * min(np.diff(ra["ci"]["auc"])[0], np.diff(rb["ci"]["auc"])[0])
    # Replicate 0 is the explicitly resampled data set of the first draws of the seed.
    g = np.random.default_rng(4)
    a_t = g.multinomial(6, np.full(6, 1 / 6), size=100)[0]
    a_e = g.multinomial(400, np.full(400, 1 / 400), size=100)[0]
    w = np.outer(a_t, a_e).ravel()
    want = sklearn.metrics.roc_auc_score(np.repeat(keep.ravel(), w), np.repeat(a.ravel(), w))
    assert ra["replicates"]["auc"][0] == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="seed"):
        paired_difference(ra, evaluate(b, keep, n_bootstrap=100, seed=5), "auc")
    with pytest.raises(ValueError, match="n_bootstrap"):
        paired_difference(ra, evaluate(b, keep, n_bootstrap=50, seed=4), "auc")
    # Without replicates there is a difference but no interval.
    z = paired_difference(
        evaluate(a, keep, n_bootstrap=0, seed=4), evaluate(b, keep, n_bootstrap=0, seed=4), "auc"
    )
    assert z["diff"] == pytest.approx(d["diff"]) and np.isnan(z["ci"]).all()


def test_per_target_summary_is_over_each_targets_own_roc():
    rng = np.random.default_rng(11)
    keep = np.asarray([rng.permutation(np.arange(600) < 300) for _ in range(5)])
    stat = rng.normal(size=(5, 600)) + keep * rng.uniform(0.5, 2.0, size=(5, 1))
    r = evaluate(stat, keep, n_bootstrap=0, fprs=(1e-2, 1e-3))
    own = [
        evaluate(stat[i : i + 1], keep[i : i + 1], n_bootstrap=0, fprs=(1e-2,)) for i in range(5)
    ]
    for key in ("auc", "tpr@0.01_le"):
        v = np.array([o[key] for o in own])
        pt = r["per_target"][key]
        assert pt["mean"] == pytest.approx(v.mean()) and pt["std"] == pytest.approx(v.std(ddof=1))
        assert (pt["min"], pt["max"], pt["n"]) == (v.min(), v.max(), 5)
    # 300 non-members per target cannot resolve 1e-3 (the pooled 1500 can).
    assert np.isnan(r["per_target"]["tpr@0.001_le"]["mean"]) and not np.isnan(r["tpr@0.001_le"])


def test_bootstrap_interval_covers_a_known_truth():
    # Crossed design: target, example and per-example vulnerability effects, balanced
    # membership. The truth is the population's pooled value (fresh target and example per
    # pair). The two-way bootstrap is conservative here (about 98-100%, module docstring).
    from ptqx.train import balanced_keep

    rng = np.random.default_rng(12)
    big = 1_000_000
    pos = rng.normal(0, 0.3, big) + rng.normal(0, 0.5, big) + rng.normal(1, 0.8, big)
    neg = rng.normal(0, 0.3, big) + rng.normal(0, 0.5, big)
    pos, neg = pos + rng.normal(size=big), np.sort(neg + rng.normal(size=big))
    truth = {
        "auc": np.searchsorted(neg, pos).mean() / big,
        "tpr@0.01_le": (pos > np.quantile(neg, 0.99)).mean(),
    }
    hits = dict.fromkeys(truth, 0)
    reps = 60
    for r in range(reps):
        keep = np.asarray(balanced_keep(16, 250, seed=r), dtype=bool)
        stat = (
            rng.normal(0, 0.3, (16, 1))
            + rng.normal(0, 0.5, (1, 250))
            + keep * rng.normal(1, 0.8, (1, 250))
            + rng.normal(size=(16, 250))
        )
        res = evaluate(stat, keep, fprs=(0.01,), n_bootstrap=100, seed=r)
        for key, want in truth.items():
            lo, hi = res["ci"][key]
            hits[key] += lo <= want <= hi
    for key, h in hits.items():
        assert h / reps >= 0.9, (key, h / reps)
