"""Attacks against direct per-target implementations written from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptqx.attacks import ATTACKS, LIRA_ATTACKS, MODES, attack_statistic, attack_statistics, evaluate

try:  # scipy is not a ptqx dependency; the direct implementations fall back to math
    from scipy.special import log_ndtr as _scipy_log_ndtr
    from scipy.stats import norm as _scipy_norm
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_norm = _scipy_log_ndtr = None


def _logpdf(x, mu, sd):
    if _scipy_norm is not None:
        return _scipy_norm.logpdf(x, mu, sd)
    z = (x - mu) / sd
    return -0.5 * z * z - np.log(sd) - 0.5 * math.log(2 * math.pi)


def _log_ndtr(z):
    if _scipy_log_ndtr is not None:
        return _scipy_log_ndtr(z)
    return np.log(0.5 * np.vectorize(math.erfc)(-np.asarray(z) / math.sqrt(2)))


def _synthetic(n=7, m=40, v=2, *, seed=0, signal=1.0, balanced=True):
    rng = np.random.default_rng(seed)
    if balanced:
        keep = np.argsort(rng.random((n, m)), axis=0) < n // 2 + 1
    else:
        keep = rng.random((n, m)) < 0.5
    difficulty = rng.normal(size=(1, m, 1)) * 2
    noise = rng.normal(size=(n, m, v)) * rng.uniform(0.3, 1.5, size=(1, m, 1))
    scores = difficulty + noise + signal * keep[..., None]
    return scores, keep


def reference_models(keep, t, e):
    """bool [N]: the models whose scores judge target t on example e.

    Every model but t, less the highest-indexed model of the side t is not on: leaving
    out t alone would make t's own side one model smaller, and the side sizes would give
    t's membership away (see ``ptqx.ops.lira_loo_stats``).
    """
    n = keep.shape[0]
    use = np.arange(n) != t
    other = np.nonzero(keep[:, e] != keep[t, e])[0]
    if len(other):
        use[other.max()] = False
    return use


def _sides_ok(keep):
    """Every target has >= 2 IN and >= 2 OUT reference models for every example."""
    n, m = keep.shape
    for t in range(n):
        for e in range(m):
            k = keep[reference_models(keep, t, e), e]
            if k.sum() < 2 or (~k).sum() < 2:
                return False
    return True


def direct_lira(name, target, ref, keep, mode):
    """LiRA, one target at a time, from the LiRA paper's per-example Gaussians."""
    n, m, v = target.shape
    out = np.zeros((n, m))
    for t in range(n):
        mu_in, mu_out, sd_in, sd_out = (np.zeros((m, v)) for _ in range(4))
        c_in, c_out = np.zeros(m), np.zeros(m)
        all_in, all_out = [], []
        for e in range(m):
            use = reference_models(keep, t, e)
            xi, xo = ref[use & keep[:, e], e], ref[use & ~keep[:, e], e]
            c_in[e], c_out[e] = len(xi), len(xo)
            all_in.append(xi.ravel())
            all_out.append(xo.ravel())
            # A side with no model borrows the other side's statistics (documented).
            xi, xo = (xi if len(xi) else xo), (xo if len(xo) else xi)
            mu_in[e], mu_out[e] = np.median(xi, axis=0), np.median(xo, axis=0)
            sd_in[e], sd_out[e] = np.std(xi, axis=0), np.std(xo, axis=0)
        all_in, all_out = np.concatenate(all_in), np.concatenate(all_out)
        # An empty pool borrows the other side's (documented), as per-example sides do.
        all_in, all_out = (
            (all_in if all_in.size else all_out),
            (all_out if all_out.size else all_in),
        )
        # Unbiased pooled within-example variance: sum of squares / sum of (count - 1),
        # with the both-sides fallback where a side has no spread.
        ss_in = (c_in[:, None] * sd_in**2).sum()
        ss_out = (c_out[:, None] * sd_out**2).sum()
        dof_in = np.clip(c_in - 1, 0, None).sum() * v
        dof_out = np.clip(c_out - 1, 0, None).sum() * v
        both = math.sqrt((ss_in + ss_out) / max(dof_in + dof_out, 1))
        pooled_in = math.sqrt(ss_in / max(dof_in, 1)) or both
        pooled_out = math.sqrt(ss_out / max(dof_out, 1)) or both
        s = target[t]
        if mode == "faithful":
            eps = 1e-30
            if name == "lira_online":
                st = _logpdf(s, mu_in, sd_in + eps) - _logpdf(s, mu_out, sd_out + eps)
            elif name == "lira_online_fixed_var":
                g = np.std(all_in) + eps  # the IN sd on both sides (Quant-MIA)
                st = _logpdf(s, mu_in, g) - _logpdf(s, mu_out, g)
            elif name == "lira_offline":
                st = -_logpdf(s, mu_out, sd_out + eps)
            elif name == "lira_offline_fixed_var":
                st = -_logpdf(s, mu_out, np.std(all_out) + eps)
            else:
                st = s
        else:
            si = np.where(sd_in > 0, sd_in, pooled_in)
            so = np.where(sd_out > 0, sd_out, pooled_out)
            if name == "lira_online":
                st = _logpdf(s, mu_in, si) - _logpdf(s, mu_out, so)
            elif name == "lira_online_fixed_var":
                st = _logpdf(s, mu_in, pooled_in) - _logpdf(s, mu_out, pooled_out)
            elif name == "lira_offline":
                st = _log_ndtr((s - mu_out) / so)
            elif name == "lira_offline_fixed_var":
                st = _log_ndtr((s - mu_out) / pooled_out)
            else:
                st = s
        out[t] = st.mean(axis=1)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LIRA_ATTACKS)
@pytest.mark.parametrize("n_models", [4, 5, 8])
def test_lira_matches_direct_implementation(name, mode, n_models):
    # n = 4, 5: one or two models per side, so per-example sd can be 0 (ptqx: pooled sd).
    for seed in range(50):
        target, keep = _synthetic(n=n_models, m=23, seed=seed)
        if n_models <= 5 or _sides_ok(keep):
            break
    # Targets differ from references (a quantized target vs FP references).
    ref = target + np.random.default_rng(1).normal(size=target.shape) * 0.3
    got = attack_statistic(name, target, ref, keep, mode=mode)
    want = direct_lira(name, target, ref, keep, mode)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == keep.shape
    # Both in float64; the kernel's Welford moments and a different order of the
    # logpdf terms differ from numpy by rounding only. Faithful sd + 1e-30 at sd = 0
    # gives astronomically large values, compared relatively.
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_unbalanced_keep_matches_direct():
    target, keep = _synthetic(n=9, m=31, seed=5, balanced=False)
    keep[:, 0] = True
    keep[0, 0] = keep[1, 0] = keep[2, 0] = False  # three OUT models only
    for mode in MODES:
        got = attack_statistic("lira_online", target, target, keep, mode=mode)
        want = direct_lira("lira_online", target, target, keep, mode)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_target_is_left_out_of_its_references():
    target, keep = _synthetic(n=6, m=15, seed=2)
    base = attack_statistic("lira_online", target, target, keep)
    ref = target.copy()
    ref[2] += 5.0  # reference 2 never judges target 2
    moved = attack_statistic("lira_online", target, ref, keep)
    # Same multiset of reference scores; only the Welford merge order may differ.
    np.testing.assert_allclose(moved[2], base[2], rtol=1e-12)
    assert not np.allclose(moved[0], base[0])


@pytest.mark.parametrize("n_models", [4, 8, 16])
def test_null_target_scores_chance(n_models):
    # Target scores that carry no membership signal (the same for members and not) while
    # the reference scores do: every attack must score chance. With the target's own
    # side one model short (leave-one-out alone) online RMIA read AUC 0.56 at N = 16,
    # LiRA 0.39-0.48, and faithful LiRA at N = 4 exactly 0.
    rng = np.random.default_rng(n_models)
    m, v = 3000, 2
    keep = np.argsort(rng.random((n_models, m)), axis=0) < n_models // 2
    difficulty = rng.normal(0, 2, size=(1, m, 1))
    ref = difficulty + 3.0 * keep[..., None] + rng.normal(size=(n_models, m, v))
    target = difficulty + 1.5 + rng.normal(size=(n_models, m, v))
    for mode in MODES:
        stats = attack_statistics(None, target, ref, keep, mode=mode)
        stats["rmia_online"] = attack_statistic("rmia", target, ref, keep, offline=False)
        for name, s in stats.items():
            auc = evaluate(s, keep, n_bootstrap=0)["auc"]
            # sd of the AUC of n_models * m pairs of chance scores ~ 0.003-0.005.
            assert abs(auc - 0.5) < 0.02, (mode, name, auc)


def test_modes_differ_where_they_should():
    target, keep = _synthetic(n=8, m=60, seed=3)
    ref = target.copy()
    # Scores far BELOW the OUT distribution: the two-sided (faithful) offline test calls
    # them members, the one-sided (ptqx) one calls them non-members.
    low = target.copy()
    low[:, :10] -= 50
    f = attack_statistic("lira_offline", low, ref, keep, mode="faithful")
    p = attack_statistic("lira_offline", low, ref, keep, mode="ptqx")
    rest_f, rest_p = np.median(f[:, 10:]), np.median(p[:, 10:])
    assert (f[:, :10] > rest_f).all() and (p[:, :10] < rest_p).all()
    for name in ("lira_online_fixed_var", "lira_offline", "lira_offline_fixed_var"):
        f = attack_statistic(name, target, ref, keep, mode="faithful")
        p = attack_statistic(name, target, ref, keep, mode="ptqx")
        assert not np.allclose(f, p), name
    # Where nothing differs, nothing may differ.
    for name in ("global_threshold", "rmia", "loss"):
        f = attack_statistic(name, target, ref, keep, mode="faithful")
        p = attack_statistic(name, target, ref, keep, mode="ptqx")
        np.testing.assert_array_equal(f, p)
    assert ATTACKS["lira_offline"].label("faithful") != ATTACKS["lira_offline"].label("ptqx")
    assert "two-sided" in ATTACKS["lira_offline"].label("faithful")


def test_empty_side_is_nan_free_and_neutral():
    target, keep = _synthetic(n=6, m=12, seed=4)
    keep[:, 0] = True  # IN for every model: no OUT reference for any target
    for name in ATTACKS:
        for mode in MODES:
            s = attack_statistic(name, target, target, keep, mode=mode)
            assert np.isfinite(s).all(), (name, mode)
    # Online: the OUT side borrows the IN statistics, so the log ratio is exactly 0.
    s = attack_statistic("lira_online", target, target, keep)
    np.testing.assert_array_equal(s[:, 0], 0.0)


def _direct_rmia(target, ref, keep, *, offline, a, gamma):
    n, m, _ = target.shape
    pt = (1 / (1 + np.exp(-target))).mean(2)
    pr = (1 / (1 + np.exp(-ref))).mean(2)
    out = np.zeros((n, m))
    for t in range(n):
        px = np.zeros(m)
        for e in range(m):
            use = reference_models(keep, t, e)
            if offline:
                ko = use & ~keep[:, e]
                mean_out = pr[ko, e].mean()
                px[e] = ((1 + a) * mean_out + (1 - a)) / 2
            else:
                px[e] = pr[use, e].mean()
        ratio = pt[t] / px
        pool = np.nonzero(~keep[t])[0]
        for e in range(m):
            z = pool[pool != e]
            out[t, e] = np.mean(ratio[e] / ratio[z] > gamma)
    return out


@pytest.mark.parametrize("offline", [True, False])
@pytest.mark.parametrize("gamma", [1.0, 0.8, 1.5])
def test_rmia_matches_direct_implementation(offline, gamma):
    target, keep = _synthetic(n=6, m=30, seed=6)
    ref = target + np.random.default_rng(2).normal(size=target.shape) * 0.2
    got = attack_statistic("rmia", target, ref, keep, offline=offline, offline_a=0.4, gamma=gamma)
    want = _direct_rmia(target, ref, keep, offline=offline, a=0.4, gamma=gamma)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_rmia_finds_planted_signal_and_population_sampling():
    target, keep = _synthetic(n=8, m=400, seed=7, signal=1.5)
    s = attack_statistic("rmia", target, target, keep)
    assert s[keep].mean() > s[~keep].mean()
    assert evaluate(s, keep, n_bootstrap=0)["auc"] > 0.7
    a = attack_statistic("rmia", target, target, keep, n_population=50, seed=1)
    b = attack_statistic("rmia", target, target, keep, n_population=50, seed=1)
    c = attack_statistic("rmia", target, target, keep, n_population=50, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert evaluate(a, keep, n_bootstrap=0)["auc"] > 0.7


def test_loss_and_global_threshold():
    target, keep = _synthetic(n=4, m=9, seed=8)
    loss = attack_statistic("loss", target, target, keep)
    want = (-np.log1p(np.exp(-target))).mean(2)  # log sigmoid(score) = -cross-entropy
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    g = attack_statistic("global_threshold", target, target, keep)
    np.testing.assert_allclose(g, target.mean(2), rtol=1e-15)


def test_lira_online_beats_global_threshold_on_planted_signal():
    target, keep = _synthetic(n=16, m=500, seed=9, signal=0.8)
    stats = attack_statistics(None, target, target, keep)
    aucs = {k: evaluate(v, keep, n_bootstrap=0)["auc"] for k, v in stats.items()}
    assert set(aucs) == set(ATTACKS)
    assert aucs["lira_online"] > aucs["global_threshold"] + 0.1


def test_batched_matches_single_and_types(device):
    target, keep = _synthetic(n=5, m=17, seed=10)
    batch = attack_statistics(
        None, target, target, keep, mode="faithful", options={"rmia": {"gamma": 1.2}}
    )
    for name in ATTACKS:
        opts = {"gamma": 1.2} if name == "rmia" else {}
        one = attack_statistic(name, target, target, keep, mode="faithful", **opts)
        np.testing.assert_array_equal(batch[name], one)
    # Torch in -> torch out, on the input's device, same values.
    t = torch.from_numpy(target).to(device)
    k = torch.from_numpy(keep).to(device)
    for name in ATTACKS:
        got = attack_statistic(name, t, t, k)
        assert isinstance(got, torch.Tensor) and got.device.type == device.type
        np.testing.assert_allclose(
            got.cpu().numpy(), attack_statistic(name, target, target, keep), rtol=1e-10, atol=1e-12
        )
    # float32 scores are accepted and promoted.
    f32 = attack_statistic(
        "lira_online", target.astype(np.float32), target.astype(np.float32), keep
    )
    assert f32.dtype == np.float64


def test_bad_inputs():
    target, keep = _synthetic(n=5, m=8, seed=11)
    with pytest.raises(ValueError, match="name"):
        attack_statistic("lira_nope", target, target, keep)
    with pytest.raises(ValueError, match="mode"):
        attack_statistic("lira_online", target, target, keep, mode="paper")
    with pytest.raises(ValueError, match="ref_scores"):
        attack_statistic("lira_online", target, target[:, :7], keep)
    with pytest.raises(ValueError, match="target_scores"):
        attack_statistic("lira_online", target[..., 0], target[..., 0], keep)
    bad = target.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="target_scores"):
        attack_statistic("lira_online", bad, target, keep)
    with pytest.raises(ValueError, match="ref_scores"):
        attack_statistic("lira_online", target, bad, keep)
    with pytest.raises(TypeError, match="keep"):
        attack_statistic("lira_online", target, target, keep.astype(np.int64))
    with pytest.raises(ValueError, match="keep"):
        attack_statistic("lira_online", target, target, keep[:, :5])
    with pytest.raises(ValueError, match="at least 4 models"):
        attack_statistic("lira_online", target[:3], target[:3], keep[:3])
    with pytest.raises(TypeError, match="target_scores"):
        attack_statistic("lira_online", target.tolist(), target, keep)
    with pytest.raises(TypeError, match="target_scores"):
        attack_statistic("loss", target.astype(np.int64), target.astype(np.int64), keep)
    with pytest.raises(ValueError, match="offline_a"):
        attack_statistic("rmia", target, target, keep, offline_a=1.5)
    with pytest.raises(ValueError, match="gamma"):
        attack_statistic("rmia", target, target, keep, gamma=0)
    with pytest.raises(ValueError, match="n_population"):
        attack_statistic("rmia", target, target, keep, n_population=0)
    with pytest.raises(ValueError, match="name"):
        attack_statistics(["lira_online"], target, target, keep, options={"nope": {}})
