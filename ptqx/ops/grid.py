"""Public wrappers for the uniform quantization grid ops (codes, fake quant, range search)."""

from __future__ import annotations

import torch

from ._checks import FLOATS, check_maxq, check_per_row, check_tensor


def _check_wsz(w, scale, zero, maxq):
    check_tensor("w", w, dtypes=FLOATS, min_ndim=1, finite=True)
    check_per_row("scale", scale, w.shape[0], w.device)
    check_per_row("zero", zero, w.shape[0], w.device)
    if scale.numel() and not (scale > 0).all():
        raise ValueError("scale: every per-channel scale must be > 0")
    check_maxq(maxq)


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes of ``w`` on a per-output-channel asymmetric grid.

    Args:
        w: float32/float64 [R, ...] (dim 0 is the output channel).
        scale, zero: float32 [R]; zero holds integer values in [0, maxq].
        maxq: largest code (2^bits - 1; 2 for 1.58-bit ternary).
    Returns:
        uint8 codes, shape of ``w``: ``clamp(round(w / scale) + zero, 0, maxq)``.
    """
    _check_wsz(w, scale, zero, maxq)
    return torch.ops.ptqx.quantize_codes(w.contiguous(), scale.contiguous(), zero.contiguous(), maxq)


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Quantize-dequantize ``w``: ``scale * (codes - zero)``, same shape and dtype as ``w``."""
    _check_wsz(w, scale, zero, maxq)
    return torch.ops.ptqx.fake_quant(w.contiguous(), scale.contiguous(), zero.contiguous(), maxq)


def grid_search(
    w: torch.Tensor,
    maxq: int,
    *,
    symmetric: bool = False,
    include_zero: bool = True,
    norm: float = 2.4,
    grid: int = 100,
    steps: int = 80,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel (scale, zero) minimising ``sum |w - q(w)|^norm`` over shrunk ranges.

    Defaults are OBC's MSE search: shrink factors 1, 0.99, ..., 0.21 of (min, max).
    ``steps=1`` gives the plain min/max grid.

    Args:
        w: float32/float64 [R, ...].
    Returns:
        (scale, zero): float32 [R] each.
    """
    check_tensor("w", w, dtypes=FLOATS, min_ndim=1, finite=True)
    check_maxq(maxq)
    if not (isinstance(grid, int) and grid >= 1):
        raise ValueError(f"grid: expected an int >= 1, got {grid!r}")
    if not (isinstance(steps, int) and 1 <= steps <= grid):
        raise ValueError(f"steps: expected an int in [1, grid={grid}], got {steps!r}")
    if not norm > 0:
        raise ValueError(f"norm: expected > 0, got {norm!r}")
    return torch.ops.ptqx.grid_search(
        w.contiguous(), maxq, bool(symmetric), bool(include_zero), float(norm), grid, steps
    )
