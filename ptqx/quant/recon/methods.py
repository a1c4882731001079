"""AdaRound and BRECQ registered as ptqx quantizers ("adaround", "brecq").

Both learn each weight's rounding direction (``SoftRounding``) by reconstructing a
unit's output from cached calibration activations:

- "adaround" (Nagel et al. 2020): every Conv2d/Linear alone, in forward order; target =
  the layer's output in the float network.
- "brecq" (Li et al. 2021): BatchNorm folded into its conv first; every residual block
  (all its convs and the shortcut conv jointly, target = the block output after the add
  and ReLU) and the remaining layers (stem, classifier) alone; optional Fisher-weighted
  loss.

Both default to the "asym" reconstruction of AdaRound/BRECQ: the unit's input comes
from the network whose earlier units are already quantized, the target from the float
network. Inputs, targets (and Fisher weights) are cached once per unit in float32 under
a memory budget (spilling to disk), so no iteration re-runs any part of the network.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..api import ProgressFn, model_device, register_quantizer
from ..bn import fold_batchnorm
from ..calib import CalibrationSet
from ..layers import LayerPlan, store_quantized
from .cache import CacheBudget
from .rounding import SoftRounding, beta_schedule
from .units import (
    Unit,
    block_units,
    capture_fisher,
    capture_inputs,
    capture_outputs,
    forward_order,
    layer_units,
)

#: Settings of the paper's code (yhhhli/BRECQ, QuTongxi/Quant-MIA): 20000 Adam steps of
#: batch 32 from 1024 calibration images, 20% warm-up, beta 20 -> 2, lr 1e-3.
#: "ptqx" keeps the same schedule but uses every calibration sample given. Fewer steps
#: were measured NOT to reach the same loss (Fashion-MNIST CNN, AdaRound 2 bits: the
#: cached-set loss roughly halves from 2000 to 5000 steps on every layer, see
#: benchmarks/RESULTS.md), so the step count stays 20000; pass ``iters`` to trade
#: quality for time.
PRESETS: dict[str, dict] = {
    "faithful": {
        "iters": 20000,
        "recon_batch_size": 32,
        "lr": 1e-3,
        "warmup": 0.2,
        "beta_start": 20.0,
        "beta_end": 2.0,
        "num_calib": 1024,
    },
    "ptqx": {
        "iters": 20000,
        "recon_batch_size": 32,
        "lr": 1e-3,
        "warmup": 0.2,
        "beta_start": 20.0,
        "beta_end": 2.0,
        "num_calib": None,
    },
}


@dataclass(frozen=True)
class ReconConfig:
    """Resolved reconstruction settings (validated on creation; saved in the report).

    Attributes:
        preset: "ptqx" or "faithful" (the source of every field left as None by the caller).
        iters: Adam steps per unit.
        recon_batch_size: minibatch drawn (without replacement) from the cached set per step.
        lr: Adam learning rate on the rounding variables.
        reg_weight: lambda of the rounding regulariser.
        warmup: share of the steps with no regulariser.
        beta_start, beta_end: regulariser exponent, annealed linearly after the warm-up.
        num_calib: use the first ``num_calib`` calibration samples (None: all).
        loss: "mse" or "fisher" (BRECQ's diagonal Fisher weighting).
        asym: inputs from the partly quantized network (True) or the float one (False).
        seed: seeds the minibatch sampling; same seed, same quantized weights (CPU).
        cache_memory_mb: RAM budget of the activation caches; the rest spills to disk.
        cache_dir: where spilled caches go (None: the system temp folder).
        log_every: emit an "iter" progress event every this many steps (0: never).
    """

    preset: str
    iters: int
    recon_batch_size: int
    lr: float
    reg_weight: float
    warmup: float
    beta_start: float
    beta_end: float
    num_calib: int | None
    loss: str
    asym: bool
    seed: int
    cache_memory_mb: float
    cache_dir: str | None
    log_every: int

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"{name}: expected {what}, got {getattr(self, name)!r}")

        need(self.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}")
        need(_is_int(self.iters) and self.iters >= 1, "iters", "an int >= 1")
        need(
            _is_int(self.recon_batch_size) and self.recon_batch_size >= 1,
            "recon_batch_size",
            "an int >= 1",
        )
        need(_is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(_is_num(self.reg_weight) and self.reg_weight >= 0, "reg_weight", "a number >= 0")
        need(_is_num(self.warmup) and 0 <= self.warmup < 1, "warmup", "a number in [0, 1)")
        need(_is_num(self.beta_start) and self.beta_start >= 1, "beta_start", "a number >= 1")
        need(
            _is_num(self.beta_end) and 1 <= self.beta_end <= self.beta_start,
            "beta_end",
            "in [1, beta_start]",
        )
        need(
            self.num_calib is None or (_is_int(self.num_calib) and self.num_calib >= 1),
            "num_calib",
            "None or an int >= 1",
        )
        need(self.loss in ("mse", "fisher"), "loss", "'mse' or 'fisher'")
        need(isinstance(self.asym, bool), "asym", "a bool")
        need(_is_int(self.seed), "seed", "an int")
        need(
            _is_num(self.cache_memory_mb) and self.cache_memory_mb >= 0,
            "cache_memory_mb",
            "a number >= 0",
        )
        need(_is_int(self.log_every) and self.log_every >= 0, "log_every", "an int >= 0")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def make_config(preset: str, **given) -> ReconConfig:
    """``ReconConfig`` from a preset, overridden by every argument that is not None."""
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in given.items() if v is not None or k in ("cache_dir",)})
    return ReconConfig(preset=preset, **values)


def _recon_loss(
    out: torch.Tensor, target: torch.Tensor, fisher: torch.Tensor | None
) -> torch.Tensor:
    """BRECQ's ``lp_loss(p=2)``: squared error summed over channels (dim 1), averaged over
    the batch and positions; "fisher_diag" weights it by the squared Fisher weights."""
    err = (out - target).pow(2)
    if fisher is not None:
        err = err * fisher.pow(2)
    return err.sum(1).mean()


@torch.no_grad()
def _full_loss(
    unit: Unit, weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, chunk: int = 256
) -> float:
    """Mean reconstruction loss over the whole cached set, with the given weights."""
    total, n = 0.0, x.shape[0]
    for i in range(0, n, chunk):
        out = functional_call(unit.module, weights, (x[i : i + chunk],))
        total += float((out - y[i : i + chunk]).pow(2).sum(1).mean()) * min(chunk, n - i)
    return total / n


def _param_name(sub: str) -> str:
    return f"{sub}.weight" if sub else "weight"


def reconstruct_unit(
    unit: Unit,
    x: torch.Tensor,
    y: torch.Tensor,
    fisher: torch.Tensor | None,
    cfg: ReconConfig,
    gen: torch.Generator,
    progress: ProgressFn,
    method: str,
) -> tuple[list[tuple[LayerPlan, SoftRounding]], dict]:
    """Learn the rounding of every layer of ``unit`` on cached ``x`` -> ``y``.

    Args:
        x: float32 [N, ...] unit inputs; y: float32 [N, ...] targets; fisher: like y or None.
    Returns:
        ([(layer, its SoftRounding)], stats with the full-set loss of RTN and of the result).
    """
    device = unit.layers[0][1].module.weight.device
    states = [(lp, SoftRounding(lp.module.weight, lp.spec)) for _, lp in unit.layers]
    names = [_param_name(sub) for sub, _ in unit.layers]
    opt = torch.optim.Adam([s.alpha for _, s in states], lr=cfg.lr)
    n = x.shape[0]
    b = cfg.recon_batch_size
    for t in range(1, cfg.iters + 1):
        idx = torch.randperm(n, generator=gen)[:b]
        xb, yb = x[idx].to(device), y[idx].to(device)
        fb = fisher[idx].to(device) if fisher is not None else None
        beta = beta_schedule(t, cfg.iters, cfg.warmup, cfg.beta_start, cfg.beta_end)
        weights, reg = {}, None
        for name, (_, s) in zip(names, states, strict=True):
            w_soft, r = s.soft(beta)
            weights[name] = w_soft
            reg = r if reg is None else reg + r
        rec = _recon_loss(functional_call(unit.module, weights, (xb,)), yb, fb)
        loss = rec + cfg.reg_weight * reg if beta > 0 else rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.log_every and (t % cfg.log_every == 0 or t == cfg.iters):
            progress(
                {
                    "event": "iter",
                    "method": method,
                    "unit": unit.name,
                    "layer": unit.name,
                    "iteration": t,
                    "iters": cfg.iters,
                    "loss": float(loss.detach()),
                    "rec": float(rec.detach()),
                    "reg": float(reg.detach()) if beta > 0 else 0.0,
                    "beta": beta,
                }
            )
    hard = {name: s.hard_weight() for name, (_, s) in zip(names, states, strict=True)}
    rtn = {name: s.nearest_weight() for name, (_, s) in zip(names, states, strict=True)}
    stats = {"rec_rtn": _full_loss(unit, rtn, x, y), "rec_final": _full_loss(unit, hard, x, y)}
    return states, stats


def run_reconstruction(
    model: nn.Module,
    plan: list[LayerPlan],
    calib: CalibrationSet,
    units: list[Unit],
    cfg: ReconConfig,
    progress: ProgressFn,
    method: str,
) -> dict:
    """Reconstruct ``units`` in forward order, quantizing ``model`` in place.

    Returns:
        The report stored as ``model.ptqx_recon``: config and, per unit, kind, layers,
        seconds and the full-calibration-set loss with RTN and with the learned rounding.
    """
    n = calib.num_samples
    if cfg.num_calib is not None and n > cfg.num_calib:
        xs = torch.cat(list(calib.batches()))[: cfg.num_calib]
        calib = CalibrationSet(xs, batch_size=len(next(iter(calib.batches()))))
        n = cfg.num_calib
    if n < cfg.recon_batch_size:
        raise ValueError(
            f"calib: reconstruction draws minibatches of recon_batch_size={cfg.recon_batch_size} "
            f"samples; the calibration set has only {n} (give more samples or a smaller recon_batch_size)"
        )
    device = model_device(model)
    probe = next(iter(calib.batches(device)))[:1]
    units = forward_order(model, units, probe)
    fp_model = copy.deepcopy(model)
    budget = CacheBudget(int(cfg.cache_memory_mb * 2**20), cfg.cache_dir)
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grad_flags:
        p.requires_grad_(False)
    for p in fp_model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    report = {"method": method, "config": asdict(cfg), "units": []}
    done = 0
    try:
        fp_units = [Unit(u.name, fp_model.get_submodule(u.name), u.layers, u.kind) for u in units]
        targets = capture_outputs(fp_model, fp_units, calib, budget, device)
        for k, unit in enumerate(units):
            t0 = time.perf_counter()
            x = capture_inputs(
                model if cfg.asym else fp_model,
                unit if cfg.asym else fp_units[k],
                calib,
                budget,
                device,
            )
            fisher = (
                capture_fisher(model, fp_model, unit, calib, budget, device)
                if cfg.loss == "fisher"
                else None
            )
            states, stats = reconstruct_unit(
                unit, x, targets[k], fisher, cfg, gen, progress, method
            )
            for lp, s in states:
                store_quantized(
                    lp, s.hard_weight().reshape(s.shape[0], -1), s.scale, s.zero, method
                )
            for t in (x, fisher, targets[k]):
                budget.release(t)
            targets[k] = None
            secs = time.perf_counter() - t0
            report["units"].append(
                {
                    "unit": unit.name,
                    "kind": unit.kind,
                    "layers": [lp.name for _, lp in unit.layers],
                    "seconds": secs,
                    **stats,
                }
            )
            for lp, _ in states:
                progress(
                    {
                        "event": "layer",
                        "method": method,
                        "layer": lp.name,
                        "unit": unit.name,
                        "index": done,
                        "total": len(plan),
                        "seconds": secs / len(states),
                        **stats,
                    }
                )
                done += 1
        report["spilled_bytes"] = budget.spilled
    finally:
        budget.close()
        for p, flag in grad_flags:
            p.requires_grad_(flag)
    return report


_COMMON_DOC = """
    Options (None = the preset's value; see :data:`PRESETS`):
        preset: "ptqx" (default) or "faithful" (the paper code's 20000 steps on 1024 images).
        iters, recon_batch_size, lr, warmup, beta_start, beta_end, num_calib: see
            :class:`ReconConfig`.
        reg_weight: lambda of the rounding regulariser.
        asym: inputs from the partly quantized network (AdaRound's "asym"), default True.
        seed: minibatch sampling seed.
        cache_memory_mb, cache_dir: activation cache RAM budget and spill folder.
        log_every: steps between "iter" progress events (iteration, loss, rec, reg, beta).
"""


@register_quantizer("adaround", needs_calib=True)
def quantize_adaround(
    model: nn.Module,
    plan: list[LayerPlan],
    calib: CalibrationSet | None,
    *,
    progress: ProgressFn,
    preset: str = "ptqx",
    iters: int | None = None,
    recon_batch_size: int | None = None,
    lr: float | None = None,
    reg_weight: float = 0.001,
    warmup: float | None = None,
    beta_start: float | None = None,
    beta_end: float | None = None,
    num_calib: int | None = None,
    asym: bool = True,
    seed: int = 0,
    cache_memory_mb: float = 2048,
    cache_dir: str | None = None,
    log_every: int = 100,
) -> None:
    """AdaRound: layer-by-layer learned rounding (lambda 0.001 as in the paper's code)."""
    cfg = make_config(
        preset, iters=iters, recon_batch_size=recon_batch_size, lr=lr, reg_weight=reg_weight, warmup=warmup,
        beta_start=beta_start, beta_end=beta_end, num_calib=num_calib, loss="mse", asym=asym, seed=seed,
        cache_memory_mb=cache_memory_mb, cache_dir=cache_dir, log_every=log_every,
    )  # fmt: skip
    model.ptqx_recon = run_reconstruction(
        model, plan, calib, layer_units(model, plan), cfg, progress, "adaround"
    )


@register_quantizer("brecq", needs_calib=True)
def quantize_brecq(
    model: nn.Module,
    plan: list[LayerPlan],
    calib: CalibrationSet | None,
    *,
    progress: ProgressFn,
    preset: str = "ptqx",
    iters: int | None = None,
    recon_batch_size: int | None = None,
    lr: float | None = None,
    reg_weight: float = 0.01,
    warmup: float | None = None,
    beta_start: float | None = None,
    beta_end: float | None = None,
    num_calib: int | None = None,
    loss: str = "mse",
    asym: bool = True,
    seed: int = 0,
    cache_memory_mb: float = 2048,
    cache_dir: str | None = None,
    log_every: int = 100,
) -> None:
    """BRECQ: BN folded, block-wise reconstruction (lambda 0.01 as in the paper's code);
    ``loss="fisher"`` weights the error by BRECQ's diagonal Fisher estimate."""
    cfg = make_config(
        preset, iters=iters, recon_batch_size=recon_batch_size, lr=lr, reg_weight=reg_weight, warmup=warmup,
        beta_start=beta_start, beta_end=beta_end, num_calib=num_calib, loss=loss, asym=asym, seed=seed,
        cache_memory_mb=cache_memory_mb, cache_dir=cache_dir, log_every=log_every,
    )  # fmt: skip
    fold_batchnorm(model, calib=calib)
    model.ptqx_recon = run_reconstruction(
        model, plan, calib, block_units(model, plan), cfg, progress, "brecq"
    )


quantize_adaround.__doc__ += _COMMON_DOC
quantize_brecq.__doc__ += _COMMON_DOC
