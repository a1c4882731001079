"""``build_model(name, ...)``: architectures by registry name or "package.module:callable"."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from .resnet import ResNet18
from .small_cnn import SmallCNN


def _small_cnn(
    *, num_classes: int, in_channels: int, image_size: int, width: int = 16
) -> nn.Module:
    # Width 16 (16/32/64 channels, ~24k parameters): its two stride-2 stages leave 2x2
    # maps on 8x8 digits and 7x7 on 28x28 Fashion-MNIST, and it trains in seconds
    # (digits) to about a minute (5000 Fashion-MNIST images x 15 epochs) on 2 CPU cores.
    if image_size < 4:
        raise ValueError(f"image_size: small_cnn needs at least 4x4 inputs, got {image_size}")
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width)


def _resnet18(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if image_size < 8:
        raise ValueError(f"image_size: resnet18 needs at least 8x8 inputs, got {image_size}")
    return ResNet18(num_classes=num_classes, in_channels=in_channels)


MODELS: dict[str, Callable[..., nn.Module]] = {"small_cnn": _small_cnn, "resnet18": _resnet18}


def _resolve(name: str) -> Callable[..., nn.Module]:
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ValueError(
            f"name: unknown model {name!r}; choose one of {sorted(MODELS)} or give 'package.module:callable'"
        )
    mod_name, _, attr = name.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"name: expected 'package.module:callable', got {name!r}")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"name: cannot import module {mod_name!r} from {name!r} ({exc})") from exc
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"name: module {mod_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"name: {name!r} is not callable")
    return fn


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    seed: int | None = None,
    **options,
) -> nn.Module:
    """Build an architecture by name.

    Args:
        name: "small_cnn", "resnet18" (the paper's CIFAR ResNet-18) or
            "package.module:callable", called with the same keyword arguments
            (``num_classes``, ``in_channels``, ``image_size`` and ``options``) and
            returning an ``nn.Module`` mapping float32 [B, C, H, W] to logits [B, K].
        num_classes, in_channels, image_size: K, C and H (= W) of the data.
        seed: if given, the initial weights come from ``torch.manual_seed(seed)`` inside a
            forked RNG (the global RNG is left as it was), so a model is rebuilt
            bit-identically from its seed.
        **options: extra keyword arguments for the builder (e.g. ``width`` for small_cnn).

    Returns:
        The model in training mode, on the CPU.
    """
    for arg, v in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{arg}: expected a positive int, got {v!r}")
    fn = _resolve(name)
    kwargs = dict(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options
    )
    if seed is None:
        model = fn(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"name: {name!r} returned {type(model).__name__}, expected an nn.Module")
    return model


def default_model(dataset_name: str) -> str:
    """The architecture the audit uses for a dataset: small_cnn for the grayscale sets,
    the paper's resnet18 for the RGB ones (and for npz files)."""
    return "small_cnn" if dataset_name in ("digits", "fashion-mnist") else "resnet18"
