"""``ptqx.quant``: weight-only post-training quantizers behind one registry.

Entry point::

    qmodel = ptqx.quantize(model, method="obc", bits=2, calib=x_calib, layer_bits={"fc": 8})

returns a quantized deep copy. Every Conv2d and Linear (first conv and classifier
included) is quantized per output channel; each keeps ``layer.ptqx_quant``, a
:class:`QuantizedWeight` (uint8 codes of the weight's shape, float32 ``scale[R]`` and
``zero[R]``, ``bits``, ``maxq``, ``method``), and its ``weight`` holds the dequantized
values ``scale * (codes - zero)`` (fake quantization: activations stay float32).

Writing a quantizer (the contract AdaRound/BRECQ plug into)
------------------------------------------------------------
::

    @register_quantizer("name", needs_calib=True)
    def fn(model: nn.Module, plan: list[LayerPlan], calib: CalibrationSet | None, *,
           progress: ProgressFn, opt1: int = 10, opt2: float = 0.1) -> None: ...

- ``model`` is already the deep copy, in eval mode, on the caller's device (BatchNorm
  already folded when ``fold_bn=True``); mutate it in place.
- ``plan`` lists the layers to quantize in module (forward-definition) order. Each
  :class:`LayerPlan` has ``name``, ``module`` (the Conv2d/Linear inside ``model``),
  ``spec`` (:class:`QuantSpec`: ``bits``, ``maxq``, ``symmetric``, ``grid``,
  ``include_zero``), and ``kind``/``groups``/``rows``/``columns``.
- ``calib`` is a :class:`CalibrationSet` (``calib.batches(device)`` yields float batches,
  ``calib.num_samples``), never empty; ``None`` only for ``needs_calib=False`` methods.
- Start each layer's grid with ``fit_grid(weight_rows(lp.module), lp.spec)`` (or your own
  grid), and finish every planned layer with ``store_quantized(lp, values, scale, zero,
  method)``: it rounds ``values`` [R, C] onto the grid, stores the codes and sets the
  dequantized weight. ``quantize`` checks afterwards that no layer was left out.
- Options are the keyword-only parameters (each needs a default); ``quantize`` rejects
  unknown options by name. Options that ``quantize`` handles itself for every method
  (``COMMON_OPTIONS``: symmetric, grid, include_zero, fold_bn, reestimate_bn,
  unsupported, batch_size, progress) cannot be redeclared.
- ``progress(event: dict)``: call it with ``{"event": "layer", "layer": name, "index": i,
  "total": n, "seconds": s, ...}`` after each layer (drives the tqdm bar with
  ``progress=True``); other events (e.g. ``{"event": "iter", "layer": ..., "iteration":
  k, "loss": x}``) are passed to a user callback and ignored by the bar.

Methods and their options
-------------------------
- "rtn": no calibration; grid then round.
- "gptq" (Frantar et al. 2023): ``blocksize=128``, ``actorder=False``, ``damp=0.01``
  (relative), ``sequential=True``, ``precision="float32"``.
- "obc" (Frantar & Alistarh 2022, the protocol's OBC path): ``damp=0.0`` (a singular
  Hessian is an error naming the layer), ``sequential=True``, ``precision="float32"``.
- "adaround"/"brecq": registered by ``ptqx.quant.recon`` when present.

Hessians (``H = 2/n sum x x^T``, float64, conv inputs unfolded exactly as the conv sees
them) are collected with forward pre-hooks; a layer the forward calls several times gets
the Hessian of all its calls. GPTQ and OBC take the layers in execution order (found by
one probe forward pass), not declaration order. ``sequential=True`` (the default for both
GPTQ and OBC) takes each layer's inputs from the network whose earlier layers are
already quantized, so later layers compensate earlier errors, as GPTQ does; the forward
stops at the layer, so this costs about half a network pass per layer.
``sequential=False`` takes every Hessian from the float network in one pass, as the
official OBC code does. ``precision="float32"`` inverts H in float32 like both
official codes (faster on wide layers); ``"float64"`` keeps the inversion in float64.
"""

from __future__ import annotations

# Importing these registers the methods (recon registers "adaround" and "brecq").
from . import gptq, obc, recon, rtn  # noqa: F401
from .api import (
    COMMON_OPTIONS,
    QUANTIZERS,
    ProgressFn,
    Quantizer,
    model_device,
    quantize,
    register_quantizer,
    run_calibration,
    valid_options,
)
from .bn import fold_batchnorm, reestimate_batchnorm
from .calib import CalibrationSet, as_calibration
from .hessian import collect_hessians, layer_input_rows, reconstruction_error
from .layers import (
    QUANT_ATTR,
    LayerPlan,
    TiedWeightError,
    UnsupportedLayerError,
    find_layers,
    forward_calls,
    match_layers,
    quantized_layers,
    resolve_layer_bits,
    set_quantized,
    store_quantized,
    weight_rows,
)
from .pack import PackedLinear, pack
from .spec import SUPPORTED_BITS, QuantizedWeight, QuantSpec, bits_to_maxq, fit_grid, normalize_bits

__all__ = [
    "valid_options",
    "COMMON_OPTIONS",
    "QUANTIZERS",
    "QUANT_ATTR",
    "SUPPORTED_BITS",
    "CalibrationSet",
    "PackedLinear",
    "LayerPlan",
    "ProgressFn",
    "QuantSpec",
    "QuantizedWeight",
    "Quantizer",
    "TiedWeightError",
    "UnsupportedLayerError",
    "as_calibration",
    "collect_hessians",
    "fold_batchnorm",
    "layer_input_rows",
    "pack",
    "reconstruction_error",
    "reestimate_batchnorm",
    "bits_to_maxq",
    "find_layers",
    "forward_calls",
    "fit_grid",
    "match_layers",
    "model_device",
    "normalize_bits",
    "quantize",
    "quantized_layers",
    "register_quantizer",
    "resolve_layer_bits",
    "run_calibration",
    "set_quantized",
    "store_quantized",
    "weight_rows",
]
