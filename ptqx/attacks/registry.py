"""The attack registry and the entry points that run attacks by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import lira, rmia
from ._inputs import MODES, AttackInputs, check_mode


@dataclass(frozen=True)
class Attack:
    """One membership-inference attack.

    Attributes:
        name: registry key.
        fn: ``fn(inputs, mode, **options) -> float64 [N, M]`` (higher = member).
        title: human-readable name.
        mode_notes: what each mode computes, for labels in reports.
        uses_references: whether the statistic depends on the reference models.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    title: str
    mode_notes: dict[str, str]
    uses_references: bool = True

    def label(self, mode: str = "ptqx") -> str:
        """E.g. ``"LiRA offline [faithful: two-sided test, as Quant-MIA]"``."""
        check_mode(mode)
        return f"{self.title} [{mode}: {self.mode_notes[mode]}]"


_SAME = "mode-independent"
ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack(
            "lira_online",
            lira.lira_online,
            "LiRA online",
            {
                "faithful": "per-example sd + 1e-30, as Quant-MIA",
                "ptqx": "per-example sd, pooled sd where it is 0",
            },
        ),
        Attack(
            "lira_online_fixed_var",
            lira.lira_online_fixed_var,
            "LiRA online, fixed variance",
            {
                "faithful": "np.std of all IN scores for both sides, as Quant-MIA",
                "ptqx": "pooled within-example sd, IN and OUT separately",
            },
        ),
        Attack(
            "lira_offline",
            lira.lira_offline,
            "LiRA offline",
            {
                "faithful": "two-sided Gaussian test, as Quant-MIA",
                "ptqx": "one-sided test (s large => member), as the LiRA paper",
            },
        ),
        Attack(
            "lira_offline_fixed_var",
            lira.lira_offline_fixed_var,
            "LiRA offline, fixed variance",
            {
                "faithful": "two-sided, np.std of all OUT scores, as Quant-MIA",
                "ptqx": "one-sided, pooled within-example OUT sd",
            },
        ),
        Attack(
            "global_threshold",
            lira.global_threshold,
            "Global threshold",
            {"faithful": _SAME, "ptqx": _SAME},
            uses_references=False,
        ),
        Attack(
            "rmia",
            rmia.rmia,
            "RMIA",
            {"faithful": _SAME + " (not in Quant-MIA)", "ptqx": _SAME},
        ),
        Attack(
            "loss",
            rmia.loss_attack,
            "LOSS",
            {"faithful": _SAME + " (not in Quant-MIA)", "ptqx": _SAME},
            uses_references=False,
        ),
    )
}
LIRA_ATTACKS = (
    "lira_online",
    "lira_online_fixed_var",
    "lira_offline",
    "lira_offline_fixed_var",
    "global_threshold",
)


def _get(name: object) -> Attack:
    if name not in ATTACKS:
        raise ValueError(f"name: unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return ATTACKS[name]  # type: ignore[index]


def _like_input(out: torch.Tensor, like: object) -> np.ndarray | torch.Tensor:
    return out.cpu().numpy() if isinstance(like, np.ndarray) else out


def attack_statistics(
    names: Sequence[str] | None,
    target_scores: np.ndarray | torch.Tensor,
    ref_scores: np.ndarray | torch.Tensor,
    keep: np.ndarray | torch.Tensor,
    *,
    mode: str = "ptqx",
    options: dict[str, dict] | None = None,
) -> dict[str, np.ndarray | torch.Tensor]:
    """Several attacks on the same scores, sharing one leave-one-out statistics pass.

    Args:
        names: attack names (None: every attack in :data:`ATTACKS`).
        target_scores, ref_scores, keep: as :func:`attack_statistic`.
        mode: "ptqx" (default) or "faithful".
        options: per-attack keyword options, e.g. ``{"rmia": {"offline_a": 0.5}}``.
    Returns:
        name -> float64 [N, M] statistic (numpy if ``target_scores`` is numpy).
    """
    check_mode(mode)
    names = list(ATTACKS) if names is None else list(names)
    attacks = [_get(n) for n in names]
    options = dict(options or {})
    for key in options:
        _get(key)
    inp = AttackInputs.build(target_scores, ref_scores, keep)
    return {
        a.name: _like_input(a.fn(inp, mode, **options.get(a.name, {})), target_scores)
        for a in attacks
    }


def attack_statistic(
    name: str,
    target_scores: np.ndarray | torch.Tensor,
    ref_scores: np.ndarray | torch.Tensor,
    keep: np.ndarray | torch.Tensor,
    *,
    mode: str = "ptqx",
    **options,
) -> np.ndarray | torch.Tensor:
    """Membership statistic of every (target model, example) pair; higher = member.

    Every model n is the target in turn and is attacked with the reference models
    j != n (leave-one-out: reference n shares target n's training set), less on each
    example one model of the side n is not on, so that both sides' sizes are the same
    for members and non-members (``ptqx.ops.lira_loo_stats``). With the same
    array for both score arguments this is the usual shadow-model audit; with quantized
    targets and full-precision (or equally quantized) references it is the paper's (or
    an adaptive) attacker.

    Args:
        name: a key of :data:`ATTACKS`: "lira_online", "lira_online_fixed_var",
            "lira_offline", "lira_offline_fixed_var", "global_threshold", "rmia", "loss".
        target_scores: float [N, M, V] LiRA scores (``ptqx.ops.logit_scores``) of the
            N target models on M examples under V views; numpy or torch, finite.
        ref_scores: float [N, M, V], the reference models' scores, same shape.
        keep: bool [N, M], keep[j, m] iff model j trained on example m. N >= 4.
        mode: "ptqx" (corrected, default) or "faithful" (Quant-MIA's formulas); see
            :mod:`ptqx.attacks.lira` and ``ATTACKS[name].label(mode)``.
        **options: attack-specific keywords (RMIA: offline, offline_a, gamma,
            n_population, seed).
    Returns:
        float64 [N, M]: numpy if ``target_scores`` is numpy, else a tensor on its device.
    """
    attack = _get(name)
    check_mode(mode)
    inp = AttackInputs.build(target_scores, ref_scores, keep)
    return _like_input(attack.fn(inp, mode, **options), target_scores)


__all__ = ["ATTACKS", "LIRA_ATTACKS", "MODES", "Attack", "attack_statistic", "attack_statistics"]
