"""Packed low-bit Linear layers over ``ptqx.ops.lowbit_linear``.

``pack(qmodel)`` replaces every quantized ``nn.Linear`` whose precision has a packed
layout (4 bits; 2 bits; 1.58-bit ternary, stored in the 2-bit layout) by a
:class:`PackedLinear` holding only the packed codes, scale, zero and bias. Its output is
``F.linear(x, scale * (codes - zero), bias)``: the fake-quant model's output, without
ever storing the float weight. Conv2d layers and 8/3-bit Linear layers stay as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ptqx import ops

from .layers import QUANT_ATTR
from .spec import QuantizedWeight

#: QuantizedWeight.bits -> packed field width.
PACK_BITS: dict[float, int] = {4: 4, 2: 2, 1.58: 2}


class PackedLinear(nn.Module):
    """A Linear layer with packed low-bit weights (weight-only; activations float32).

    Args:
        qweight: the layer's :class:`QuantizedWeight` (codes uint8 [R, C]; bits 4, 2 or 1.58).
        bias: float32 [R] or None.

    Input ``[..., C]`` float32, output ``[..., R]`` float32.
    """

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        if qweight.bits not in PACK_BITS:
            raise ValueError(
                f"qweight: bits={qweight.bits} has no packed layout (supported: 4, 2, 1.58)"
            )
        if qweight.codes.dim() != 2:
            raise ValueError(
                f"qweight: expected Linear codes [R, C], got shape {tuple(qweight.codes.shape)}"
            )
        self.out_features, self.in_features = qweight.codes.shape
        self.bits = qweight.bits
        self.pack_bits = PACK_BITS[qweight.bits]
        self.maxq = qweight.maxq
        self.method = qweight.method
        self.register_buffer("packed", ops.pack_weights(qweight.codes, self.pack_bits))
        self.register_buffer("scale", qweight.scale.detach().clone())
        self.register_buffer("zero", qweight.zero.detach().clone())
        self.register_buffer(
            "bias", None if bias is None else bias.detach().to(torch.float32).clone()
        )

    @property
    def ptqx_quant(self) -> QuantizedWeight:
        codes = ops.unpack_weights(self.packed, self.pack_bits, self.in_features)
        return QuantizedWeight(codes, self.scale, self.zero, self.bits, self.maxq, self.method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.lowbit_linear(x, self.packed, self.scale, self.zero, self.pack_bits, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, bias={self.bias is not None}"


def pack(qmodel: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace quantized Linear layers (4, 2, 1.58 bits) by :class:`PackedLinear`.

    Args:
        qmodel: a model returned by ``ptqx.quantize``.
        inplace: modify ``qmodel`` instead of a deep copy.
    Returns:
        The packed model (same outputs as ``qmodel`` up to float summation order of the
        native kernel).
    Raises:
        ValueError: ``qmodel`` has no quantized layer.
    """
    model = qmodel if inplace else copy.deepcopy(qmodel)
    targets = []
    found = False
    for name, mod in model.named_modules():
        qw = getattr(mod, QUANT_ATTR, None)
        if qw is None or isinstance(mod, PackedLinear):
            found = found or qw is not None
            continue
        found = True
        if isinstance(mod, nn.Linear) and qw.bits in PACK_BITS:
            targets.append((name, mod, qw))
    if not found:
        raise ValueError(
            "qmodel: no quantized layer found (pass a model returned by ptqx.quantize)"
        )
    for name, mod, qw in targets:
        packed = PackedLinear(qw, mod.bias)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, packed)
    return model
