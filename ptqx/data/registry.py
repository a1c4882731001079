"""``load_dataset(name, root=...)`` and the ``DATASETS`` registry.

Default locations: ``digits`` is embedded in scikit-learn; ``fashion-mnist`` reads
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``); the
others read ``$PTQX_DATA_ROOT`` (or ``./data``) unless ``root`` is given. Nothing is
downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import readers
from .dataset import Dataset, DatasetError

# Normalisation constants (0..1 scale). CIFAR: the protocol's values (Quant-MIA code);
# TinyImageNet: ImageNet statistics, as the protocol says. The grayscale sets have no
# constants in the paper: these are the mean/std of their training splits (digits: the
# split below; Fashion-MNIST: the 60000 training images), measured once.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DIGITS_MEAN, DIGITS_STD = (0.3056,), (0.3763,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)

DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_SIZE = 500
DIGITS_SPLIT_SEED = 0


def default_root() -> Path:
    return Path(os.environ.get("PTQX_DATA_ROOT", "data"))


def _tensor(a: np.ndarray, dtype) -> torch.Tensor:
    a = np.ascontiguousarray(a, dtype=dtype)
    # arrays over a bytes buffer are read-only; torch wants to own writable memory
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _build(
    name, x_tr, y_tr, x_te, y_te, num_classes, mean, std, *, hflip, shift, source
) -> Dataset:
    return Dataset(
        name=name,
        x_train=_tensor(x_tr, np.uint8),
        y_train=_tensor(y_tr, np.int64),
        x_test=_tensor(x_te, np.uint8),
        y_test=_tensor(y_te, np.int64),
        num_classes=num_classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        hflip=hflip,
        shift=shift,
        source=source,
    )


def load_digits(root: Path | None = None) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 10 classes), embedded: no files read.

    Pixels 0..16 are scaled to 0..255 (``rint(v * 255 / 16)``). Split: a fixed
    permutation from ``numpy.random.RandomState(0)`` (a stream numpy keeps stable across
    versions); its first 500 indices are the test set, the other 1297 the training set,
    both kept in the original order. Augmentation: shifts of up to 1 pixel, no flips.
    """
    if root is not None:
        raise DatasetError(f"{root}: digits is embedded in scikit-learn and takes no root")
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(y))
    te = np.sort(perm[:DIGITS_TEST_SIZE])
    tr = np.sort(perm[DIGITS_TEST_SIZE:])
    return _build(
        "digits", x[tr], y[tr], x[te], y[te], 10, DIGITS_MEAN, DIGITS_STD,
        hflip=False, shift=1, source="sklearn.datasets.load_digits",
    )  # fmt: skip


def load_fashion_mnist(root: Path | None = None) -> Dataset:
    """Fashion-MNIST from IDX files (gzipped or not): 60000/10000 images 28x28, 10 classes.

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz`` (the
    Debian package ships the .gz names). Augmentation: shifts of up to 2 pixels, no flips
    (clothes are left/right symmetric enough, but the protocol keeps flips for RGB sets).
    """
    folder = Path(root) if root is not None else DEFAULT_FASHION_ROOT
    if not folder.is_dir():
        hint = (
            " (install the Debian package dataset-fashion-mnist or pass root)"
            if root is None
            else ""
        )
        raise DatasetError(f"{folder}: folder not found{hint}")
    x_tr, y_tr = readers.read_idx_split(folder, "train")
    x_te, y_te = readers.read_idx_split(folder, "test")
    for split, x, y in (("train", x_tr, y_tr), ("t10k", x_te, y_te)):
        if x.shape[1:] != (1, 28, 28):
            raise DatasetError(
                f"{folder}/{split}-images: expected 28x28 images, got {list(x.shape[2:])}"
            )
        readers.check_labels(folder / f"{split}-labels-idx1-ubyte", y, 10)
    return _build(
        "fashion-mnist", x_tr, y_tr, x_te, y_te, 10, FASHION_MEAN, FASHION_STD,
        hflip=False, shift=2, source=str(folder),
    )  # fmt: skip


def load_cifar10(root: Path | None = None) -> Dataset:
    """CIFAR-10 python version: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}``.

    ``root`` may also be the ``cifar-10-batches-py`` folder itself. Augmentation: flip +
    random 32x32 crop from the image zero-padded by 4 (the protocol).
    """
    folder = readers.find_folder(
        Path(root) if root else default_root(), "cifar-10-batches-py", "data_batch_1"
    )
    parts = [readers.read_cifar_pickle(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_te, y_te = readers.read_cifar_pickle(folder / "test_batch", "labels")
    for i, (_, y) in enumerate(parts, 1):
        readers.check_labels(folder / f"data_batch_{i}", y, 10)
    readers.check_labels(folder / "test_batch", y_te, 10)
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return _build(
        "cifar10", x_tr, y_tr, x_te, y_te, 10, CIFAR10_MEAN, CIFAR10_STD,
        hflip=True, shift=4, source=str(folder),
    )  # fmt: skip


def load_cifar100(root: Path | None = None) -> Dataset:
    """CIFAR-100 python version: ``<root>/cifar-100-python/{train,test}``, fine labels (100)."""
    folder = readers.find_folder(
        Path(root) if root else default_root(), "cifar-100-python", "train"
    )
    x_tr, y_tr = readers.read_cifar_pickle(folder / "train", "fine_labels")
    x_te, y_te = readers.read_cifar_pickle(folder / "test", "fine_labels")
    readers.check_labels(folder / "train", y_tr, 100)
    readers.check_labels(folder / "test", y_te, 100)
    return _build(
        "cifar100", x_tr, y_tr, x_te, y_te, 100, CIFAR100_MEAN, CIFAR100_STD,
        hflip=True, shift=4, source=str(folder),
    )  # fmt: skip


def load_tinyimagenet(root: Path | None = None, *, cache_dir: Path | None = None) -> Dataset:
    """Tiny ImageNet: ``<root>/tiny-imagenet-200`` (wnids.txt, train/<wnid>/images/*.JPEG,
    val/images + val/val_annotations.txt). Test split = val. 200 classes, 64x64 RGB.

    JPEGs are decoded with Pillow (optional dependency: ``pip install ptqx[images]``) on
    the first call and cached as .npy arrays in ``tiny-imagenet-200/.ptqx-cache`` (or,
    if that folder is read-only, ``~/.cache/ptqx/tinyimagenet-<hash>``).
    Augmentation: flip + random 64x64 crop from the image zero-padded by 4.
    """
    folder = readers.find_folder(
        Path(root) if root else default_root(), "tiny-imagenet-200", "wnids.txt"
    )
    x_tr, y_tr, x_te, y_te, k = readers.read_tinyimagenet(folder, cache_dir=cache_dir)
    return _build(
        "tinyimagenet", x_tr, y_tr, x_te, y_te, k, IMAGENET_MEAN, IMAGENET_STD,
        hflip=True, shift=4, source=str(folder),
    )  # fmt: skip


def load_npz(root: Path | None = None) -> Dataset:
    """Your own data in one .npz file (``root`` is the file).

    Required keys: ``x_train``, ``y_train``, ``x_test``, ``y_test``. Images: uint8 0..255
    or float 0..1, shaped [N, H, W] (grayscale), [N, C, H, W] or [N, H, W, C] with C in
    {1, 3}; the layout is channels-last when the last axis is 1 or 3 and the second is
    not, else channels-first. Labels: integers in [0, K).
    Optional keys: ``num_classes`` (default max label + 1), ``mean``/``std`` (per channel,
    0..1 scale; default: measured on x_train), ``hflip`` and ``shift`` (augmentation;
    default flip + pad-4 crop for RGB, shifts of up to ``max(1, size // 14)`` pixels and
    no flips for grayscale).
    """
    if root is None:
        raise DatasetError("npz: pass root=<file.npz>")
    path = Path(root)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrs = {k: f[k] for k in f.files}
    except Exception as exc:  # zip/format errors come in many types
        raise DatasetError(
            f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrs]
    if missing:
        raise DatasetError(f"{path}: missing arrays {missing} (has {sorted(arrs)})")
    x_tr = readers.to_nchw(path, "x_train", arrs["x_train"])
    x_te = readers.to_nchw(path, "x_test", arrs["x_test"])
    ys = []
    for key in ("y_train", "y_test"):
        y = arrs[key]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"{path}: {key} must be a 1-D integer array, got {y.dtype} {list(y.shape)}"
            )
        ys.append(y.astype(np.int64))
    y_tr, y_te = ys
    for x, y, s in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if len(x) != len(y):
            raise DatasetError(f"{path}: {len(x)} {s} images but {len(y)} y_{s} labels")
    if x_tr.shape[1:] != x_te.shape[1:] or x_tr.shape[2] != x_tr.shape[3]:
        raise DatasetError(
            f"{path}: x_train {list(x_tr.shape[1:])} and x_test {list(x_te.shape[1:])} must be equal square images"
        )
    top = max([int(y.max()) for y in ys if y.size] + [0]) + 1
    k = int(arrs["num_classes"]) if "num_classes" in arrs else top
    for key, y in (("y_train", y_tr), ("y_test", y_te)):
        readers.check_labels(f"{path} ({key})", y, k)
    c, size = x_tr.shape[1], x_tr.shape[2]
    if "mean" in arrs and "std" in arrs:
        mean, std = arrs["mean"].reshape(-1), arrs["std"].reshape(-1)
    else:
        if not len(x_tr):
            raise DatasetError(f"{path}: x_train is empty")
        flat = x_tr.transpose(1, 0, 2, 3).reshape(c, -1) / 255.0
        mean, std = flat.mean(1), np.maximum(flat.std(1), 1e-3)
    hflip = bool(arrs["hflip"]) if "hflip" in arrs else c == 3
    shift = int(arrs["shift"]) if "shift" in arrs else (4 if c == 3 else max(1, size // 14))
    shift = min(shift, size - 1)
    return _build(
        path.stem, x_tr, y_tr, x_te, y_te, k, mean, std, hflip=hflip, shift=shift, source=str(path)
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tinyimagenet": load_tinyimagenet,
    "npz": load_npz,
}


def load_dataset(name: str, *, root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by registry name.

    Args:
        name: one of ``DATASETS`` ("digits", "fashion-mnist", "cifar10", "cifar100",
            "tinyimagenet", "npz").
        root: the data folder (for "npz": the .npz file); None for the default.

    Returns:
        A ``Dataset`` with uint8 [N, C, H, W] images and int64 labels.

    Raises:
        DatasetError: unknown name, missing folder or file, a corrupt or truncated file,
            or labels out of range; the message names the file.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](None if root is None else Path(root))
