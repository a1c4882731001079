"""Balanced membership masks (the protocol's shadow-model data split)."""

from __future__ import annotations

import numpy as np


def balanced_keep(n_models: int, n_examples: int, *, pkeep: float = 0.5, seed: int) -> np.ndarray:
    """Which examples each model trains on, balanced per example.

    As in the protocol (and LiRA's reference code): draw U ~ uniform[0, 1) of shape
    [n_models, n_examples] from ``numpy.random.default_rng(seed)``, rank each column
    (0 = smallest), and make example j IN for model i iff rank[i, j] < pkeep * n_models.
    Every example is therefore IN for exactly ceil(pkeep * n_models) models (exactly
    pkeep * n_models when that is an integer) and each model gets about pkeep * n_examples.

    Args:
        n_models: number of models N >= 1.
        n_examples: size M >= 0 of the membership universe.
        pkeep: fraction of models each example is IN for, in (0, 1].
        seed: the RNG seed (record it with the run).

    Returns:
        bool [n_models, n_examples].
    """
    for arg, v, lo in (("n_models", n_models, 1), ("n_examples", n_examples, 0)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise ValueError(f"{arg}: expected an int >= {lo}, got {v!r}")
    if (
        isinstance(pkeep, bool)
        or not isinstance(pkeep, int | float)
        or not 0.0 < float(pkeep) <= 1.0
    ):
        raise ValueError(f"pkeep: expected a number in (0, 1], got {pkeep!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    u = np.random.default_rng(int(seed)).uniform(size=(int(n_models), int(n_examples)))
    rank = u.argsort(axis=0).argsort(axis=0)
    return rank < float(pkeep) * n_models
