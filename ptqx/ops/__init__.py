"""``ptqx.ops``: the only Python that touches ``torch.ops.ptqx``.

Importing this module defines every op (with its reference as the default kernel) and
then loads the native kernels (ahead-of-time ``ptqx._C`` or a JIT build), which take over
on their devices. ``python -m ptqx info`` shows which kernel serves each op.
"""

from __future__ import annotations

from . import _library, reference  # noqa: F401  (defines the ops before native load)
from ._build import STATUS, load_native
from .adaround import adaround_soft_weight
from .attack_stats import LOO_STAT_NAMES, LooStats, lira_loo_stats
from .grid import fake_quant, grid_search, quantize_codes, ternary_absmean, ternary_grid
from .lowbit import lowbit_linear, lowbit_linear_int8act, pack_weights, unpack_weights
from .obc import obc_quantize_rows
from .scores import logit_scores

load_native()

OP_NAMES = tuple(_library.SCHEMAS)

__all__ = [
    "LOO_STAT_NAMES",
    "LooStats",
    "OP_NAMES",
    "STATUS",
    "adaround_soft_weight",
    "fake_quant",
    "grid_search",
    "lira_loo_stats",
    "load_native",
    "logit_scores",
    "lowbit_linear",
    "lowbit_linear_int8act",
    "obc_quantize_rows",
    "pack_weights",
    "quantize_codes",
    "reference",
    "ternary_absmean",
    "ternary_grid",
    "unpack_weights",
]
