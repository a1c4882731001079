"""The leave-one-out LiRA statistics op: native kernels against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ptqx.ops
from ptqx.ops import LOO_STAT_NAMES, lira_loo_stats, reference

# (N models, M examples, V views): 1 model, N = 2 and 3, odd and even sides, primes,
# one example, no example, no view.
SHAPES = [
    (1, 4, 2),
    (2, 7, 1),
    (3, 11, 2),
    (4, 5, 3),
    (8, 13, 2),
    (17, 31, 2),
    (64, 37, 2),
    (5, 1, 1),
    (6, 0, 2),
    (3, 4, 0),
]


def _data(n, m, v, *, seed=0, dtype=torch.float64, device="cpu", ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, v, generator=g, dtype=torch.float64) * 3 + 1
    if ties:  # few distinct values: many equal scores inside a side
        x = torch.round(x)
    keep = torch.rand(n, m, generator=g) < 0.5
    return x.to(dtype).to(device), keep.to(device)


def _compare(x, keep, *, rtol):
    got = lira_loo_stats(x, keep)
    stats, counts = reference.lira_loo_stats(x.cpu(), keep.cpu())
    for i, name in enumerate(LOO_STAT_NAMES):
        want = stats[i]
        have = getattr(got, name).cpu()
        if name.startswith("median"):
            # Medians pick and average the same two values: exact.
            assert torch.equal(have, want), name
        else:
            # Welford/Chan (CPU) or two-pass (CUDA) vs torch.sum: rounding only.
            scale = x.abs().max().item() if x.numel() else 1.0
            torch.testing.assert_close(have, want, rtol=rtol, atol=rtol * scale, msg=name)
    assert torch.equal(got.count_in.cpu(), counts[0])
    assert torch.equal(got.count_out.cpu(), counts[1])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_reference(device, shape):
    x, keep = _data(*shape, device=device)
    _compare(x, keep, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_matches_reference_dtypes_and_ties(device, dtype):
    x, keep = _data(9, 23, 2, seed=3, dtype=dtype, device=device, ties=True)
    got = lira_loo_stats(x, keep)
    assert got.median_in.dtype == dtype
    _compare(x, keep, rtol=1e-12 if dtype == torch.float64 else 1e-6)


def test_kernel_balanced_keep_and_degenerate_sides(device):
    # Balanced keep (each example IN for half the models), plus examples that are IN for
    # all models and for none: the side without the target is then empty for every
    # target, and must borrow the other side's statistics, NaN-free.
    n, m, v = 6, 10, 2
    rng = np.random.default_rng(0)
    keep = np.argsort(rng.random((n, m)), axis=0) < n // 2
    keep[:, 0] = True
    keep[:, 1] = False
    keep[:5, 2] = True  # IN for all but the last model
    keep[5, 2] = False
    x = torch.from_numpy(rng.normal(size=(n, m, v))).to(device)
    k = torch.from_numpy(keep).to(device)
    got = lira_loo_stats(x, k)
    for name in LOO_STAT_NAMES:
        assert torch.isfinite(getattr(got, name)).all(), name
    assert (got.count_out[:, 0] == 0).all() and (got.count_in[:, 1] == 0).all()
    assert torch.equal(got.median_out[:, 0], got.median_in[:, 0])
    assert torch.equal(got.std_in[:, 1], got.std_out[:, 1])
    # Example 2: for target 5 (OUT) the OUT side is empty -> copies the IN side.
    assert got.count_out[5, 2] == 0 and torch.equal(got.mean_out[5, 2], got.mean_in[5, 2])
    _compare(x, k, rtol=1e-12)


def test_known_values_even_and_odd():
    # 5 models on one example: IN = models 0, 1, 2 (scores 1, 5, 3), OUT = 3, 4 (2, 10).
    # Each target leaves out itself and the highest-indexed model of the other side.
    x = torch.tensor([1.0, 5.0, 3.0, 2.0, 10.0], dtype=torch.float64).reshape(5, 1, 1)
    keep = torch.tensor([True, True, True, False, False]).reshape(5, 1)
    s = lira_loo_stats(x, keep)
    # Target 0 (IN) leaves IN {5, 3}: median 4 (mean of the middle pair), std 1 (ddof 0);
    # OUT loses model 4: {2}.
    assert s.median_in[0, 0, 0] == 4 and s.std_in[0, 0, 0] == 1 and s.count_in[0, 0] == 2
    assert s.median_out[0, 0, 0] == 2 and s.std_out[0, 0, 0] == 0 and s.count_out[0, 0] == 1
    # Target 3 (OUT) leaves OUT {10}: one value, std 0; IN loses model 2: {1, 5}.
    assert s.median_out[3, 0, 0] == 10 and s.std_out[3, 0, 0] == 0 and s.count_out[3, 0] == 1
    assert s.median_in[3, 0, 0] == 3 and s.std_in[3, 0, 0] == 2 and s.count_in[3, 0] == 2
    # Target 2 is the highest-indexed IN model itself: OUT still loses model 4.
    assert s.mean_in[2, 0, 0] == 3 and s.mean_out[2, 0, 0] == 2


@pytest.mark.parametrize("n", [4, 5, 8, 16])
def test_side_sizes_do_not_depend_on_target_membership(device, n):
    # With leave-one-out alone the side a target is on has one model fewer, which tells an
    # attack the target's membership; every target must see the same two counts.
    rng = np.random.default_rng(n)
    keep = torch.from_numpy(np.argsort(rng.random((n, 50)), axis=0) < n // 2).to(device)
    x = torch.from_numpy(rng.normal(size=(n, 50, 2))).to(device)
    got = lira_loo_stats(x, keep)
    k_in = keep.sum(0)
    assert torch.equal(got.count_in, (k_in - 1).expand(n, -1))
    assert torch.equal(got.count_out, (n - k_in - 1).expand(n, -1))


def test_variance_without_cancellation():
    # One huge outlier on the IN side: removing it must leave the tiny spread of the
    # rest intact (sum-of-squares downdating would lose all of its digits).
    n = 9
    x = torch.full((n, 1, 1), 1.0, dtype=torch.float64)
    x[:, 0, 0] += torch.arange(n, dtype=torch.float64) * 1e-9
    x[0, 0, 0] = 1e9
    keep = torch.ones(n, 1, dtype=torch.bool)
    s = lira_loo_stats(x, keep)
    want = np.std(x[1:, 0, 0].numpy())
    assert abs(s.std_in[0, 0, 0].item() - want) < 1e-6 * want


def test_opcheck(device):
    x, keep = _data(5, 7, 2, device=device)
    torch.library.opcheck(torch.ops.ptqx.lira_loo_stats, (x, keep))


def test_bad_inputs():
    x, keep = _data(4, 6, 2)
    with pytest.raises(ValueError, match="ref_scores"):
        lira_loo_stats(x[..., 0], keep)
    with pytest.raises(TypeError, match="ref_scores"):
        lira_loo_stats(x.to(torch.int64), keep)
    with pytest.raises(TypeError, match="keep"):
        lira_loo_stats(x, keep.to(torch.int64))
    with pytest.raises(ValueError, match="keep"):
        lira_loo_stats(x, keep[:, :5])
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="ref_scores"):
        lira_loo_stats(bad, keep)
    with pytest.raises(ValueError, match="ref_scores"):
        lira_loo_stats(x[:0], keep[:0])


def test_native_kernel_serves_cpu():
    from .conftest import require_native

    if not (require_native() or ptqx.ops.STATUS.loaded):
        pytest.skip("native kernels not built here")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("ptqx::lira_loo_stats", "CPU")
