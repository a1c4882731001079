"""AdaRound's learned rounding for one layer, and the regulariser's temperature schedule.

Nagel et al. 2020 ("Up or Down? Adaptive Rounding for Post-Training Quantization"), as
the BRECQ code runs it (yhhhli/BRECQ quant/adaptive_rounding.py, quant/block_recon.py):
``w_soft = s * (clamp(floor(w / s) + h(a) + z, 0, maxq) - z)``, ``h(a) = clamp(1.2 *
sigmoid(a) - 0.1, 0, 1)``, ``a`` initialised so that ``h`` is the fractional part of
``w / s`` (so the soft weight starts at the float weight), and finally
``code = clamp(floor(w / s) + (a >= 0) + z, 0, maxq)``.
"""

from __future__ import annotations

import torch

from ptqx import ops
from ptqx.ops import reference as ops_reference

from ..spec import QuantSpec, fit_grid


class SoftRounding:
    """The rounding variables of one layer on its fitted grid.

    Args:
        weight: the float weight, any shape with dim 0 = output channel (not modified).
        spec: the layer's grid; fitted exactly as RTN fits it (``fit_grid``).

    Attributes:
        alpha: float32 leaf tensor (requires grad), the weight's shape.
        w_floor: float32 ``floor(w / scale)``, the weight's shape.
        scale, zero: float32 [R].
    """

    def __init__(self, weight: torch.Tensor, spec: QuantSpec):
        self.shape = weight.shape
        self.spec = spec
        rows = weight.detach().reshape(weight.shape[0], -1).to(torch.float32)
        self.rows = rows
        self.scale, self.zero = fit_grid(rows, spec)
        ws = rows / self.scale[:, None]
        self.w_floor = torch.floor(ws).reshape(self.shape).contiguous()
        self.alpha = ops_reference.adaround_init_alpha(ws).reshape(self.shape).contiguous()
        self.alpha.requires_grad_(True)
        self._checked = False

    def soft(self, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(soft weight in the weight's shape, regulariser sum) through the fused op."""
        # Arguments are validated on the first call; later calls only change alpha (kept
        # finite by Adam on a finite loss) and beta (from beta_schedule).
        out = ops.adaround_soft_weight(
            self.w_floor,
            self.alpha,
            self.scale,
            self.zero,
            self.spec.maxq,
            beta,
            validate=not self._checked,
        )
        self._checked = True
        return out

    @torch.no_grad()
    def hard_codes(self) -> torch.Tensor:
        """Final codes ``clamp(floor(w / s) + (a >= 0) + z, 0, maxq)`` as float, weight's shape."""
        z = self.zero.reshape(-1, *([1] * (len(self.shape) - 1)))
        up = (self.alpha >= 0).to(torch.float32)
        return torch.clamp(self.w_floor + up + z, 0, self.spec.maxq)

    @torch.no_grad()
    def hard_weight(self) -> torch.Tensor:
        """Dequantized hard-rounded weight ``s * (code - z)``, the weight's shape."""
        view = (-1, *([1] * (len(self.shape) - 1)))
        return self.scale.reshape(view) * (self.hard_codes() - self.zero.reshape(view))

    @torch.no_grad()
    def nearest_weight(self) -> torch.Tensor:
        """Round-to-nearest on the same grid (RTN), for comparison."""
        return ops.fake_quant(self.rows, self.scale, self.zero, self.spec.maxq).reshape(self.shape)


@torch.no_grad()
def nearest_weight(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``weight`` rounded to nearest on the grid :class:`SoftRounding` fits for it (RTN).

    Args:
        weight: float, any shape with dim 0 = output channel (not modified).
        spec: the layer's grid.
    Returns:
        float32, ``weight``'s shape.
    """
    rows = weight.detach().reshape(weight.shape[0], -1).to(torch.float32)
    scale, zero = fit_grid(rows, spec)
    return ops.fake_quant(rows, scale, zero, spec.maxq).reshape(weight.shape)


def beta_schedule(t: int, iters: int, warmup: float, beta_start: float, beta_end: float) -> float:
    """Regulariser exponent at (1-based) iteration ``t``; 0 means "no regulariser".

    BRECQ's ``LossFunction``/``LinearTempDecay`` with ``decay_start=0``: no regulariser
    while ``t < warmup * iters``, then ``beta`` falls linearly from ``beta_start`` to
    ``beta_end`` over the remaining iterations.
    """
    start = warmup * iters
    if t < start:
        return 0.0
    rel = (t - start) / (iters - start)
    return beta_end + (beta_start - beta_end) * max(0.0, 1.0 - rel)
