"""Which layers get quantized, at what precision, and how a quantized layer is stored."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from .spec import QuantizedWeight, QuantSpec, normalize_bits

#: Modules that hold weights but are not quantized by design (weights-only PTQ of the
#: protocol quantizes the Conv2d/Linear weights; normalisation affine parameters stay fp32).
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)

#: Attribute under which a quantized layer keeps its :class:`QuantizedWeight`.
QUANT_ATTR = "ptqx_quant"

V = TypeVar("V")


class UnsupportedLayerError(ValueError):
    """A module holds weights of a type ptqx cannot quantize (e.g. ConvTranspose2d)."""

    def __init__(self, names: list[tuple[str, str]]):
        self.layers = names
        listed = ", ".join(f"{n!r} ({t})" for n, t in names)
        super().__init__(
            f"model: unsupported layer(s) holding weights: {listed}. Only Conv2d and Linear are "
            "quantized; pass unsupported='skip' to leave them in float32."
        )


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One layer to quantize.

    Attributes:
        name: qualified module name (``model.get_submodule(name)``).
        module: the Conv2d/Linear inside the model being quantized (the deep copy).
        spec: its grid (bits from ``bits`` or a ``layer_bits`` override).
    """

    name: str
    module: nn.Module
    spec: QuantSpec

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.module, nn.Conv2d) else "linear"

    @property
    def groups(self) -> int:
        return self.module.groups if isinstance(self.module, nn.Conv2d) else 1

    @property
    def rows(self) -> int:
        return self.module.weight.shape[0]

    @property
    def columns(self) -> int:
        """Inputs per output channel: ``Cin/groups*kh*kw`` for a conv, ``in_features`` for Linear."""
        return self.module.weight[0].numel()


class TiedWeightError(ValueError):
    """A quantizable layer's weight Parameter is also held by another module."""

    def __init__(self, layer: str, holders: list[str]):
        self.layer = layer
        self.holders = holders
        listed = ", ".join(repr(h) for h in holders)
        super().__init__(
            f"model: layer {layer!r} shares its weight Parameter with {listed} (tied weights). "
            "ptqx quantizes every layer's weight on its own grid and writes the dequantized "
            "values back into the tensor, so a shared tensor cannot hold both layers' "
            "weights; untie them first (give one layer its own copy: "
            "layer.weight = nn.Parameter(layer.weight.detach().clone()))"
        )


def parameter_holders(model: nn.Module) -> dict[int, list[str]]:
    """``id(parameter)`` -> qualified names of every distinct module attribute holding it.

    A module registered under two names counts once (it is one layer); the same Parameter
    assigned to two different modules (tied weights) is listed under both.
    """
    holders: dict[int, list[str]] = {}
    for name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append(f"{name}.{pname}" if name else pname)
    return holders


def find_layers(model: nn.Module) -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    """Quantizable layers and unsupported weight holders of ``model``, in module order.

    Returns:
        (layers, unsupported): ``layers`` maps name -> Conv2d/Linear (subclasses included,
        any groups/dilation/stride/padding); ``unsupported`` lists (name, type name) of
        other modules that directly own parameters (ConvTranspose2d, Conv1d, Embedding,
        MultiheadAttention's in_proj, custom layers...), normalisation layers excepted.
    Raises:
        TiedWeightError: a layer's weight Parameter is shared with another module (tied
            weights: quantizing one layer would overwrite the other's weight).
    """
    layers: dict[str, nn.Module] = {}
    unsupported: list[tuple[str, str]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            if getattr(mod, "weight", None) is None:
                unsupported.append((name, type(mod).__name__))
            else:
                layers[name] = mod
        elif isinstance(mod, _NORM_TYPES):
            continue
        elif any(True for _ in mod.parameters(recurse=False)):
            # The root module owning a bare Parameter (e.g. a class token) has no name.
            unsupported.append((name or "<root>", type(mod).__name__))
    holders = parameter_holders(model)
    for name, mod in layers.items():
        own = f"{name}.weight" if name else "weight"
        others = [h for h in holders.get(id(mod.weight), []) if h != own]
        if others:
            raise TiedWeightError(name, others)
    return layers, unsupported


@torch.no_grad()
def forward_calls(
    model: nn.Module, modules: Sequence[nn.Module], probe: torch.Tensor
) -> list[list[int]]:
    """When each of ``modules`` runs during ``model(probe)``.

    Args:
        model: the network (run once, without gradients, in its current mode).
        modules: submodules to watch (distinct objects).
        probe: one input batch (a single sample suffices for the call structure).
    Returns:
        Per module, the positions of its calls in the order all watched modules were
        called (empty for a module the forward never runs): ``len`` is its number of
        calls, ``[0]`` its first call, which orders modules by execution.
    """
    calls: list[list[int]] = [[] for _ in modules]
    counter = [0]
    handles = []
    for i, m in enumerate(modules):

        def hook(mod, args, i=i):
            calls[i].append(counter[0])
            counter[0] += 1

        handles.append(m.register_forward_pre_hook(hook))
    try:
        model(probe)
    finally:
        for h in handles:
            h.remove()
    return calls


def match_layers(
    names: list[str], overrides: Mapping[str, V] | None, *, arg: str = "layer_bits"
) -> dict[str, V]:
    """Layer name -> override value, for the layers some key of ``overrides`` selects.

    Keys are exact layer names or :mod:`fnmatch` glob patterns (``"layer4.*"``,
    ``"*.conv2"``). An exact name wins over patterns; among patterns the last matching
    key (in dict order) wins. A key that matches no quantizable layer is an error (a typo
    would otherwise silently leave the layer at the default precision).
    """
    if not overrides:
        return {}
    if not isinstance(overrides, Mapping):
        raise ValueError(
            f"{arg}: expected a dict of name/pattern -> bits, got {type(overrides).__name__}"
        )
    for key in overrides:
        if not isinstance(key, str):
            raise ValueError(f"{arg}: keys must be layer names or glob patterns, got {key!r}")
    known = set(names)
    unmatched = [k for k in overrides if k not in known and not fnmatch.filter(names, k)]
    if unmatched:
        raise ValueError(
            f"{arg}: {', '.join(map(repr, unmatched))} match(es) no quantizable layer; "
            f"layers are: {', '.join(names)}"
        )
    out: dict[str, V] = {}
    for n in names:
        if n in overrides:
            out[n] = overrides[n]
            continue
        for key, v in overrides.items():
            if fnmatch.fnmatchcase(n, key):
                out[n] = v
    return out


def resolve_layer_bits(
    names: list[str], bits: float, layer_bits: Mapping[str, float] | None
) -> dict[str, float]:
    """Bits for every layer name: ``bits`` unless overridden by ``layer_bits`` (see
    :func:`match_layers` for the key rules)."""
    default = normalize_bits(bits)
    chosen = match_layers(names, layer_bits)
    return {
        n: normalize_bits(chosen[n], name=f"layer_bits[{n!r}]") if n in chosen else default
        for n in names
    }


def weight_rows(module: nn.Module) -> torch.Tensor:
    """The layer's weight as float32 rows ``[R, C]`` (a copy, conv kernels flattened)."""
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1).to(torch.float32).clone()


def set_quantized(module: nn.Module, qweight: QuantizedWeight) -> None:
    """Replace ``module.weight`` by the dequantized values and keep ``qweight`` on it.

    The weight stays an ``nn.Parameter`` of the same dtype/device so the model runs
    unchanged (fake quantization); ``module.ptqx_quant`` holds codes/scale/zero.
    """
    w = module.weight
    if tuple(qweight.shape) != tuple(w.shape):
        raise ValueError(
            f"qweight: codes shape {tuple(qweight.shape)} != weight shape {tuple(w.shape)}"
        )
    with torch.no_grad():
        w.copy_(qweight.dequantize(w.dtype).to(w.device))
    setattr(module, QUANT_ATTR, qweight)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedWeight]:
    """Name -> :class:`QuantizedWeight` of every quantized layer of ``model``."""
    return {n: getattr(m, QUANT_ATTR) for n, m in model.named_modules() if hasattr(m, QUANT_ATTR)}


def store_quantized(
    plan: LayerPlan, values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, method: str
) -> QuantizedWeight:
    """Round ``values`` onto the grid, store codes/scale/zero on the layer, set its weight.

    Args:
        plan: the layer.
        values: float [R, C] (or the weight's shape): quantized values on the grid
            ``scale * (code - zero)`` (GPTQ/OBC output) or weights to round (RTN).
        scale, zero: float32 [R].
        method: recorded in the :class:`QuantizedWeight`.
    Returns:
        The stored :class:`QuantizedWeight` (codes in the weight's shape).
    """
    shape = plan.module.weight.shape
    rows = values.reshape(shape[0], -1).to(torch.float32).contiguous()
    qw = QuantizedWeight.from_values(
        rows,
        scale.to(torch.float32).contiguous(),
        zero.to(torch.float32).contiguous(),
        plan.spec,
        method,
    )
    qw = QuantizedWeight(qw.codes.reshape(shape), qw.scale, qw.zero, qw.bits, qw.maxq, method)
    set_quantized(plan.module, qw)
    return qw
