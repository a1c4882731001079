"""Logits of N same-architecture models on one batch, evaluated together.

The audit queries every shadow model on every example. With ``torch.func`` the N models'
parameters and buffers are stacked along a new leading axis and one ``vmap`` of
``functional_call`` runs them all, so each layer is one batched kernel call instead of N
small ones. Architectures that cannot be stacked (different shapes, custom ops without
a batching rule) fall back to a per-model loop with identical results. On this project's
CPU the loop measured faster (see ``DEFAULT_METHOD``), so ``method="auto"`` loops there;
``method="vmap"`` forces the stacked path.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

# The faster of the two on this project's CPU benchmark (benchmarks/bench_batched.py,
# numbers in benchmarks/RESULTS.md, "Batched shadow logits"): on CPU vmap turns every
# conv into a grouped conv, which oneDNN runs slower than N plain convs, and stacking
# copies all N models' parameters on every call.
DEFAULT_METHOD = "loop"

# Images (N models x chunk) evaluated at once: bounds activation memory. 2**20 input
# pixels is e.g. 1024 model-images at 32x32 (ResNet-18 peak ~1 GB of activations), 256
# at 64x64, 16384 at 8x8.
_PIXEL_BUDGET = 1 << 20


def _check(models: Sequence[nn.Module], x: torch.Tensor) -> None:
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or len(models) == 0:
        raise ValueError("models: expected a non-empty sequence of nn.Module")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{i}]: expected an nn.Module, got {type(m).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32 or x.dim() != 4:
        raise ValueError(f"x: expected float32 [B, C, H, W], got {x.dtype} {list(x.shape)}")


def _chunk(n_models: int, x: torch.Tensor, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        return chunk_size
    pixels = max(1, x.shape[2] * x.shape[3])
    return max(1, _PIXEL_BUDGET // (n_models * pixels))


@torch.no_grad()
def loop_logits(
    models: Sequence[nn.Module], x: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """The reference: each model in eval mode on ``x`` in chunks -> float32 [N, B, K].

    Models are switched to eval mode for the call and restored to their previous mode.
    """
    _check(models, x)
    step = _chunk(1, x, chunk_size)
    outs = []
    for m in models:
        was_training = m.training
        m.eval()
        try:
            if len(x) == 0:
                outs.append(m(x))
            else:
                outs.append(torch.cat([m(x[i : i + step]) for i in range(0, len(x), step)]))
        finally:
            m.train(was_training)
    return torch.stack(outs).to(torch.float32)


@torch.no_grad()
def vmap_logits(
    models: Sequence[nn.Module], x: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """All models at once with ``stack_module_state`` + ``vmap(functional_call)``.

    BatchNorm uses running statistics (the template module is in eval mode). Raises
    whatever torch.func raises when the models cannot be stacked or vmapped.
    """
    _check(models, x)
    params, buffers = torch.func.stack_module_state(list(models))
    # The template's own tensors are never read (functional_call substitutes the stacked
    # ones); put it on the meta device so it costs no memory.
    template = copy.deepcopy(models[0]).to("meta").eval()

    def one(p, b, xb):
        return torch.func.functional_call(template, (p, b), (xb,))

    run = torch.func.vmap(one, in_dims=(0, 0, None))
    step = _chunk(len(models), x, chunk_size)
    if len(x) == 0:
        return run(params, buffers, x).to(torch.float32)
    outs = [run(params, buffers, x[i : i + step]) for i in range(0, len(x), step)]
    return torch.cat(outs, dim=1).to(torch.float32)


@torch.no_grad()
def to_inference_form(model: nn.Module) -> nn.Module:
    """Prepare a model for fast scoring, in place, and return it.

    Eval mode; every BatchNorm2d that directly follows a Conv2d folded into it with its
    running statistics (what eval-mode BN computes); parameters in channels_last, the
    layout oneDNN's convolutions run natively (feed channels_last inputs too). The model
    computes the same function up to float32 rounding (~1e-7 relative on the logits),
    and its Conv2d/Linear weights stay exactly what they were when no BN follows them.
    Measured with the 2-thread loop (benchmarks/RESULTS.md, "Batched shadow logits"):
    1.55x faster on 16 Fashion-MNIST SmallCNNs, 1.41x on digits, 1.34x on 8 ResNet-18s;
    oneDNN otherwise reorders every NCHW activation to its own layout and runs BN as a
    separate pass over memory.
    """
    from ptqx.quant.bn import fold_batchnorm  # quant sits below models in the layering

    model.eval()
    fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last)


def batched_logits(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    *,
    method: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Logits of N same-architecture models on one batch, in eval mode.

    Args:
        models: N modules with the same architecture, on ``x``'s device.
        x: float32 [B, C, H, W], already normalised.
        method: "auto" (``DEFAULT_METHOD``, falling back to the loop when the models
            cannot be stacked or vmapped), "vmap" (no fallback) or "loop".
        chunk_size: examples per evaluation step; default bounds N * chunk * H * W to
            about 2**20 pixels.

    Returns:
        float32 [N, B, K].
    """
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"method: expected 'auto', 'vmap' or 'loop', got {method!r}")
    if (
        method == "loop"
        or (method == "auto" and DEFAULT_METHOD == "loop")
        or (method == "auto" and len(models) == 1)
    ):
        return loop_logits(models, x, chunk_size=chunk_size)
    if method == "vmap":
        return vmap_logits(models, x, chunk_size=chunk_size)
    _check(models, x)
    try:
        return vmap_logits(models, x, chunk_size=chunk_size)
    except Exception as exc:  # stacking/vmap support varies by architecture and op
        warnings.warn(
            f"batched_logits: cannot vmap these models ({type(exc).__name__}: {exc}); "
            "evaluating them one by one",
            RuntimeWarning,
            stacklevel=2,
        )
        return loop_logits(models, x, chunk_size=chunk_size)
