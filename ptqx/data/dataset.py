"""The in-memory dataset every ptqx stage shares, with its augmentation and query views.

Images stay uint8 [N, C, H, W] until the last moment: that is 4x less memory than float,
and the train-time augmentation (flip + zero-padded random crop) is exact on integers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch


class DatasetError(ValueError):
    """A dataset could not be loaded: unknown name, missing/corrupt file, bad labels.

    The message names the file (or folder) at fault and what was wrong with it.
    """


def _check_images(
    name: str, x: object, *, c: int | None = None, hw: int | None = None
) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(f"{name}: expected dtype uint8, got {str(x.dtype).replace('torch.', '')}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected shape [B, C, H, W], got {list(x.shape)}")
    if c is not None and (x.shape[1] != c or x.shape[2] != hw or x.shape[3] != hw):
        raise ValueError(f"{name}: expected shape [B, {c}, {hw}, {hw}], got {list(x.shape)}")
    return x


def view_specs(*, hflip: bool, shift: int) -> list[tuple[bool, int, int]]:
    """The deterministic query views a dataset offers, in the order ``views`` uses them.

    Each view is ``(mirror, dy, dx)``: an optional horizontal mirror, then a translation by
    (dy, dx) pixels with zero fill. Shifts go by growing size up to ``shift`` (the same
    bound as train-time augmentation, so a view is always a possible training image):
    (0,0), then the four 1-pixel moves (right, left, down, up), then the diagonals, then
    size 2, ... With ``hflip`` every shift comes as the image and its mirror, so the first
    two views are identity and mirror (Carlini et al. 2022).
    """
    shifts = [(0, 0)]
    for s in range(1, shift + 1):
        shifts += [(0, s), (0, -s), (s, 0), (-s, 0), (s, s), (-s, -s), (s, -s), (-s, s)]
    return [(m, dy, dx) for dy, dx in shifts for m in ((False, True) if hflip else (False,))]


def _translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-image translation with zero fill: out[b,:,i,j] = x[b,:,i-dy[b],j-dx[b]].

    Equivalent to zero-padding by ``pad`` and cropping at offset (pad-dy, pad-dx): the
    torchvision ``RandomCrop(size, padding=pad)`` operation, done for the whole batch with
    one gather instead of a Python loop.
    """
    b, c, h, w = x.shape
    if pad == 0 or b == 0:
        return x
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (pad - dy)[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = (pad - dx)[:, None] + torch.arange(w, device=x.device)  # [B, W]
    bidx = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset held in memory.

    Attributes:
        name: registry name ("digits", "cifar10", ...).
        x_train, x_test: uint8 [N, C, H, W] images (0..255), contiguous, on the CPU.
        y_train, y_test: int64 [N] labels in [0, num_classes).
        num_classes, in_channels, image_size: K, C and H (= W).
        mean, std: per-channel normalisation constants on the 0..1 scale.
        hflip: whether train-time augmentation mirrors images (CIFAR-like sets).
        shift: the crop padding / largest translation (pixels) of train-time augmentation,
            and the largest shift a query view uses; 0 disables both.
        source: where the data came from (a path or a description), for manifests.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = False
    shift: int = 0
    source: str = ""
    in_channels: int = field(init=False)
    image_size: int = field(init=False)

    def __post_init__(self) -> None:
        where = self.source or self.name
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            _check_images(f"x_{split}", x)
            if x.shape[2] != x.shape[3]:
                raise DatasetError(f"{where}: images must be square, got {list(x.shape[1:])}")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
                raise DatasetError(f"{where}: y_{split} must be an int64 [N] tensor")
            if y.shape[0] != x.shape[0]:
                raise DatasetError(
                    f"{where}: {x.shape[0]} {split} images but {y.shape[0]} {split} labels"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DatasetError(
                    f"{where}: {split} labels must lie in [0, {self.num_classes}), "
                    f"got [{int(y.min())}, {int(y.max())}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                f"{where}: train images {list(self.x_train.shape[1:])} and test images "
                f"{list(self.x_test.shape[1:])} differ in shape"
            )
        if self.x_test.shape[0] == 0:
            raise DatasetError(f"{where}: the test split is empty (test accuracy needs images)")
        c = self.x_train.shape[1]
        if (
            len(self.mean) != c
            or len(self.std) != c
            or not all(math.isfinite(m) for m in self.mean)
            or not all(math.isfinite(s) and s > 0 for s in self.std)
        ):
            raise DatasetError(
                f"{where}: need {c} finite means and {c} finite positive stds, got "
                f"{self.mean}, {self.std}"
            )
        if self.shift < 0 or self.shift >= self.x_train.shape[2]:
            raise DatasetError(f"{where}: shift must be in [0, image size), got {self.shift}")
        object.__setattr__(self, "in_channels", int(c))
        object.__setattr__(self, "image_size", int(self.x_train.shape[2]))

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape[0]}, test={self.x_test.shape[0]}, "
            f"classes={self.num_classes}, shape={list(self.x_train.shape[1:])}, "
            f"hflip={self.hflip}, shift={self.shift})"
        )

    def replace(self, **changes) -> Dataset:
        """A copy with some fields changed (e.g. a subset of the training split)."""
        return dataclasses.replace(self, **changes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 [B, C, H, W]: (x / 255 - mean) / std per channel."""
        _check_images("x", x, c=self.in_channels, hw=self.image_size)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x.to(torch.float32) / 255.0 - mean) / std

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Train-time random augmentation of a uint8 batch, drawn from ``generator``.

        A random horizontal flip (p = 0.5, if ``hflip``) and a random crop of the image
        size from the image zero-padded by ``shift`` (torchvision's
        ``RandomCrop(size, padding=shift)``). Random numbers are drawn on the generator's
        device and moved to ``x``'s, so the result depends only on the generator state.

        Args:
            x: uint8 [B, C, H, W].
            generator: the source of randomness (3 draws of B numbers per call).

        Returns:
            uint8 [B, C, H, W], a new tensor.
        """
        _check_images("x", x, c=self.in_channels, hw=self.image_size)
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        b = x.shape[0]
        gdev = generator.device
        out = x
        if self.hflip:
            flip = (torch.rand(b, generator=generator, device=gdev) < 0.5).to(x.device)
            out = torch.where(flip[:, None, None, None], out.flip(-1), out)
        if self.shift:
            s = self.shift
            d = torch.randint(-s, s + 1, (2, b), generator=generator, device=gdev).to(x.device)
            out = _translate(out, d[0], d[1], s)
        return out if out is not x else x.clone()

    def max_views(self) -> int:
        """How many distinct deterministic views ``views`` can give."""
        return len(view_specs(hflip=self.hflip, shift=self.shift))

    def views(self, x: torch.Tensor, n_views: int) -> torch.Tensor:
        """Deterministic query views shared by all models: uint8 [V, B, C, H, W].

        View 0 is the identity; for CIFAR-like sets (``hflip``) view 1 is the mirror,
        then come small shifts (and their mirrors); for grayscale sets, identity plus
        1-pixel shifts right, left, down, up, ... (see ``view_specs``).

        Args:
            x: uint8 [B, C, H, W].
            n_views: V, 1 <= V <= ``max_views()``.
        """
        _check_images("x", x, c=self.in_channels, hw=self.image_size)
        specs = view_specs(hflip=self.hflip, shift=self.shift)
        if (
            isinstance(n_views, bool)
            or not isinstance(n_views, int)
            or not 1 <= n_views <= len(specs)
        ):
            raise ValueError(
                f"n_views: expected an int in [1, {len(specs)}] for dataset {self.name!r} "
                f"(hflip={self.hflip}, shift={self.shift}), got {n_views!r}"
            )
        out = []
        b = x.shape[0]
        for mirror, dy, dx in specs[:n_views]:
            v = x.flip(-1) if mirror else x
            if dy or dx:
                p = max(abs(dy), abs(dx))
                full = lambda t: torch.full((b,), t, dtype=torch.int64, device=x.device)  # noqa: E731
                v = _translate(v, full(dy), full(dx), p)
            out.append(v)
        return torch.stack(out)
