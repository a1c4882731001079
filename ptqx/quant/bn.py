"""BatchNorm folding (before quantization) and re-estimation (after it).

Folding is what BRECQ and the paper's OBC path do so that the quantized weight is the
one the network effectively applies; re-estimation (OBC's "batchnorm tuning") repairs
the shift quantization causes in each channel's activation statistics.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import fx, nn

from .calib import CalibrationSet, as_calibration
from .layers import forward_calls, parameter_holders


def _conv_bn_pairs_fx(model: nn.Module) -> list[tuple[str, str]] | None:
    """(conv name, bn name) where a BatchNorm2d's only input is a Conv2d output used
    nowhere else, and the traced forward calls that conv and that BN once each and reads
    neither's parameters directly; None when the model cannot be symbolically traced."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001  (any tracing failure -> structural fallback)
        return None
    mods = dict(model.named_modules())
    nodes = list(gm.graph.nodes)
    # Folding rewrites the conv for every call and removes the BN from every call: a
    # second call of either (a shared module) would compute something else afterwards.
    calls = Counter(n.target for n in nodes if n.op == "call_module")
    attrs = [n.target for n in nodes if n.op == "get_attr"]

    def used_directly(name: str) -> bool:
        return any(a.startswith(name + ".") for a in attrs)

    pairs = []
    for node in nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(mods.get(src.target), nn.Conv2d)
            and len(src.users) == 1
            and calls[src.target] == 1
            and calls[node.target] == 1
            and not used_directly(src.target)
            and not used_directly(node.target)
        ):
            pairs.append((src.target, node.target))
    return pairs


def _conv_bn_pairs_sequential(
    model: nn.Module, calib: CalibrationSet | None
) -> list[tuple[str, str]]:
    """Adjacent (Conv2d, BatchNorm2d) children of nn.Sequential containers, each module
    registered once in the model and, when ``calib`` is given, called once by a probe
    forward pass (without it, a module the forward also calls outside its Sequential
    cannot be seen)."""
    registered = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    pairs, mods = [], []
    for pname, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (a, ma), (b, mb) in zip(children, children[1:], strict=False):
            if isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d):
                if registered[id(ma)] != 1 or registered[id(mb)] != 1:
                    continue
                pre = f"{pname}." if pname else ""
                pairs.append((pre + a, pre + b))
                mods.append((ma, mb))
    if pairs and calib is not None:
        from .api import model_device

        probe = next(iter(calib.batches(model_device(model))))[:1]
        flat = [m for pair in mods for m in pair]
        training = [(m, m.training) for m in model.modules()]
        model.eval()  # the probe must not update running statistics
        try:
            counts = [len(c) for c in forward_calls(model, flat, probe)]
        finally:
            for m, t in training:
                m.train(t)
        pairs = [p for i, p in enumerate(pairs) if counts[2 * i] == 1 and counts[2 * i + 1] == 1]
    return pairs


def conv_bn_pairs(
    model: nn.Module, *, calib: CalibrationSet | None = None
) -> list[tuple[str, str]]:
    """Conv2d -> BatchNorm2d pairs that can be folded: the BN's only input is the conv's
    output, and each of the two runs once per forward pass. Traced with torch.fx, else
    found as adjacent children of nn.Sequential containers (call counts then come from
    one probe forward pass on ``calib``'s first sample when given)."""
    pairs = _conv_bn_pairs_fx(model)
    if pairs is None:
        pairs = _conv_bn_pairs_sequential(model, calib)
    # Each conv and BN appears at most once: both searches keep only modules called (fx)
    # or registered (Sequential) once, so no pair needs deduplicating.
    return pairs


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


@torch.no_grad()
def fold_batchnorm(
    model: nn.Module, *, calib: CalibrationSet | torch.Tensor | None = None
) -> list[tuple[str, str]]:
    """Fold every BatchNorm2d that directly follows a Conv2d into it, in place.

    ``W' = W * g``, ``b' = beta + (b - mean) * g`` with ``g = gamma / sqrt(var + eps)``
    (running statistics, i.e. eval-mode semantics); the BN becomes ``nn.Identity``.
    A pair is left alone when the conv or the BN runs more than once per forward pass
    (shared modules), when the BN keeps no running statistics, or when the conv's
    parameters are shared with another module (tied weights).

    Args:
        model: modified in place.
        calib: only used when ``model`` cannot be traced with torch.fx: one sample of it
            is run to check that each Sequential (conv, BN) pair is called once.
    Returns:
        The folded (conv name, bn name) pairs.
    """
    cset = None if calib is None else as_calibration(calib)
    holders = parameter_holders(model)
    folded = []
    for cname, bname in conv_bn_pairs(model, calib=cset):
        conv = model.get_submodule(cname)
        bn = model.get_submodule(bname)
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        if any(len(holders[id(p)]) > 1 for p in conv.parameters(recurse=False)):
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
        folded.append((cname, bname))
    return folded


class _Moments:
    """Per-channel count, mean and sum of squared deviations of a BN's inputs, merged
    batch by batch in float64 (Chan et al.'s parallel update), so every sample weighs the
    same whatever the batch sizes."""

    def __init__(self) -> None:
        self.n = 0
        self.batches = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        # [B, C, *] -> [C, B * prod(*)]
        cols = x.detach().transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
        nb = cols.shape[1]
        mb = cols.mean(1)
        m2b = (cols - mb[:, None]).pow(2).sum(1)
        if self.mean is None:
            self.mean, self.m2 = mb, m2b
        else:
            delta = mb - self.mean
            tot = self.n + nb
            self.mean = self.mean + delta * (nb / tot)
            self.m2 = self.m2 + m2b + delta.pow(2) * (self.n * nb / tot)
        self.n += nb
        self.batches += 1


def _no_single_sample_batches(batches: list[torch.Tensor]) -> list[torch.Tensor]:
    # Train-mode BatchNorm1d cannot normalise a batch of one sample ("Expected more than 1
    # value per channel"), and one sample's batch statistics would normalise it on its
    # own: merge such a batch into its neighbour.
    out: list[torch.Tensor] = []
    for b in batches:
        if out and (b.shape[0] == 1 or out[-1].shape[0] == 1):
            out[-1] = torch.cat([out[-1], b])
        else:
            out.append(b)
    return out


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, calib: CalibrationSet | torch.Tensor) -> int:
    """Recompute every BatchNorm's running mean/var on ``calib``, in place.

    The calibration set runs once with only the BN layers in train mode (dropout etc.
    stay in eval), so each BN normalises with batch statistics as in OBC's batchnorm
    tuning; each BN's new running mean and (unbiased) variance are those of all the
    inputs it received over the whole set, every sample weighted equally whatever the
    batch sizes. A batch of one sample is merged into its neighbour. A BN the forward
    never reaches keeps its statistics. The model is left in eval mode.

    Returns:
        Number of BatchNorm layers re-estimated.
    Raises:
        ValueError: fewer than 2 calibration samples.
    """
    from .api import model_device

    cset = as_calibration(calib)
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns:
        return 0
    if cset.num_samples < 2:
        raise ValueError(
            f"calib: BatchNorm re-estimation needs at least 2 calibration samples, got {cset.num_samples}"
        )
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in bns]
    moments = [_Moments() for _ in bns]
    handles = [
        m.register_forward_pre_hook(lambda mod, args, s=s: s.add(args[0]))
        for m, s in zip(bns, moments, strict=True)
    ]
    model.eval()
    for m in bns:
        m.train()
    try:
        for x in _no_single_sample_batches(list(cset.batches(model_device(model)))):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.eval()
        # The BNs' own momentum updates during the pass are discarded either way.
        for m, buf in zip(bns, saved, strict=True):
            for k, v in buf.items():
                getattr(m, k).copy_(v)
    done = 0
    for m, s in zip(bns, moments, strict=True):
        if s.n == 0:
            continue
        m.running_mean.copy_(s.mean.to(m.running_mean.dtype))
        m.running_var.copy_((s.m2 / max(s.n - 1, 1)).to(m.running_var.dtype))
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(s.batches)
        done += 1
    return done
