"""Reconstruction units (single layers or blocks), their forward order, and capturing
their calibration inputs/outputs.

A *block* (BRECQ) is the outermost non-root module that is not itself a layer, holds at
least one planned layer, and none of whose children holds more than one: torchvision's
BasicBlock/Bottleneck (convs + shortcut conv), a ``Sequential(conv, BN, ReLU)`` stage of
the SmallCNN. Its target is the module's own output (after the residual add and ReLU).
Layers outside any block (the stem conv, the classifier) are reconstructed alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..calib import CalibrationSet
from ..layers import LayerPlan, forward_calls
from .cache import ActivationStore, CacheBudget
from .rounding import nearest_weight


@dataclass
class Unit:
    """One reconstruction problem.

    Attributes:
        name: module name (``model.get_submodule(name)``); a layer's name for layer units.
        module: the module whose input is cached and whose output is the target.
        layers: the planned layers inside it, with their names relative to ``module``.
        kind: "layer" or "block".
    """

    name: str
    module: nn.Module
    layers: list[tuple[str, LayerPlan]]
    kind: str


def _count_layers(module: nn.Module, layer_ids: set[int]) -> int:
    return sum(1 for m in module.modules() if id(m) in layer_ids)


def layer_units(model: nn.Module, plan: list[LayerPlan]) -> list[Unit]:
    """One unit per planned layer (AdaRound)."""
    return [Unit(lp.name, lp.module, [("", lp)], "layer") for lp in plan]


def block_units(model: nn.Module, plan: list[LayerPlan]) -> list[Unit]:
    """BRECQ's partition: blocks as defined in the module docstring, plus single-layer
    units for the planned layers no block contains."""
    layer_ids = {id(lp.module) for lp in plan}
    by_id = {id(lp.module): lp for lp in plan}
    units: list[Unit] = []
    claimed: set[int] = set()

    def visit(prefix: str, module: nn.Module, is_root: bool) -> None:
        if id(module) in layer_ids:
            return
        children = list(module.named_children())
        if (
            not is_root
            and _count_layers(module, layer_ids) >= 1
            and all(_count_layers(c, layer_ids) <= 1 for _, c in children)
        ):
            inner = []
            for sub, m in module.named_modules():
                if id(m) in layer_ids and id(m) not in claimed:
                    claimed.add(id(m))
                    inner.append((sub, by_id[id(m)]))
            units.append(Unit(prefix, module, inner, "block"))
            return
        for cname, child in children:
            visit(f"{prefix}.{cname}" if prefix else cname, child, False)

    visit("", model, True)
    for lp in plan:
        if id(lp.module) not in claimed:
            units.append(Unit(lp.name, lp.module, [("", lp)], "layer"))
    return units


@torch.no_grad()
def forward_order(model: nn.Module, units: list[Unit], probe: torch.Tensor) -> list[Unit]:
    """``units`` sorted by when they first run in ``model(probe)``.

    Raises:
        ValueError: a unit that does not run, or runs more than once per forward (its
            input would be ambiguous), named.
    """
    calls = forward_calls(model, [u.module for u in units], probe)
    for u, c in zip(units, calls, strict=True):
        if len(c) != 1:
            raise ValueError(
                f"model: {u.kind} {u.name!r} runs {len(c)} time(s) per forward pass; reconstruction "
                "needs each layer/block to run exactly once (unused or shared modules are not supported)"
            )
    first = {id(u): c[0] for u, c in zip(units, calls, strict=True)}
    return sorted(units, key=lambda u: first[id(u)])


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the unit's input is stored."""


def _no_inplace(model: nn.Module) -> list[nn.Module]:
    # An in-place activation after a unit would rewrite a captured output or break the
    # gradient hook; turn them off for capture passes (results are identical).
    changed = []
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
            changed.append(m)
    return changed


def _restore_inplace(mods: Iterable[nn.Module]) -> None:
    for m in mods:
        m.inplace = True


@torch.no_grad()
def capture_inputs(
    model: nn.Module, unit: Unit, calib: CalibrationSet, budget: CacheBudget, device: torch.device
) -> torch.Tensor:
    """The unit's input over the whole calibration set, running only the network prefix.

    Returns:
        float32 [N, ...] (in RAM or file-backed).
    """
    store = ActivationStore(calib.num_samples, budget, device)

    def hook(mod, args):
        if not args or not isinstance(args[0], torch.Tensor):
            raise ValueError(f"model: {unit.kind} {unit.name!r} takes no tensor input")
        store.append(args[0])
        raise _Stop

    inplace = _no_inplace(model)
    h = unit.module.register_forward_pre_hook(hook)
    try:
        for x in calib.batches(device):
            try:
                model(x)
            except _Stop:
                pass
    finally:
        h.remove()
        _restore_inplace(inplace)
    return store.tensor


@torch.no_grad()
def capture_outputs(
    model: nn.Module,
    units: list[Unit],
    calib: CalibrationSet,
    budget: CacheBudget,
    device: torch.device,
) -> list[torch.Tensor]:
    """Every unit's output over the calibration set, in one pass of ``model``."""
    stores = [ActivationStore(calib.num_samples, budget, device) for _ in units]
    handles = []
    for u, s in zip(units, stores, strict=True):

        def hook(mod, args, out, s=s, u=u):
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"model: {u.kind} {u.name!r} returns {type(out).__name__}, not a tensor"
                )
            s.append(out)

        handles.append(u.module.register_forward_hook(hook))
    inplace = _no_inplace(model)
    try:
        for x in calib.batches(device):
            model(x)
    finally:
        for h in handles:
            h.remove()
        _restore_inplace(inplace)
    return [s.tensor for s in stores]


def capture_fisher(
    qmodel: nn.Module,
    fp_model: nn.Module,
    unit_q: Unit,
    calib: CalibrationSet,
    budget: CacheBudget,
    device: torch.device,
    code_batch: int = 32,
) -> torch.Tensor:
    """BRECQ's Fisher weights for a unit: ``|dL/d out| + 1`` with
    ``L = KL(softmax(fp logits) || softmax(q logits))`` summed over a batch and divided by
    ``code_batch`` (the code's ``reduction='batchmean'`` over batches of 32), the gradient
    taken at the unit's output in the partly quantized model (yhhhli/BRECQ
    quant/data_utils.py ``save_grad_data`` / ``GetLayerGrad``).

    As there, the network is quantized up to and including the unit
    (``quantize_model_till``): earlier units with their learned rounding, the unit itself
    round-to-nearest on its grid (its weight quantizer before AdaRound replaces it). With
    the unit left in float, the first unit would see identical float and "quantized"
    logits, a zero gradient, and all-ones weights. The unit's weights are restored after.
    """
    store = ActivationStore(calib.num_samples, budget, device)
    grads: list[torch.Tensor] = []

    def hook(mod, args, out):
        # A fresh leaf: the gradient stops here, and no parameter gradient is computed.
        leaf = out.detach().requires_grad_()
        leaf.register_hook(lambda g: grads.append(g.detach()))
        return leaf

    saved = [(lp.module.weight, lp.module.weight.detach().clone()) for _, lp in unit_q.layers]
    inplace = _no_inplace(qmodel)
    h = unit_q.module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for (w, _), (_, lp) in zip(saved, unit_q.layers, strict=True):
                w.copy_(nearest_weight(w, lp.spec).to(w.dtype))
        for x in calib.batches(device):
            with torch.no_grad():
                p_fp = torch.softmax(fp_model(x), dim=1)
            with torch.enable_grad():
                out = qmodel(x)
                loss = (
                    torch.nn.functional.kl_div(torch.log_softmax(out, dim=1), p_fp, reduction="sum")
                    / code_batch
                )
                grads.clear()
                loss.backward()
            store.append(grads[0].abs() + 1.0)
    finally:
        h.remove()
        with torch.no_grad():
            for w, orig in saved:
                w.copy_(orig)
        _restore_inplace(inplace)
    return store.tensor
