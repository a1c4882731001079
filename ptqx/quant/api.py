"""The quantizer registry and the ``ptqx.quantize`` entry point."""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .calib import CalibrationSet, as_calibration
from .layers import QUANT_ATTR, LayerPlan, UnsupportedLayerError, find_layers, match_layers
from .spec import QuantSpec, normalize_bits

ProgressFn = Callable[[dict], None]
#: Quantizer signature: ``fn(model, plan, calib, *, progress, **options) -> None``.
QuantizerFn = Callable[..., None]


@dataclass(frozen=True)
class Quantizer:
    """A registered quantization method.

    Attributes:
        name: registry key (``method=`` of :func:`quantize`).
        fn: the function (see the signature in ``ptqx.quant``'s module docstring).
        needs_calib: whether ``calib`` is required.
        options: keyword-only option name -> default, read from ``fn``'s signature.
    """

    name: str
    fn: QuantizerFn
    needs_calib: bool
    options: dict[str, Any] = field(default_factory=dict)


QUANTIZERS: dict[str, Quantizer] = {}

#: Options :func:`quantize` itself handles for every method (not passed to the quantizer).
COMMON_OPTIONS: dict[str, Any] = {
    "symmetric": False,
    "grid": "mse",
    "include_zero": True,
    "fold_bn": False,
    "reestimate_bn": False,
    "unsupported": "error",
    "batch_size": 128,
    "progress": None,
}


def register_quantizer(
    name: str, *, needs_calib: bool = True
) -> Callable[[QuantizerFn], QuantizerFn]:
    """Decorator registering ``fn`` as quantization method ``name``.

    ``fn`` must take ``(model, plan, calib, *, progress, <options with defaults>)``; its
    keyword-only parameters other than ``progress`` are the method's options, and
    :func:`quantize` rejects any other option by name before doing any work.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")

    def deco(fn: QuantizerFn) -> QuantizerFn:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        kwonly = {p.name: p for p in params if p.kind == p.KEYWORD_ONLY}
        if len(positional) != 3 or "progress" not in kwonly:
            raise TypeError(
                f"quantizer {name!r}: expected fn(model, plan, calib, *, progress, **options), got {sig}"
            )
        if any(p.kind == p.VAR_KEYWORD for p in params):
            raise TypeError(
                f"quantizer {name!r}: declare options as keyword-only parameters, not **kwargs"
            )
        options = {}
        for pname, p in kwonly.items():
            if pname == "progress":
                continue
            if p.default is p.empty:
                raise TypeError(f"quantizer {name!r}: option {pname!r} needs a default")
            if pname in COMMON_OPTIONS:
                raise TypeError(
                    f"quantizer {name!r}: option {pname!r} is handled by ptqx.quantize itself"
                )
            options[pname] = p.default
        QUANTIZERS[name] = Quantizer(name, fn, needs_calib, options)
        return fn

    return deco


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def run_calibration(model: nn.Module, calib: CalibrationSet) -> None:
    """Forward every calibration batch through ``model`` (on its device), discarding outputs."""
    dev = model_device(model)
    for x in calib.batches(dev):
        model(x)


def _progress_fn(
    progress: object, method: str, total: int
) -> tuple[ProgressFn, Callable[[], None]]:
    if progress is None or progress is False:
        return (lambda event: None), (lambda: None)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"quantize[{method}]", unit="layer")

        def fn(event: dict) -> None:
            if event.get("event") == "layer":
                bar.set_postfix_str(event.get("layer", ""))
                bar.update(1)

        return fn, bar.close
    if callable(progress):
        return progress, (lambda: None)
    raise ValueError(
        f"progress: expected None, a bool or a callable(event: dict), got {progress!r}"
    )


def _check_finite(model: nn.Module) -> None:
    """Every parameter (quantized weights, biases, norm affines, layers left in float) and
    the running statistics of every norm layer must be finite: a NaN or Inf there passes
    through quantization into the outputs, or surfaces later as a misleading error (a NaN
    BatchNorm variance makes the next layer's Hessian "not invertible")."""
    layer_of = {
        id(m.weight): n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and getattr(m, "weight", None) is not None
    }
    for name, p in model.named_parameters():
        if p.is_floating_point() and not torch.isfinite(p).all():
            bad = int((~torch.isfinite(p)).sum())
            if id(p) in layer_of:
                raise ValueError(f"model: layer {layer_of[id(p)]!r} has {bad} NaN/Inf weight(s)")
            raise ValueError(f"model: parameter {name!r} has {bad} NaN/Inf value(s)")
    for mname, mod in model.named_modules():
        if not isinstance(mod, nn.modules.batchnorm._NormBase):
            continue
        for bname, b in mod.named_buffers(recurse=False):
            if b is not None and b.is_floating_point() and not torch.isfinite(b).all():
                bad = int((~torch.isfinite(b)).sum())
                full = f"{mname}.{bname}" if mname else bname
                raise ValueError(
                    f"model: buffer {full!r} ({type(mod).__name__} running statistics) has "
                    f"{bad} NaN/Inf value(s)"
                )


def _attention_layers(model: nn.Module, layers: dict[str, nn.Module]) -> list[tuple[str, str]]:
    """Remove from ``layers`` the Linear layers inside nn.MultiheadAttention; returns them.

    MultiheadAttention holds its input projection as a bare Parameter (an unsupported
    layer) and applies ``out_proj.weight`` through ``F.multi_head_attention_forward``
    without calling ``out_proj``: no hook ever sees that layer's inputs, so calibrated
    methods fail on it ("no calibration input reached this layer"). The whole attention
    module is unsupported: it stays in float32 with ``unsupported="skip"``, for every
    method alike.
    """
    moved = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            prefix = f"{name}." if name else ""
            for n in [n for n in layers if n.startswith(prefix)]:
                moved.append((n, type(layers.pop(n)).__name__))
    return moved


def _check_calib_runs(model: nn.Module, cset: CalibrationSet) -> None:
    # Inputs of the wrong shape (channels, size, rank) otherwise fail deep inside a hook or
    # a layer ("expected input[1, 3, 8, 8] to have 1 channels") without naming calib. Two
    # samples, not one: forwards written with a bare ``.squeeze()`` drop a batch of one.
    x = next(cset.batches(model_device(model)))[:2]
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # noqa: BLE001  (a user's model may raise anything)
        raise ValueError(
            f"calib: the model cannot run on the calibration inputs (sample shape "
            f"{tuple(x.shape[1:])}): {type(e).__name__}: {e}"
        ) from e


def _check_calib_dtype(model: nn.Module, cset: CalibrationSet) -> None:
    # A model runs in its parameters' dtype; an input of another dtype fails deep inside
    # the first layer ("mat1 and mat2 must have the same dtype") without naming calib.
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        return  # no parameters, or mixed precision: leave it to the model
    (want,) = dtypes
    for i, b in enumerate(cset.batches()):
        if b.dtype != want:
            raise ValueError(
                f"calib: batch {i} has dtype {str(b.dtype).replace('torch.', '')} but the model's "
                f"parameters are {str(want).replace('torch.', '')}; convert the calibration "
                f"inputs (e.g. x.to({want}))"
            )


def valid_options(method: str) -> list[str]:
    """The keyword options ``quantize`` accepts for a registered ``method``: the method's
    own plus those every method shares (``COMMON_OPTIONS``)."""
    return sorted(set(QUANTIZERS[method].options) | set(COMMON_OPTIONS))


def _resolve_options(
    method: str, bits: float, options: Mapping[str, Any]
) -> tuple[Quantizer, float, dict[str, Any], dict[str, Any]]:
    """Check method, bits and the option names/values ``quantize`` handles itself; returns
    (quantizer, bits, common options with defaults, the method's own options)."""
    if method not in QUANTIZERS:
        raise ValueError(
            f"method: unknown quantizer {method!r}; registered: {', '.join(sorted(QUANTIZERS))}"
        )
    q = QUANTIZERS[method]
    bits = normalize_bits(bits)
    valid = valid_options(method)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"options: unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {', '.join(valid)}"
        )
    common = {k: options.get(k, v) for k, v in COMMON_OPTIONS.items()}
    method_opts = {k: options[k] for k in options if k in q.options}
    if common["unsupported"] not in ("error", "skip"):
        raise ValueError(f"unsupported: expected 'error' or 'skip', got {common['unsupported']!r}")
    for k in ("fold_bn", "reestimate_bn"):
        if not isinstance(common[k], bool):
            raise ValueError(f"{k}: expected a bool, got {common[k]!r}")
    bs = common["batch_size"]
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {bs!r}")
    # Validates symmetric/grid/include_zero once, before any work.
    QuantSpec(
        bits,
        symmetric=common["symmetric"],
        grid=common["grid"],
        include_zero=common["include_zero"],
    )
    return q, bits, common, method_opts


def check_options(method: str, *, bits: float, num_samples: int, **options: Any) -> None:
    """Check ``method``'s options as :func:`quantize` would, without a model or data.

    Option names and values (the method's own checks run on an empty layer plan) and
    whether ``num_samples`` calibration samples suffice for it (AdaRound/BRECQ draw
    minibatches of ``recon_batch_size``). For callers that must fail before expensive
    work: the audit checks every method this way before training any model.

    Args:
        method: a key of :data:`QUANTIZERS`.
        bits: the bit-width, checked with the grid options.
        num_samples: the calibration set's size (ignored by methods without calibration).
        **options: as for :func:`quantize`.
    Raises:
        ValueError: the first problem found, naming the option.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, got {num_samples!r}")
    q, _, common, method_opts = _resolve_options(method, bits, options)
    stand_in = nn.Sequential(nn.Linear(1, 1)).eval()
    cset = (
        CalibrationSet(torch.zeros(num_samples, 1), batch_size=common["batch_size"])
        if q.needs_calib
        else None
    )
    q.fn(stand_in, [], cset, progress=lambda event: None, **method_opts)


def quantize(
    model: nn.Module,
    *,
    method: str,
    bits: float,
    calib: torch.Tensor | Iterable | CalibrationSet | None = None,
    layer_bits: Mapping[str, float | QuantSpec] | None = None,
    **options: Any,
) -> nn.Module:
    """Quantize the weights of every Conv2d and Linear of ``model`` (a deep copy).

    Args:
        model: float model; not modified.
        method: a key of :data:`QUANTIZERS` ("rtn", "gptq", "obc", ...).
        bits: 8, 4, 3, 2 or 1.58 (3 levels) for every layer not in ``layer_bits``.
        calib: calibration inputs: a tensor ``[N, ...]`` (batched by ``batch_size``) or an
            iterable of batches (tensors, or tuples whose first item is the input).
            Required by calibrated methods and by ``fold_bn``/``reestimate_bn``.
        layer_bits: per-layer overrides, keys = layer names or fnmatch patterns
            (``{"fc": 8}`` is the paper's last-layer-at-8-bits ablation), values = bits or
            a full :class:`QuantSpec`. Keys matching no layer are an error.
        **options: common options: ``symmetric`` (False), ``grid`` ("mse" | "minmax" |
            "absmean"), ``include_zero`` (True), ``fold_bn`` (False: fold each BatchNorm2d
            that directly follows a Conv2d into it first, when both run once per
            forward; the BN becomes Identity), ``reestimate_bn`` (False: re-estimate
            BatchNorm running statistics on ``calib`` after quantization, every sample
            weighted equally), ``unsupported`` ("error" | "skip": what to do
            with weight-holding layers that are not Conv2d/Linear), ``batch_size`` (128),
            ``progress`` (None | True for a tqdm bar | callable(event: dict)); plus the
            method's own options (``QUANTIZERS[method].options``).
    Returns:
        The quantized copy, in eval mode. Each quantized layer's weight holds the
        dequantized values and ``layer.ptqx_quant`` its :class:`QuantizedWeight`;
        ``model.ptqx_quant_config`` records method, bits, layer bits and options.
    Raises:
        ValueError: unknown method or option, unsupported bits, NaN/Inf weights (named
            by layer), other parameters or norm running statistics (named),
            missing/empty calibration set, calibration inputs of another dtype than the
            model or that the model cannot run on, non-invertible Hessian, ...
        UnsupportedLayerError: unsupported weight-holding layers with ``unsupported="error"``.
        TiedWeightError: two layers (or a layer and another module) share one weight.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    q, bits, common, method_opts = _resolve_options(method, bits, options)

    _check_finite(model)
    needs_calib = q.needs_calib or common["fold_bn"] or common["reestimate_bn"]
    cset = None
    if needs_calib or calib is not None:
        if calib is None:
            why = f"method {method!r}" if q.needs_calib else "fold_bn/reestimate_bn"
            raise ValueError(f"calib: {why} needs calibration inputs, got None")
        cset = as_calibration(calib, batch_size=common["batch_size"])
        _check_calib_dtype(model, cset)

    qmodel = copy.deepcopy(model)
    qmodel.eval()
    if cset is not None:
        _check_calib_runs(qmodel, cset)
    if common["fold_bn"]:
        from .bn import fold_batchnorm

        fold_batchnorm(qmodel, calib=cset)

    layers, unsupported = find_layers(qmodel)
    unsupported += _attention_layers(qmodel, layers)
    if unsupported and common["unsupported"] == "error":
        raise UnsupportedLayerError(unsupported)
    if not layers:
        raise ValueError("model: no Conv2d or Linear layer to quantize")
    names = list(layers)
    chosen = match_layers(names, layer_bits)
    plan = []
    for n in names:
        v = chosen.get(n, bits)
        if isinstance(v, QuantSpec):
            spec = v
        else:
            # normalize_bits names the key itself; QuantSpec's own errors get it added.
            b = normalize_bits(v, name=f"layer_bits[{n!r}]")
            try:
                spec = QuantSpec(
                    b,
                    symmetric=common["symmetric"],
                    grid=common["grid"],
                    include_zero=common["include_zero"],
                )
            except ValueError as e:
                raise ValueError(f"layer_bits[{n!r}]: {e}") from None
        plan.append(LayerPlan(n, layers[n], spec))

    report, close = _progress_fn(common["progress"], method, len(plan))
    t0 = time.perf_counter()
    try:
        q.fn(qmodel, plan, cset, progress=report, **method_opts)
    finally:
        close()
    missing = [lp.name for lp in plan if not hasattr(lp.module, QUANT_ATTR)]
    if missing:
        raise RuntimeError(f"quantizer {method!r} left layer(s) unquantized: {', '.join(missing)}")

    if common["reestimate_bn"]:
        from .bn import reestimate_batchnorm

        reestimate_batchnorm(qmodel, cset)
    qmodel.eval()
    qmodel.ptqx_quant_config = {
        "method": method,
        "bits": bits,
        "layer_bits": {lp.name: lp.spec.bits for lp in plan},
        "options": {
            **{k: v for k, v in common.items() if k != "progress"},
            **q.options,
            **method_opts,
        },
        "seconds": time.perf_counter() - t0,
    }
    return qmodel
