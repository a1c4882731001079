"""Validated attack inputs, shared by every attack of one configuration.

Checking and converting once, and caching the leave-one-out statistics, lets
:func:`ptqx.attacks.attack_statistics` run all attacks of a configuration for the price
of one ``lira_loo_stats`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ptqx.ops import LooStats, lira_loo_stats, reference

MODES = ("ptqx", "faithful")
# Each target's references are the other models less one of the side the target is not
# on (``lira_loo_stats``); with balanced membership N = 4 leaves one IN and one OUT.
MIN_MODELS = 4


def as_tensor(name: str, x: object) -> torch.Tensor:
    """A numpy array or tensor as a tensor (no copy where possible), else a TypeError."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name}: expected a numpy array or torch.Tensor, got {type(x).__name__}")


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def check_keep(keep: object, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    k = as_tensor("keep", keep)
    if k.dtype != torch.bool:
        raise TypeError(f"keep: expected dtype bool, got {str(k.dtype).replace('torch.', '')}")
    if tuple(k.shape) != tuple(shape):
        raise ValueError(
            f"keep: expected shape {list(shape)} (models, examples), got {list(k.shape)}"
        )
    return k.to(device)


def check_scores(name: str, x: object, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    t = as_tensor(name, x)
    if not t.is_floating_point():
        raise TypeError(
            f"{name}: expected float scores, got dtype {str(t.dtype).replace('torch.', '')}"
        )
    if t.dim() != 3:
        raise ValueError(
            f"{name}: expected shape [N, M, V] (models, examples, views), got {list(t.shape)}"
        )
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected shape {list(shape)} (that of target_scores), got {list(t.shape)}"
        )
    if t.numel() and not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: contains {bad} NaN/Inf score(s)")
    return t.to(torch.float64)


@dataclass
class AttackInputs:
    """Scores and membership of one configuration, validated, as float64 tensors.

    Attributes:
        target: float64 [N, M, V]; row n is target model n's scores.
        ref: float64 [N, M, V]; row j is reference model j's scores.
        keep: bool [N, M]; keep[j, m] iff model j (target j and reference j share a
            training set) trained on example m.
    """

    target: torch.Tensor
    ref: torch.Tensor
    keep: torch.Tensor
    _loo: LooStats | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, target_scores: object, ref_scores: object, keep: object) -> AttackInputs:
        target = check_scores("target_scores", target_scores)
        ref = check_scores("ref_scores", ref_scores, tuple(target.shape))
        if ref.device != target.device:
            raise ValueError(
                f"ref_scores: expected a tensor on {target.device}, got one on {ref.device}"
            )
        n, m, v = target.shape
        if n < MIN_MODELS:
            raise ValueError(
                f"target_scores: need at least {MIN_MODELS} models (dim 0) so that every target "
                f"keeps IN and OUT reference models after leaving out itself and one model of "
                f"the other side, got {n}"
            )
        if v < 1:
            raise ValueError(
                f"target_scores: need at least 1 view (dim 2), got shape {list(target.shape)}"
            )
        k = check_keep(keep, (n, m), target.device)
        return cls(target.contiguous(), ref.contiguous(), k.contiguous())

    @property
    def dropped(self) -> torch.Tensor:
        """int64 [N, M]: the model left out with target n on example m, or -1, exactly
        as ``lira_loo_stats`` leaves it out (``reference.lira_loo_partner``), so the
        reference sets' sizes do not reveal n's membership."""
        return self.cached("dropped", lambda: reference.lira_loo_partner(self.keep))

    @property
    def loo(self) -> LooStats:
        """Leave-one-out IN/OUT statistics of ``ref`` (computed once, native op)."""
        if self._loo is None:
            self._loo = lira_loo_stats(self.ref, self.keep)
        return self._loo

    def cached(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]
