"""Public wrappers for the uniform quantization grid ops (codes, fake quant, range search)."""

from __future__ import annotations

import torch

from ._checks import FLOATS, check_maxq, check_per_row, check_tensor, check_values

INT32_MAX = 2**31 - 1


def _check_wsz(w, scale, zero, maxq):
    check_tensor("w", w, dtypes=FLOATS, min_ndim=1, finite=True)
    check_per_row("scale", scale, w.shape[0], w.device)
    check_per_row("zero", zero, w.shape[0], w.device)
    check_values((scale > 0).all(), "scale: every per-channel scale must be > 0")
    check_maxq(maxq)


def quantize_codes(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> torch.Tensor:
    """Integer codes of ``w`` on a per-output-channel asymmetric grid.

    Args:
        w: float32/float64 [R, ...] (dim 0 is the output channel).
        scale, zero: float32 [R]; zero holds integer values in [0, maxq].
        maxq: largest code (2^bits - 1; 2 for 1.58-bit ternary).
    Returns:
        uint8 codes, shape of ``w``: ``clamp(round(w / scale) + zero, 0, maxq)``.
    """
    _check_wsz(w, scale, zero, maxq)
    return torch.ops.ptqx.quantize_codes(
        w.contiguous(), scale.contiguous(), zero.contiguous(), maxq
    )


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
    ``steps=1`` gives the plain min/max grid. Semantics: ``ptqx.ops.reference.grid_search``
    (IST-DASLab/OBC ``quant.py``, ``Quantizer.find_params``).

    Args:
        w: float32/float64 [R, ...], finite.
        maxq: largest code (2^bits - 1; 2 for the 1.58-bit ternary grid).
        symmetric: zero fixed at the middle code ``(maxq + 1) // 2``; the symmetric
            ternary grid {-a, 0, +a} is ``maxq=2, symmetric=True``.
        include_zero: widen the range to contain 0 (OBC always does); must be True when
            ``symmetric``.
        norm: exponent of the error ``sum |w - q(w)|^norm``.
        grid, steps: candidate ``i < steps`` shrinks the range by ``1 - i / grid``.
    Returns:
        (scale, zero): float32 [R] each; ``scale`` finite and > 0, ``zero`` integer-valued.
        A row whose range is too small for a float32 scale (only subnormal weights, where
        ``(max - min) / maxq`` rounds to 0) gets the all-zero row's grid (range (-1, +1)),
        which quantizes it to 0.
    Raises:
        ValueError: naming ``w`` when a row's range overflows float32 for every candidate
            (``|w|`` near float32's maximum, ~3.4e38), so that no finite scale exists.
    """
    check_tensor("w", w, dtypes=FLOATS, min_ndim=1, finite=True)
    check_maxq(maxq)
    # bool is an int subclass; the kernels keep grid and steps in 32-bit ints.
    if not (isinstance(grid, int) and not isinstance(grid, bool) and 1 <= grid <= INT32_MAX):
        raise ValueError(f"grid: expected an int in [1, {INT32_MAX}], got {grid!r}")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= grid):
        raise ValueError(f"steps: expected an int in [1, grid={grid}], got {steps!r}")
    if not (
        isinstance(norm, int | float) and not isinstance(norm, bool) and 0 < norm < float("inf")
    ):
        raise ValueError(f"norm: expected a finite number > 0, got {norm!r}")
    if symmetric and not include_zero:
        # A symmetric grid always holds 0 (its zero point is the middle code); OBC's
        # symmetric range is defined from a range that contains 0, so the combination
        # has no meaning rather than a silently different one.
        raise ValueError(
            "include_zero: must be True when symmetric=True (a symmetric grid always contains 0)"
        )
    scale, zero = torch.ops.ptqx.grid_search(
        w.contiguous(), maxq, bool(symmetric), bool(include_zero), float(norm), grid, steps
    )
    if scale.numel():
        check_values(
            torch.isfinite(scale).all(),
            "w: a row's range overflows float32, so it has no finite scale",
            lambda: (
                "w: rows "
                f"{torch.nonzero(~torch.isfinite(scale)).flatten().tolist()[:10]} have a range "
                "(max - min) that overflows float32 for every candidate, so no finite scale "
                "exists; |w| must stay well below float32's maximum (~3.4e38)"
            ),
        )
    return scale, zero


def ternary_absmean(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric ternary grid {-a, 0, +a} with ``a = mean |w|`` per output channel.

    BitNet b1.58 (Ma et al. 2024, "The Era of 1-bit LLMs: All Large Language Models are
    in 1.58 Bits", eq. 1-3): ``RoundClip(W / (gamma + eps), -1, 1)`` with
    ``gamma = mean |W|``; per tensor there, per output channel here like every ptqx grid.
    With ``maxq=2`` and ``zero=1``, codes 0, 1, 2 stand for -a, 0, +a, so
    ``fake_quant(w, *ternary_absmean(w), 2)`` is BitNet's rounding. BitNet's eps only
    guards a zero gamma: here an all-zero row gets ``a = 1`` (all codes 1, i.e. 0).

    Args:
        w: float32/float64 [R, ...], finite.
    Returns:
        (scale, zero): float32 [R] each (zero is 1 everywhere).
    """
    check_tensor("w", w, dtypes=FLOATS, min_ndim=1, finite=True)
    rows = w.shape[0]
    if w.numel() == 0:
        return w.new_ones(rows, dtype=torch.float32), w.new_ones(rows, dtype=torch.float32)
    a = w.reshape(rows, -1).abs().mean(dim=1).to(torch.float32)
    # A row of subnormals can have a mean that rounds to 0 in float32; treat it as zero.
    a = torch.where(a > 0, a, torch.ones_like(a))
    return a, torch.ones_like(a)


TERNARY_METHODS = ("mse", "absmean")


def ternary_grid(w: torch.Tensor, *, method: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel symmetric ternary grid {-a, 0, +a} for ``maxq=2`` (zero = 1).

    Args:
        w: float32/float64 [R, ...].
        method: ``"mse"``: ``a`` from OBC's shrink search (:func:`grid_search` with
            ``maxq=2, symmetric=True``); ``"absmean"``: ``a = mean |w|``
            (:func:`ternary_absmean`, BitNet b1.58).
    Returns:
        (scale, zero): float32 [R] each.
    """
    if method == "mse":
        return grid_search(w, 2, symmetric=True)
    if method == "absmean":
        return ternary_absmean(w)
    raise ValueError(f"method: expected one of {TERNARY_METHODS}, got {method!r}")
