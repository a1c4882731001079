"""``ptqx.attacks``: membership-inference attacks on shadow-model scores, and metrics.

Every model serves as the target in turn, attacked with the other N - 1 models as
references (per example less one model of the side the target is not on, so the side
sizes do not reveal its membership: ``ptqx.ops.lira_loo_stats``); statistics pool into
one ROC per configuration.

- :func:`attack_statistic` / :func:`attack_statistics`: statistics by name from
  :data:`ATTACKS` ("lira_online", "lira_online_fixed_var", "lira_offline",
  "lira_offline_fixed_var", "global_threshold", "rmia", "loss"), in "ptqx" (corrected,
  default) or "faithful" (Quant-MIA's formulas) mode.
- :func:`evaluate`, :func:`roc_curve`, :func:`summarize_accuracy`: metrics with
  bootstrap confidence intervals.

Imports only from ``ptqx.ops`` (the leave-one-out statistics are a native op).
"""

from ._inputs import MIN_MODELS, MODES
from .metrics import DEFAULT_FPRS, evaluate, roc_curve, summarize_accuracy
from .registry import ATTACKS, LIRA_ATTACKS, Attack, attack_statistic, attack_statistics

__all__ = [
    "ATTACKS",
    "DEFAULT_FPRS",
    "LIRA_ATTACKS",
    "MIN_MODELS",
    "MODES",
    "Attack",
    "attack_statistic",
    "attack_statistics",
    "evaluate",
    "roc_curve",
    "summarize_accuracy",
]
