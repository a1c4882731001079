"""Quantization grids: the per-layer spec, grid fitting, and the quantized-weight record.

Everything here is per output channel (row ``r`` of a weight viewed as ``[R, C]``; conv
weights ``[R, Cin/groups, kh, kw]`` are rows of ``Cin/groups*kh*kw``), with the code
convention of ``ptqx.ops``: ``code = clamp(round(w / scale) + zero, 0, maxq)`` and
``w_hat = scale * (code - zero)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ptqx import ops

#: Supported bit widths. 1.58 is ternary: 3 levels (maxq = 2).
SUPPORTED_BITS: tuple[float, ...] = (8, 4, 3, 2, 1.58)
GRIDS: tuple[str, ...] = ("mse", "minmax", "absmean")

# OBC's MSE range search (IST-DASLab/OBC quant.py Quantizer.find_params): shrink the
# range by p = 1, 0.99, ..., 0.21 and keep the least sum |w - q(w)|^2.4.
MSE_NORM, MSE_GRID, MSE_STEPS = 2.4, 100, 80


def normalize_bits(bits: object, *, name: str = "bits") -> float:
    """Return ``bits`` as one of :data:`SUPPORTED_BITS`, or raise a ValueError naming it."""
    if isinstance(bits, bool) or not isinstance(bits, int | float):
        raise ValueError(f"{name}: expected one of 8, 4, 3, 2, 1.58, got {bits!r}")
    for b in SUPPORTED_BITS:
        if math.isclose(float(bits), b, rel_tol=0, abs_tol=1e-9):
            return b
    raise ValueError(f"{name}: expected one of 8, 4, 3, 2, 1.58, got {bits!r}")


def bits_to_maxq(bits: float) -> int:
    """Largest integer code: ``2^bits - 1``, or 2 for 1.58-bit ternary (3 levels)."""
    b = normalize_bits(bits)
    return 2 if b == 1.58 else (1 << int(b)) - 1


@dataclass(frozen=True)
class QuantSpec:
    """How one layer's weights are quantized. Validated on creation.

    Attributes:
        bits: 8, 4, 3, 2 or 1.58 (3 levels).
        symmetric: zero point fixed at the middle code ((maxq + 1) // 2) and a range
            symmetric around 0; otherwise asymmetric (the protocol's default).
        grid: "mse" (OBC's shrink search, minimising sum |w - q(w)|^2.4), "minmax"
            (the full per-channel range) or "absmean" (BitNet b1.58's ternary scale
            mean|w|; symmetric 1.58 bits only).
        include_zero: extend each channel's range to contain 0 before the search, as
            OBC/GPTQ do (0 is then exactly representable up to rounding of the zero point).
    """

    bits: float
    symmetric: bool = False
    grid: str = "mse"
    include_zero: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", normalize_bits(self.bits))
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric: expected a bool, got {self.symmetric!r}")
        if not isinstance(self.include_zero, bool):
            raise ValueError(f"include_zero: expected a bool, got {self.include_zero!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid: expected one of {', '.join(GRIDS)}, got {self.grid!r}")
        if self.grid == "absmean" and not (self.symmetric and self.bits == 1.58):
            raise ValueError(
                "grid: 'absmean' is the symmetric ternary scale; it needs bits=1.58 and "
                f"symmetric=True, got bits={self.bits}, symmetric={self.symmetric}"
            )

    @property
    def maxq(self) -> int:
        return bits_to_maxq(self.bits)

    @property
    def levels(self) -> int:
        return self.maxq + 1


def _rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def fit_grid(weight: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel grid for ``weight`` under ``spec``.

    Args:
        weight: float32/float64 [R, ...] (dim 0 = output channel), finite.
        spec: the grid to fit.
    Returns:
        (scale, zero): float32 [R] each, on ``weight``'s device; ``zero`` holds integer
        values in [0, maxq] and every scale is > 0.
    """
    w = _rows(weight)
    if spec.grid == "absmean":
        # BitNet b1.58 (Ma et al. 2024): ternary levels {-a, 0, +a} with a = mean|w|.
        # An all-zero row would give a = 0; any positive scale represents it exactly.
        a = (
            w.abs().mean(dim=1).to(torch.float32)
            if w.shape[1]
            else torch.ones(w.shape[0], device=w.device)
        )
        a = torch.where(a > 0, a, torch.ones_like(a))
        zero = torch.full_like(a, float((spec.maxq + 1) // 2))
        return a.contiguous(), zero
    steps = MSE_STEPS if spec.grid == "mse" else 1
    return ops.grid_search(
        w.contiguous(),
        spec.maxq,
        symmetric=spec.symmetric,
        include_zero=spec.include_zero,
        norm=MSE_NORM,
        grid=MSE_GRID,
        steps=steps,
    )


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A quantized weight: integer codes plus the per-channel grid they live on.

    Attributes:
        codes: uint8, the weight's shape ([R, C] Linear, [R, Cin/g, kh, kw] Conv2d),
            each in [0, maxq].
        scale: float32 [R], > 0.
        zero: float32 [R], integer values in [0, maxq].
        bits: 8, 4, 3, 2 or 1.58.
        maxq: largest code.
        method: the quantizer that produced the codes ("rtn", "gptq", ...).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: float
    maxq: int
    method: str

    def __post_init__(self) -> None:
        if self.codes.dtype != torch.uint8 or self.codes.dim() < 1:
            raise ValueError(
                f"codes: expected uint8 [R, ...], got {self.codes.dtype} {tuple(self.codes.shape)}"
            )
        rows = self.codes.shape[0]
        for n in ("scale", "zero"):
            v = getattr(self, n)
            if v.dtype != torch.float32 or tuple(v.shape) != (rows,):
                raise ValueError(f"{n}: expected float32 [{rows}], got {v.dtype} {tuple(v.shape)}")
        if bits_to_maxq(self.bits) != self.maxq:
            raise ValueError(f"maxq: {self.maxq} does not match bits={self.bits}")

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``scale * (codes - zero)`` per output channel, the weight's shape, ``dtype``."""
        view = (-1,) + (1,) * (self.codes.dim() - 1)
        w = self.scale.reshape(view) * (self.codes.to(torch.float32) - self.zero.reshape(view))
        return w.to(dtype)

    def to(self, device: torch.device | str) -> QuantizedWeight:
        return QuantizedWeight(
            self.codes.to(device),
            self.scale.to(device),
            self.zero.to(device),
            self.bits,
            self.maxq,
            self.method,
        )

    @staticmethod
    def from_values(
        values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec, method: str
    ) -> QuantizedWeight:
        """Codes of weights already on (or to be rounded onto) the grid ``(scale, zero)``."""
        codes = ops.quantize_codes(_rows(values).contiguous(), scale, zero, spec.maxq).reshape(
            values.shape
        )
        return QuantizedWeight(codes, scale, zero, spec.bits, spec.maxq, method)
