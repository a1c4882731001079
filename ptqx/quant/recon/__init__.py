"""Reconstruction-based PTQ: AdaRound and BRECQ (registered as "adaround", "brecq")."""

from .cache import ActivationStore, CacheBudget
from .methods import (
    PRESETS,
    ReconConfig,
    make_config,
    quantize_adaround,
    quantize_brecq,
    run_reconstruction,
)
from .rounding import SoftRounding, beta_schedule
from .units import Unit, block_units, forward_order, layer_units

__all__ = [
    "PRESETS",
    "ActivationStore",
    "CacheBudget",
    "ReconConfig",
    "SoftRounding",
    "Unit",
    "beta_schedule",
    "block_units",
    "forward_order",
    "layer_units",
    "make_config",
    "quantize_adaround",
    "quantize_brecq",
    "run_reconstruction",
]
