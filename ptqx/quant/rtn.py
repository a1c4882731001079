"""Round-to-nearest: fit each layer's grid, round every weight to its nearest level."""

from __future__ import annotations

import time

from torch import nn

from .api import ProgressFn, register_quantizer
from .calib import CalibrationSet
from .layers import LayerPlan, store_quantized, weight_rows
from .spec import fit_grid


@register_quantizer("rtn", needs_calib=False)
def quantize_rtn(
    model: nn.Module, plan: list[LayerPlan], calib: CalibrationSet | None, *, progress: ProgressFn
) -> None:
    """No calibration data: ``codes = clamp(round(w / scale) + zero, 0, maxq)``."""
    for i, lp in enumerate(plan):
        t0 = time.perf_counter()
        w = weight_rows(lp.module)
        scale, zero = fit_grid(w, lp.spec)
        store_quantized(lp, w, scale, zero, "rtn")
        progress(
            {
                "event": "layer",
                "method": "rtn",
                "layer": lp.name,
                "index": i,
                "total": len(plan),
                "seconds": time.perf_counter() - t0,
            }
        )
