"""Layer Hessians ``H = 2/n sum x x^T`` from calibration inputs, via forward hooks.

For a Linear layer, x runs over every input row (all leading dims flattened). For a
Conv2d, x runs over every receptive field the conv sees: the input is padded as the conv
pads it (zeros, or its ``padding_mode``; ``padding="same"`` included), unfolded with its
kernel size, dilation and stride, and split per group, so that ``conv(x)`` equals
``W_g @ X_g`` for every group g. Accumulation is in float64 (the protocol's OBC path);
``n`` counts the rows (receptive fields), not the images, so H differs from GPTQ's
per-image normalisation by a constant factor, which changes neither the OBC/GPTQ
solutions nor relative damping.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .calib import CalibrationSet
from .layers import LayerPlan, forward_calls, store_quantized, weight_rows
from .spec import fit_grid

# Unfolded rows per chunk (times C columns): bounds the float64 copy of a conv input and,
# with float32 products, how many rows one float32 partial sum runs over.
_CHUNK_ELEMS = 1 << 24
# Column block of the symmetric Gram product: above this width only the upper block
# triangle is multiplied (about half the flops of a full X^T X) and mirrored.
_GRAM_BLOCK = 512


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def check_hessian_options(damp: object, precision: object) -> torch.dtype:
    """Validate the options GPTQ and OBC share; returns the compute dtype."""
    if not (
        isinstance(damp, int | float)
        and not isinstance(damp, bool)
        and math.isfinite(damp)
        and damp >= 0
    ):
        raise ValueError(f"damp: expected a finite number >= 0, got {damp!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected 'float32' or 'float64', got {precision!r}")
    return PRECISIONS[precision]


GroupFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str], torch.Tensor]


def quantize_groups(lp: LayerPlan, w: torch.Tensor, h: torch.Tensor, quantize_rows: GroupFn):
    """Fit the layer's grid, then quantize each conv group's rows with its own Hessian.

    ``h`` is ``[groups, C, C]`` (one Hessian per conv group; 1 for Linear and ungrouped
    convs); ``quantize_rows(w_rows, h_group, scale_rows, zero_rows, what)`` returns the
    group's quantized rows, ``what`` names the layer/group for error messages.
    Returns ``(q, scale, zero)`` as ``quantize_with_hessians`` expects from ``layer_fn``.
    """
    scale, zero = fit_grid(w, lp.spec)
    groups = h.shape[0]
    per = w.shape[0] // groups
    q = torch.empty_like(w)
    for k in range(groups):
        rows = slice(k * per, (k + 1) * per)
        what = f"layer {lp.name!r}" + (f" group {k}" if groups > 1 else "")
        q[rows] = quantize_rows(w[rows], h[k], scale[rows], zero[rows], what)
    return q, scale, zero


def add_gram(acc: torch.Tensor, rows: torch.Tensor) -> None:
    """``acc += rows^T rows`` per group, exploiting symmetry.

    Args:
        acc: float64 [G, C, C] accumulator (updated in place).
        rows: float32/float64 [G, N, C]; the products run in its dtype and are added
            to ``acc`` in float64.
    """
    cols = rows.shape[2]
    if cols <= _GRAM_BLOCK:
        acc += torch.bmm(rows.transpose(1, 2), rows)
        return
    for i in range(0, cols, _GRAM_BLOCK):
        j = min(i + _GRAM_BLOCK, cols)
        # Block row i: columns i.. (diagonal block in full, the rest mirrored below).
        p = torch.bmm(rows[:, :, i:j].transpose(1, 2), rows[:, :, i:])
        acc[:, i:j, i:] += p
        if j < cols:
            acc[:, j:, i:j] += p[:, :, j - i :].transpose(1, 2)


def layer_input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The inputs each output channel's weights multiply, as rows.

    Args:
        module: Conv2d or Linear.
        x: the layer's input ([..., in_features] or [B, Cin, H, W]).
    Returns:
        float [G, N, C]: G groups (1 for Linear), N rows (receptive fields), C =
        ``Cin/groups*kh*kw`` (or in_features), columns ordered like
        ``weight[r].flatten()``.
    """
    if isinstance(module, nn.Linear):
        return x.reshape(1, -1, x.shape[-1])
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"module: expected Conv2d or Linear, got {type(module).__name__}")
    if x.dim() == 3:  # unbatched conv input
        x = x.unsqueeze(0)
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        # Same padding the conv's own forward applies (F.pad with its mode, then no padding).
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    else:
        padding = module.padding
    cols = F.unfold(
        x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride
    )
    g = module.groups
    b, ck, length = cols.shape
    # [B, G*C, L] -> [G, B*L, C]: channels of group g are contiguous in the unfold order.
    return cols.reshape(b, g, ck // g, length).permute(1, 0, 3, 2).reshape(g, b * length, ck // g)


class HessianAccumulator:
    """Running ``H = 2/n sum x x^T`` (float64 [G, C, C]) for one Conv2d/Linear layer.

    Args:
        module: the Conv2d/Linear.
        product_dtype: dtype of each chunk's ``X^T X`` before it is added to the float64
            sum: float32 as the official OBC code (``inp.matmul(inp.t()).double()``,
            twice as fast) or float64 for products in float64 too.
    """

    def __init__(self, module: nn.Module, *, product_dtype: torch.dtype = torch.float64):
        self.module = module
        self.product_dtype = product_dtype
        groups = module.groups if isinstance(module, nn.Conv2d) else 1
        cols = module.weight[0].numel()
        self.sum = torch.zeros(
            (groups, cols, cols), dtype=torch.float64, device=module.weight.device
        )
        self.n = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Add the layer input ``x`` (as the layer received it in a forward pass)."""
        rows = layer_input_rows(self.module, x.detach())
        step = max(1, _CHUNK_ELEMS // max(1, rows.shape[2]))
        for i in range(0, rows.shape[1], step):
            add_gram(self.sum, rows[:, i : i + step].to(self.product_dtype))
        self.n += rows.shape[1]

    def hessian(self) -> torch.Tensor:
        """float64 [G, C, C]; raises if no input was seen."""
        if self.n == 0:
            raise RuntimeError("no calibration input reached this layer (is it used in forward?)")
        return self.sum * (2.0 / self.n)


class _Stop(Exception):
    """Raised in a hook to skip the rest of a forward pass once all inputs are captured."""


@torch.no_grad()
def collect_hessians(
    model: nn.Module,
    plans: Iterable[LayerPlan],
    calib: CalibrationSet,
    *,
    stop_early: bool = True,
    product_dtype: torch.dtype = torch.float64,
    calls: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``calib`` through ``model`` once and return each planned layer's Hessian.

    A layer the forward calls several times (a shared module) gets the Hessian of all
    its calls' inputs together: one weight serves every call, so its reconstruction
    objective is the sum over calls, ``sum_c ||(W - Q) X_c||^2``.

    Args:
        model: the network (its current weights produce the inputs).
        plans: layers whose inputs to capture.
        calib: calibration batches (moved to the model's device).
        stop_early: skip the rest of a forward pass once every planned layer has had
            all its calls (sequential quantization only needs the prefix).
        calls: layer name -> calls per forward pass (from :func:`forward_calls`); when
            None, the first batch runs the whole network and counts them.
    Returns:
        name -> float64 [G, C, C].
    """
    from .api import model_device

    plans = list(plans)
    accs = {lp.name: HessianAccumulator(lp.module, product_dtype=product_dtype) for lp in plans}
    expected = None if calls is None else {n: int(calls[n]) for n in accs}
    seen = dict.fromkeys(accs, 0)
    pending = [0]

    def hook(name):
        def fn(mod, inputs):
            accs[name].add(inputs[0])
            seen[name] += 1
            if expected is not None and seen[name] == expected[name]:
                pending[0] -= 1
                if stop_early and pending[0] == 0:
                    raise _Stop

        return fn

    handles = [lp.module.register_forward_pre_hook(hook(lp.name)) for lp in plans]
    try:
        for x in calib.batches(model_device(model)):
            seen.update(dict.fromkeys(accs, 0))
            if expected is not None:
                pending[0] = sum(1 for n in accs if expected[n] > 0)
            try:
                model(x)
            except _Stop:
                pass
            if expected is None:
                expected = dict(seen)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, acc in accs.items():
        try:
            out[name] = acc.hessian()
        except RuntimeError as e:
            raise ValueError(f"calib: layer {name!r}: {e}") from None
    return out


def reconstruction_error(
    weight: torch.Tensor, qweight: torch.Tensor, hessian: torch.Tensor, n: int | None = None
) -> float:
    """``sum_g tr((W_g - Q_g) H_g (W_g - Q_g)^T) / 2`` = mean over rows of ``||(W - Q) x||^2``
    (times n for the total ``||W X - Q X||^2``).

    Args:
        weight, qweight: [R, ...] float; rows are split into G equal groups.
        hessian: float64 [G, C, C] (``2/n sum x x^T``).
        n: number of rows the Hessian averaged over; when given, the total error.
    """
    g = hessian.shape[0]
    d = (weight.reshape(weight.shape[0], -1) - qweight.reshape(qweight.shape[0], -1)).to(
        torch.float64
    )
    d = d.reshape(g, -1, d.shape[1])
    err = float(torch.einsum("grc,gcd,grd->", d, hessian, d)) / 2
    return err * n if n is not None else err


# Hessians kept alive at once when collected from the float model (bytes): bounds memory
# on ResNet-scale models (a 4608-column Hessian alone is 170 MB in float64).
_HESSIAN_BUDGET = 1 << 30

# A Cholesky pivot below this fraction of its own diagonal entry means the input is a
# linear combination of earlier ones up to rounding (float64: ~sqrt(n) * 1e-16; float32:
# ~1e-7): the Hessian is singular at that precision. Legitimately collinear inputs
# (neighbouring pixels) stay far above.
_PIVOT_RTOL = {torch.float64: 1e-10, torch.float32: 1e-6}


def invert_hessian(
    h: torch.Tensor, *, damp: float, what: str, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``(H + damp * mean(diag H) * I)^-1`` via Cholesky in ``dtype``, or a clear error.

    Args:
        h: float64 [C, C], symmetric positive semi-definite (dead inputs already set to 1).
        damp: relative damping (GPTQ's ``percdamp``); 0 for none.
        what: names the layer in error messages.
        dtype: float64, or float32 as the official GPTQ/OBC code (2-3x faster on the
            4608-column layers of ResNet-18, where the O(C^3) factorisations dominate).
    Returns:
        ``dtype`` [C, C], symmetric.
    Raises:
        ValueError: H (after damping) is not positive definite at that precision.
    """
    if damp:
        h = h + damp * torch.diagonal(h).mean() * torch.eye(
            h.shape[0], dtype=h.dtype, device=h.device
        )
    h = h.to(dtype)
    chol, info = torch.linalg.cholesky_ex(h)
    ratio = torch.diagonal(chol) ** 2 / torch.diagonal(h)
    tol = _PIVOT_RTOL[dtype]
    if int(info) != 0 or not bool(torch.isfinite(chol).all()) or bool((ratio < tol).any()):
        bad = int((~(ratio >= tol)).sum()) if int(info) == 0 else "some"
        prec = str(dtype).replace("torch.", "")
        raise ValueError(
            f"{what}: the Hessian is not invertible in {prec} ({bad} of {h.shape[0]} inputs are "
            f"linear combinations of the others{'' if not damp else f' even with damp={damp}'}); "
            + ("pass damp=0.01 (relative damping)" if not damp else f"pass a damp above {damp}")
            + ", more calibration data"
            + (", or precision='float64'" if dtype != torch.float64 else "")
        )
    hinv = torch.cholesky_inverse(chol)
    # cholesky_inverse is symmetric only up to rounding; consumers rely on symmetry.
    return (hinv + hinv.T) / 2


def prepare_layer(weight: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OBC/GPTQ's dead-input rule: inputs with H_ii = 0 get H_ii = 1 and W[:, i] = 0.

    Args:
        weight: float32 [R, C] (modified in place), rows split into G equal groups.
        hessian: float64 [G, C, C] (modified in place).
    Returns:
        (weight, hessian).
    """
    g = hessian.shape[0]
    per = weight.shape[0] // g
    for k in range(g):
        dead = torch.diagonal(hessian[k]) == 0
        if bool(dead.any()):
            idx = dead.nonzero().flatten()
            hessian[k, idx, idx] = 1
            weight[k * per : (k + 1) * per, idx] = 0
    return weight, hessian


def quantize_with_hessians(
    model: nn.Module,
    plan: list[LayerPlan],
    calib: CalibrationSet,
    *,
    sequential: bool,
    method: str,
    progress,
    layer_fn,
    product_dtype: torch.dtype = torch.float64,
) -> None:
    """Drive a Hessian-based quantizer over ``plan``.

    ``layer_fn(lp, weight [R, C] f32, hessian [G, C, C] f64) -> (Q [R, C], scale, zero)``
    quantizes one layer (dead inputs already handled); the result is stored with
    :func:`store_quantized` and reported through ``progress`` with its reconstruction
    error. Layers are taken in execution order (first call in a probe forward pass of
    one calibration sample), not declaration order. With ``sequential=True`` each
    layer's Hessian comes from the network whose earlier layers are already quantized
    (GPTQ's order: later layers see, and compensate, earlier errors; the forward stops
    after the layer's last call). Otherwise all come from the float network (the
    official OBC code), in as few passes as the memory budget (``_HESSIAN_BUDGET``)
    allows. A layer called several times per forward gets the Hessian of all its calls.
    """
    from .api import model_device

    if not isinstance(sequential, bool):
        raise ValueError(f"sequential: expected a bool, got {sequential!r}")
    # Execution order (module declaration order need not be it) and calls per forward,
    # from one probe sample.
    probe = next(iter(calib.batches(model_device(model))))[:1]
    calls = forward_calls(model, [lp.module for lp in plan], probe)
    counts = {lp.name: len(c) for lp, c in zip(plan, calls, strict=True)}
    first = {lp.name: c[0] if c else math.inf for lp, c in zip(plan, calls, strict=True)}
    plan = sorted(plan, key=lambda lp: first[lp.name])  # stable: unused layers keep order
    if sequential:
        source, chunks = model, [[lp] for lp in plan]
    else:
        source = copy.deepcopy(model)  # float weights for every pass
        mods = dict(source.named_modules())
        chunks, cur, size = [], [], 0
        for lp in plan:
            b = lp.groups * lp.columns**2 * 8
            if cur and size + b > _HESSIAN_BUDGET:
                chunks.append(cur)
                cur, size = [], 0
            cur.append(LayerPlan(lp.name, mods[lp.name], lp.spec))
            size += b
        if cur:
            chunks.append(cur)
    by_name = {lp.name: lp for lp in plan}
    index = 0
    for chunk in chunks:
        t0 = time.perf_counter()
        hs = collect_hessians(source, chunk, calib, product_dtype=product_dtype, calls=counts)
        t_h = (time.perf_counter() - t0) / len(chunk)
        for src in chunk:
            lp = by_name[src.name]
            t1 = time.perf_counter()
            h = hs.pop(lp.name)
            w = weight_rows(lp.module)
            w, h = prepare_layer(w, h)
            w_prepared = w.clone()
            q, scale, zero = layer_fn(lp, w, h)
            store_quantized(lp, q, scale, zero, method)
            err = reconstruction_error(w_prepared, lp.module.weight.detach(), h)
            progress(
                {
                    "event": "layer",
                    "method": method,
                    "layer": lp.name,
                    "index": index,
                    "total": len(plan),
                    "seconds": time.perf_counter() - t1 + t_h,
                    "hessian_seconds": t_h,
                    "error": err,
                }
            )
            index += 1
            del h
