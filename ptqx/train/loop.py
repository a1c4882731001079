"""Training and evaluation loops, fully determined by their seed."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from .config import TrainConfig

ProgressFn = Callable[[int, int, float], None]


def _indices(indices: object, n: int) -> torch.Tensor:
    arr = np.asarray(indices)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(
            f"indices: expected a 1-D integer array, got {arr.dtype} {list(arr.shape)}"
        )
    if arr.size == 0:
        raise ValueError("indices: empty; a model needs at least one training example")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"indices: must lie in [0, {n}), got [{int(arr.min())}, {int(arr.max())}]")
    return torch.from_numpy(arr.astype(np.int64))


def train_model(
    model: nn.Module,
    dataset: Dataset,
    indices: np.ndarray,
    config: TrainConfig,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``dataset.x_train[indices]`` with SGD + cosine.

    Per step: shuffle order and augmentation come from one ``torch.Generator`` seeded with
    ``seed`` (on the CPU, so the stream is the same on every device); lr follows
    ``lr * (1 + cos(pi * step / total_steps)) / 2``; loss is cross-entropy on
    ``dataset.normalize(augment(x))``. The initial weights are the model's own (build it
    with ``build_model(..., seed=...)``): given those and ``seed``, the result on the CPU
    is bit-identical run to run (same torch version and thread count). On CUDA,
    non-deterministic cuDNN kernels may still make runs differ slightly.

    Args:
        model: maps float32 [B, C, H, W] to logits [B, num_classes].
        dataset: source of images, labels, normalisation and augmentation.
        indices: int [n] rows of the training split this model trains on.
        config: hyper-parameters.
        seed: shuffling/augmentation seed.
        device: where to train; the model is moved there.
        progress: called after each epoch as ``progress(epoch, epochs, mean_loss)``.

    Returns:
        The trained model, in eval mode, on ``device``.

    Raises:
        ValueError: bad indices or seed; FloatingPointError if the loss becomes NaN/Inf.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    device = torch.device(device)
    idx = _indices(indices, len(dataset.y_train))
    # On a GPU the model's half of the images moves there once. On the CPU each batch is
    # gathered from the data set itself: a copy of the half is private memory in every
    # worker process (0.6 GB at Tiny ImageNet), where the data set may be a shared mapping.
    x_all = dataset.x_train[idx].to(device) if device.type != "cpu" else None
    y_all = dataset.y_train[idx].to(device)
    n = len(idx)
    gen = torch.Generator().manual_seed(int(seed))
    model.to(device).train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total))
    )
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, config.batch_size):
            bi = perm[start : start + config.batch_size]
            xb = x_all[bi] if x_all is not None else dataset.x_train[idx[bi]]
            if config.augment:
                xb = dataset.augment(xb, gen)
            logits = model(dataset.normalize(xb))
            loss = nn.functional.cross_entropy(
                logits, y_all[bi], label_smoothing=config.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(bi)
        mean_loss = float(loss_sum) / n
        if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"train_model: loss became {mean_loss} in epoch {epoch + 1}; lower lr ({config.lr})"
            )
        if progress is not None:
            progress(epoch + 1, config.epochs, mean_loss)
    return model.eval()


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, x: torch.Tensor, *, batch_size: int = 512, device="cpu"
) -> torch.Tensor:
    """Logits float32 [B, K] of ``model`` (eval mode) on uint8 images [B, C, H, W]."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    device = torch.device(device)
    model.to(device).eval()
    outs = [
        model(dataset.normalize(x[i : i + batch_size].to(device))).float()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs) if outs else torch.zeros(0, dataset.num_classes, device=device)


def evaluate_accuracy(
    model: nn.Module, dataset: Dataset, *, split: str = "test", batch_size: int = 512, device="cpu"
) -> float:
    """Top-1 accuracy of ``model`` (eval mode, no augmentation) on a split, in [0, 1]."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    x = getattr(dataset, f"x_{split}")
    y = getattr(dataset, f"y_{split}")
    if len(y) == 0:
        raise ValueError(f"split: the {split} split of {dataset.name!r} is empty")
    pred = predict(model, dataset, x, batch_size=batch_size, device=device).argmax(1).cpu()
    return float((pred == y).float().mean())
