"""Leave-one-out LiRA: the native statistics op vs its reference, and all five LiRA
variants end to end (statistics + attack), on synthetic scores.

Run: ``python -m pytest benchmarks/bench_attacks.py --benchmark-only
--benchmark-columns=min,median,max,rounds --benchmark-group-by=group``

Shapes (named): AUDIT = N 64 models x M 50000 examples x V 2 views (the issue's target:
all five variants under 2 s). The per-target reference is O(N^2 M V log N) in Python
loops over targets, so it is timed on SMALL (M = 2000) next to the native op on the same
shape; the ratio is the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptqx.attacks import LIRA_ATTACKS, attack_statistics
from ptqx.ops import lira_loo_stats, reference

SHAPES = {"AUDIT": (64, 50_000, 2), "SMALL": (64, 2_000, 2)}


def _scores(n, m, v, seed=0):
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((n, m)), axis=0) < n // 2  # balanced, as the protocol
    scores = rng.normal(size=(1, m, 1)) * 2 + rng.normal(size=(n, m, v)) + keep[..., None]
    return torch.from_numpy(scores), torch.from_numpy(keep)


@pytest.fixture(scope="module")
def audit():
    return _scores(*SHAPES["AUDIT"])


@pytest.fixture(scope="module")
def small():
    return _scores(*SHAPES["SMALL"])


@pytest.mark.benchmark(group="loo-stats N64 M2000 V2")
def test_loo_native_small(benchmark, small):
    x, keep = small
    benchmark(lira_loo_stats, x, keep)


@pytest.mark.benchmark(group="loo-stats N64 M2000 V2")
def test_loo_reference_small(benchmark, small):
    x, keep = small
    benchmark.pedantic(reference.lira_loo_stats, args=(x, keep), rounds=3, iterations=1)


@pytest.mark.benchmark(group="loo-stats N64 M50000 V2")
def test_loo_native_audit(benchmark, audit):
    x, keep = audit
    benchmark.pedantic(lira_loo_stats, args=(x, keep), rounds=5, iterations=1)
    # 8-byte reads of the scores + 6 float64 planes and 2 int64 count planes written.
    n, m, v = x.shape
    benchmark.extra_info["MB_moved"] = (x.numel() * 8 + 6 * n * m * v * 8 + 2 * n * m * 8) / 1e6


@pytest.mark.benchmark(group="lira five variants N64 M50000 V2")
@pytest.mark.parametrize("mode", ["ptqx", "faithful"])
def test_lira_all_five(benchmark, audit, mode):
    x, keep = audit
    out = benchmark.pedantic(
        attack_statistics,
        args=(LIRA_ATTACKS, x, x, keep),
        kwargs={"mode": mode},
        rounds=5,
        iterations=1,
    )
    assert set(out) == set(LIRA_ATTACKS)
