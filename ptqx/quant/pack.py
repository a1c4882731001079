"""Packed low-bit Linear layers over ``ptqx.ops.lowbit_linear``.

``pack(qmodel)`` replaces every quantized ``nn.Linear`` whose precision has a packed
layout (4 bits; 2 bits; 1.58-bit ternary, stored in the 2-bit layout) by a
:class:`PackedLinear` holding only the packed codes, scale, zero and bias. Its output is
``F.linear(x, scale * (codes - zero), bias)``: the fake-quant model's output, without
ever storing the float weight. Conv2d layers and 8/3-bit Linear layers stay as they are.

``pack(qmodel, int8_activations=True)`` opts in to ``ptqx.ops.lowbit_linear_int8act``
instead: each token's activations are quantized to int8 (dynamic per-token absmax)
before the product. That is faster at small batches but CHANGES THE MODEL (about 1%
relative output error per layer), so the audit never uses it; it needs integer zero
points, as every ptqx quantizer produces (checked once, at pack time).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ptqx import ops
from ptqx.ops.lowbit import check_int8act_zero

from .layers import QUANT_ATTR
from .spec import QuantizedWeight

#: QuantizedWeight.bits -> packed field width.
PACK_BITS: dict[float, int] = {4: 4, 2: 2, 1.58: 2}


class PackedLinear(nn.Module):
    """A Linear layer with packed low-bit weights (weight-only; activations float32).

    Args:
        qweight: the layer's :class:`QuantizedWeight` (codes uint8 [R, C]; bits 4, 2 or 1.58).
        bias: float32 [R] or None.
        int8_activations: run ``ops.lowbit_linear_int8act`` (int8 per-token activations:
            a different, approximate model) instead of the exact ``ops.lowbit_linear``.

    Input ``[..., C]`` float32, output ``[..., R]`` float32.

    Raises:
        ValueError: bits without a packed layout, codes not 2-D, or (with
            ``int8_activations``) zero points that are not integers in [0, 2^bits - 1].
    """

    def __init__(
        self,
        qweight: QuantizedWeight,
        bias: torch.Tensor | None = None,
        *,
        int8_activations: bool = False,
    ):
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
        self.int8_activations = bool(int8_activations)
        if self.int8_activations:
            # Once here rather than on every forward call (the op checks it too).
            check_int8act_zero(qweight.zero, self.pack_bits)
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
        linear = ops.lowbit_linear_int8act if self.int8_activations else ops.lowbit_linear
        return linear(x, self.packed, self.scale, self.zero, self.pack_bits, self.bias)

    def extra_repr(self) -> str:
        extra = ", int8_activations=True" if self.int8_activations else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}, bias={self.bias is not None}{extra}"
        )


def pack(qmodel: nn.Module, *, inplace: bool = False, int8_activations: bool = False) -> nn.Module:
    """Replace quantized Linear layers (4, 2, 1.58 bits) by :class:`PackedLinear`.

    Args:
        qmodel: a model returned by ``ptqx.quantize``.
        inplace: modify ``qmodel`` instead of a deep copy.
        int8_activations: opt in to int8 per-token activations in every packed layer
            (``ops.lowbit_linear_int8act``): faster at small batches, but a different
            model, so never for the audit. Default: the exact fake-quant product.
    Returns:
        The packed model (by default the same outputs as ``qmodel`` up to the float
        summation order of the native kernel).
    Raises:
        ValueError: ``qmodel`` has no quantized layer; a packable layer that is not
            float32; with ``int8_activations``, a layer whose zero points are not
            integers (the messages name the layer). Nothing is replaced then, even with
            ``inplace=True``.
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
    # Build every replacement before installing any, so a refused layer leaves the
    # model untouched.
    replacements = []
    for name, mod, qw in targets:
        if mod.weight.dtype != torch.float32:
            # The packed kernels take and return float32 activations only; a model kept
            # in another dtype would feed them its own and fail at the first forward.
            raise ValueError(
                f"layer {name!r}: weight dtype {str(mod.weight.dtype).replace('torch.', '')}; "
                "packed layers compute in float32 only (convert the model with .float() "
                "before quantizing, or do not pack it)"
            )
        try:
            replacements.append(
                (name, PackedLinear(qw, mod.bias, int8_activations=int8_activations))
            )
        except ValueError as e:
            opt = " (int8_activations=True)" if int8_activations else ""
            raise ValueError(f"layer {name!r}{opt}: {e}") from None
    for name, packed in replacements:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, packed)
    return model
