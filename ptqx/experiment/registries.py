"""What the lower layers have registered: data sets, PTQ methods, attacks, train defaults.

Kept in one place so the config can check names before any work starts, and so the
pipeline only reaches the other areas through their public entry points.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def dataset_names() -> list[str]:
    from ptqx.data import DATASETS

    return list(DATASETS)


def method_names() -> list[str]:
    import ptqx.quant as quant

    for attr in ("METHODS", "QUANTIZERS", "REGISTRY"):
        reg = getattr(quant, attr, None)
        if reg is not None:
            return list(reg)
    names = getattr(quant, "available_methods", None)
    if callable(names):
        return list(names())
    raise ImportError("ptqx.quant exposes no method registry (METHODS)")


def quantizer_options(method: str) -> tuple[list[str], list[str]]:
    """(reserved, valid) option names of a method, from the ``ptqx.quant`` registry.

    ``reserved``: the named parameters of ``ptqx.quantize`` (model, method, bits, calib,
    layer_bits), which the audit sets itself; ``valid``: the method's own options plus
    the options ``quantize`` handles for every method (``COMMON_OPTIONS``).
    """
    import inspect

    from ptqx.quant import quantize, valid_options

    reserved = [
        n
        for n, p in inspect.signature(quantize).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    return reserved, valid_options(method)


def grid_problem(options: dict[str, Any], bits: list[float]) -> str | None:
    """Why the grid options shared by every method (symmetric, grid, include_zero) are
    invalid at one of ``bits``, checked by ``QuantSpec`` as ``ptqx.quantize`` does; None
    if they are fine."""
    from ptqx.quant import COMMON_OPTIONS, QuantSpec

    keys = ("symmetric", "grid", "include_zero")
    if not any(k in options for k in keys):
        return None
    for b in bits:
        try:
            QuantSpec(b, **{k: options.get(k, COMMON_OPTIONS[k]) for k in keys})
        except (TypeError, ValueError) as e:
            return f"at {b:g} bits: {e}"
    return None


def model_names() -> list[str]:
    from ptqx.models import MODELS

    return list(MODELS)


def attack_names() -> list[str]:
    from ptqx.attacks import ATTACKS

    return list(ATTACKS)


def train_config(dataset: str, overrides: dict[str, Any]):
    """``TrainConfig.for_dataset(dataset)`` with ``overrides`` applied (validated by TrainConfig)."""
    from ptqx.train import TrainConfig

    base = TrainConfig.for_dataset(dataset)
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown TrainConfig field(s) {unknown}; known: {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(base, **overrides) if overrides else base


def build_model(name: str, **kwargs):
    try:
        from ptqx.models import build_model as _build
    except ImportError:  # older ptqx.models without the re-export
        from ptqx.models.registry import build_model as _build
    return _build(name, **kwargs)


def batched_logits(models, x):
    try:
        from ptqx.models import batched_logits as _bl
    except ImportError:
        from ptqx.models.batched import batched_logits as _bl
    return _bl(models, x)
