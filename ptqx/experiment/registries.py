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
