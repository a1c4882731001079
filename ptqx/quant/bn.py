"""BatchNorm folding (before quantization) and re-estimation (after it).

Folding is what BRECQ and the paper's OBC path do so that the quantized weight is the
one the network effectively applies; re-estimation (OBC's "batchnorm tuning") repairs
the shift quantization causes in each channel's activation statistics.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .calib import CalibrationSet


def _conv_bn_pairs_fx(model: nn.Module) -> list[tuple[str, str]] | None:
    """(conv name, bn name) where a BatchNorm2d's only input is a Conv2d output used
    nowhere else; None when the model cannot be symbolically traced."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001  (any tracing failure -> structural fallback)
        return None
    mods = dict(model.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(mods.get(src.target), nn.Conv2d)
            and len(src.users) == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


def _conv_bn_pairs_sequential(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for pname, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (a, ma), (b, mb) in zip(children, children[1:], strict=False):
            if isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d):
                pre = f"{pname}." if pname else ""
                pairs.append((pre + a, pre + b))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Conv2d -> BatchNorm2d pairs that can be folded (traced with torch.fx, else found
    as adjacent children of nn.Sequential containers)."""
    pairs = _conv_bn_pairs_fx(model)
    if pairs is None:
        pairs = _conv_bn_pairs_sequential(model)
    # A module called twice would be folded twice; keep each conv/bn once.
    seen_c, seen_b, out = set(), set(), []
    for c, b in pairs:
        if c in seen_c or b in seen_b:
            continue
        seen_c.add(c)
        seen_b.add(b)
        out.append((c, b))
    return out


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


@torch.no_grad()
def fold_batchnorm(
    model: nn.Module, *, calib: CalibrationSet | None = None
) -> list[tuple[str, str]]:
    """Fold every BatchNorm2d that directly follows a Conv2d into it, in place.

    ``W' = W * g``, ``b' = beta + (b - mean) * g`` with ``g = gamma / sqrt(var + eps)``
    (running statistics, i.e. eval-mode semantics); the BN becomes ``nn.Identity``.

    Returns:
        The folded (conv name, bn name) pairs.
    """
    del calib  # folding uses the running statistics; the argument keeps one signature
    pairs = conv_bn_pairs(model)
    for cname, bname in pairs:
        conv = model.get_submodule(cname)
        bn = model.get_submodule(bname)
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        g = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
            bn.running_var + bn.eps
        )
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        w = conv.weight
        w.copy_(w * g.to(w.dtype).reshape(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_b = (beta + (b - bn.running_mean) * g).to(w.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_b)
        else:
            conv.bias.copy_(new_b)
        _set_submodule(model, bname, nn.Identity())
    return pairs


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, calib: CalibrationSet) -> int:
    """Recompute every BatchNorm's running mean/var on ``calib``, in place.

    Statistics are reset and accumulated as a cumulative average (``momentum=None``)
    over all calibration batches with only the BN layers in train mode (dropout etc.
    stay in eval); the model is left in eval mode.

    Returns:
        Number of BatchNorm layers re-estimated.
    """
    from .api import run_calibration

    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        run_calibration(model, calib)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.eval()
    return len(bns)
